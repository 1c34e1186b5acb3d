"""Write one side of a tree's ``--val-split`` as a ``.tar.gz`` tree, the encoded files copied byte for byte.

``--part train`` keeps the images that ``resnetkit train --val-split N --seed S`` trains on and leaves out
the N it holds out to measure. Hyper-parameters are then tuned on a second split *of the training part*
(``--val-split`` again, on this archive), so the held-out images that measure a recipe are never used to
choose it. Gzip also makes the tree small enough to carry to another machine (the 77 MB CIFAR-10 JPEG
tar becomes about 15 MB: tar headers and the JPEG tables compress away).

    PYTHONPATH=src python bench/write_split_archive.py ../shared/datasets/cifar10-train-jpeg.tar \\
        /tmp/cifar10-train45k.tar.gz --val-split 5000 --part train
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import torch

from resnetkit.data import stratified_split
from resnetkit.data.tree import index_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="image tree: folder or tar archive")
    parser.add_argument("out", help="the .tar.gz to write")
    parser.add_argument("--val-split", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", choices=("train", "val"), default="train",
                        help="train: the images training keeps; val: the held-out ones")
    args = parser.parse_args()
    tree = index_tree(args.source, split="train")
    if tree is None:
        raise SystemExit(f"{args.source} has no training images")
    keep, held = stratified_split(torch.tensor(tree.labels), args.val_split, seed=args.seed)
    chosen = set((keep if args.part == "train" else held).tolist())
    out = Path(args.out)
    partial = out.with_name(out.name + ".partial")
    written = 0
    with tarfile.open(partial, "w:gz", compresslevel=6) as archive:
        for index, data in tree.iter_bytes():
            if index not in chosen:
                continue
            name = f"train/{tree.class_names[tree.labels[index]]}/{Path(tree.paths[index]).name}"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
            written += 1
    partial.replace(out)
    print(f"wrote {written} of {len(tree)} images ({args.part} part of --val-split {args.val_split} "
          f"--seed {args.seed}) to {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
