"""Images for calibration, parity checks and accuracy reports: a labelled folder or tensors.

Images are read and preprocessed exactly as ``resnetkit predict`` reads them (``infer.load_image``,
then the one ``eval_transform`` of the model's own ``Preprocess``), so an export's accuracy report
measures what a user of the exported model will see.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Preprocess
from ..data.transforms import eval_transform
from ..data.tree import IMAGE_EXTENSIONS
from ..infer.images import load_image


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
    """One image file as the model sees it: RGB, shorter side resized, centre-cropped, normalised."""
    return eval_transform(preprocess)(load_image(str(path)))


def load_image_folder(root: str | os.PathLike[str], preprocess: Preprocess, *,
                      class_names: list[str] | None = None, limit: int | None = None) -> LabelledImages:
    """Read ``root/<class>/<image>`` into memory.

    With ``class_names`` (the model's own list) labels follow the model's order and a folder that names
    an unknown class is an error; without it the sorted folder names are the classes. ``limit`` keeps
    the first images of each class in turn (round-robin), so a small limit still covers every class.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; expected root/<class>/<image files>")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"{root}: no class sub-folders; expected root/<class>/<image files>")
    names = list(class_names) if class_names else [p.name for p in folders]
    unknown = [p.name for p in folders if p.name not in names]
    if unknown:
        raise ValueError(f"{root}: folder(s) {unknown[:5]} are not among the model's {len(names)} class names "
                         f"(first: {names[:5]}); rename the folders or leave the class out")
    per_class = [sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS) for p in folders]
    order: list[tuple[Path, int]] = []
    for i in range(max(len(files) for files in per_class)):
        order += [(files[i], names.index(p.name)) for p, files in zip(folders, per_class) if i < len(files)]
    if limit is not None:
        order = order[:limit]
    if not order:
        raise ValueError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) under the class folders")
    images = torch.stack([preprocess_image(path, preprocess) for path, _ in order])
    labels = torch.tensor([label for _, label in order], dtype=torch.long)
    return LabelledImages(images, labels, names)


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
