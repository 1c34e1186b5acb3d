"""Images for calibration, parity checks and accuracy reports: a labelled folder, tar or CSV, or tensors.

A folder, tar or CSV is indexed by the data package's tree reader (``data.index_tree``, as training and
``resnetkit eval`` index it), each file decoded by the one decoder and preprocessed by the one
evaluation transform of the model's own ``Preprocess``, so an export's accuracy report measures what a
user of the exported model will see.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Preprocess
from ..data.image import decode_rgb, read_image_file
from ..data.preprocess import eval_transform
from ..data.source import resolve_source
from ..data.tree import index_tree, is_class_folder, is_split_folder, report_skipped


@dataclass
class LabelledImages:
    """Preprocessed images ``(N, C, H, W)`` float32, integer labels ``(N,)`` and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]


def preprocess_image(path: str | os.PathLike[str], preprocess: Preprocess) -> torch.Tensor:
    """One image file as the model sees it: decoded, shorter side resized, centre-cropped, normalised."""
    return eval_transform(preprocess)(decode_rgb(read_image_file(path, name=str(path)), name=str(path)))


def load_image_folder(root: str | os.PathLike[str], preprocess: Preprocess, *,
                      class_names: list[str] | None = None, limit: int | None = None) -> LabelledImages:
    """Read ``root/<class>/<image>`` (or its test/ or val/ split), an uncompressed tar of one or a labels CSV (its
    test rows when it has some) into memory.

    With ``class_names`` (the model's own list) labels follow the model's order and a class folder that
    names an unknown class is an error; without it the sorted folder names are the classes. ``limit``
    keeps the first images of each class in turn (round-robin), so a small limit still covers every
    class. Files that cannot be decoded are reported by path and left out.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder or file; expected root/<class>/<image files>, a tar of one "
                                "or a labels CSV")
    source = resolve_source(root)
    if not (source.is_image_tree and source.file_by_file):
        raise ValueError(f"{root}: labelled images are read one by one from a folder root/<class>/<image files>, an "
                         "uncompressed tar of one or a labels CSV (decompress a .tar.gz once, e.g. gunzip)")
    subfolders = [p.name for p in root.iterdir() if p.is_dir() and is_class_folder(p.name)] if root.is_dir() else []
    tree = index_tree(root, split=source.evaluation_split) if subfolders or not root.is_dir() else None
    if tree is None:
        raise ValueError(f"{root}: no class sub-folders; expected root/<class>/<image files>")
    # An empty folder is a class too: one the model does not know is an error even before it holds images.
    folders = [name for name in subfolders if not is_split_folder(name)]
    names = list(class_names) if class_names else list(tree.class_names)
    unknown = sorted({*folders, *tree.class_names} - set(names))
    if unknown:
        raise ValueError(f"{root}: class(es) {unknown[:5]} are not among the model's {len(names)} class names "
                         f"(first: {names[:5]}); rename those classes or leave them out")
    per_class = [[i for i, label in enumerate(tree.labels) if label == k] for k in range(len(tree.class_names))]
    order = [files[i] for i in range(max(map(len, per_class))) for files in per_class if i < len(files)]
    transform = eval_transform(preprocess)
    images, labels, skipped = [], [], list(tree.skipped)
    for index in order:
        if limit is not None and len(images) == limit:
            break
        try:
            images.append(transform(decode_rgb(tree.read_bytes(index))))
        except (OSError, ValueError) as error:
            skipped.append((tree.paths[index], str(error)))
            continue
        labels.append(names.index(tree.class_names[tree.labels[index]]))
    report_skipped(skipped, source=str(root))
    if not images:
        raise ValueError(f"{root}: none of the image files under the class folders could be decoded")
    return LabelledImages(torch.stack(images), torch.tensor(labels, dtype=torch.long), names)


def load_calibration_images(root: str | os.PathLike[str], preprocess: Preprocess, *,
                            limit: int | None = None) -> torch.Tensor:
    """Preprocessed images to calibrate INT8 on and check parity with, where no labels are needed: the images in a
    folder and its sub-folders (searched as ``predict`` searches one; with ``limit``, taken from each folder in turn
    so that every class folder is sampled), or a tar or CSV ``load_image_folder`` reads, whatever its class names
    (ONNX Runtime's and LiteRT's calibration take unlabelled inputs too)."""
    from ..infer.images import expand_inputs

    root = Path(root)
    if not root.is_dir():
        return load_image_folder(root, preprocess, limit=limit).images
    by_folder: dict[str, list[str]] = {}
    for path in expand_inputs([str(root)]):  # a pipe named as an image is listed too: read_image_file refuses it
        by_folder.setdefault(os.path.dirname(path), []).append(path)
    # Each folder in turn, stopping at the limit (a list of every round would cost largest folder x folders).
    order = (path for row in itertools.zip_longest(*by_folder.values()) for path in row if path is not None)
    images, skipped = [], []
    for path in order:
        if limit is not None and len(images) == limit:
            break
        try:
            images.append(preprocess_image(path, preprocess))
        except (OSError, ValueError) as error:
            skipped.append((path, str(error)))
    report_skipped(skipped, source=str(root))
    if not images:
        raise ValueError(f"{root}: no image in it or its sub-folders could be decoded; give a folder of images to "
                         "calibrate on")
    return torch.stack(images)


def as_labelled(data: LabelledImages | tuple[torch.Tensor, torch.Tensor] | str | os.PathLike[str], *,
                preprocess: Preprocess, class_names: list[str] | None = None,
                limit: int | None = None) -> LabelledImages:
    """Accept a folder, an ``(images, labels)`` pair or ``LabelledImages``; return ``LabelledImages``."""
    if isinstance(data, LabelledImages):
        return data
    if isinstance(data, tuple):
        images, labels = data
        return LabelledImages(images.float(), labels.long(), list(class_names or []))
    return load_image_folder(data, preprocess, class_names=class_names, limit=limit)
