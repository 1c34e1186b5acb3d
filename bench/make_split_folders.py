"""Write a dataset's held-out validation split (and some training images) as PNG folders root/<class>/<n>.png.

The split is the one ``resnetkit train --val-split N --seed S`` holds out (stratified, seeded), so a
model trained that way can be measured on exactly the images it never saw, by any tool that reads
folders (``resnetkit eval``, ``bench/bench_export_accuracy.py``). PNG keeps the decoded pixels exactly.

    PYTHONPATH=src python bench/make_split_folders.py ../shared/datasets/cifar10-train-jpeg.tar /tmp/cifar10 \\
        --val-split 5000 --train-images 1000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.io import write_png

from resnetkit.data import DataConfig, InMemoryImageDataset, load_data


def write_folder(dataset: InMemoryImageDataset, root: Path, indices: torch.Tensor) -> None:
    for i in indices.tolist():
        folder = root / dataset.class_names[int(dataset.labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        write_png(dataset.images[i], str(folder / f"{i:05d}.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--val-split", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=1000, help="training images to write (calibration)")
    args = parser.parse_args()
    splits = load_data(DataConfig(source=args.source, val_split=args.val_split, seed=args.seed))
    out = Path(args.out)
    write_folder(splits.val, out / "val", torch.arange(len(splits.val)))
    pick = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(args.seed))[:args.train_images]
    write_folder(splits.train, out / "train", pick)
    print(f"wrote {len(splits.val)} validation and {len(pick)} training images under {out}")


if __name__ == "__main__":
    main()
