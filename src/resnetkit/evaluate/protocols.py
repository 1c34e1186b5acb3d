"""Evaluation protocols of the paper (section 3.4 and Table 3/4):

- ``center``: resize the shorter side to ``resize_size``, one centre crop of ``input_size``;
- ``flip``: that centre crop and its mirror, softmax averaged (the usual CIFAR test-time augmentation);
- ``10crop``: the four corners and the centre, and their mirrors, at ``input_size``; softmax averaged;
- ``multiscale``: the fully convolutional form: the whole image with its shorter side at each scale
  (the paper's {224, 256, 384, 480, 640} for 224-pixel models, proportionally smaller for smaller
  models), and its mirror; softmax averaged over all of them.

Each takes ``(image, label)`` samples with ``image`` a (C, H, W) uint8 tensor of any size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..config import Preprocess
from .metrics import ClassificationMetrics

PROTOCOLS = ("center", "flip", "10crop", "multiscale")
PAPER_SCALES = (224, 256, 384, 480, 640)


def default_scales(preprocess: Preprocess) -> tuple[int, ...]:
    return tuple(round(s * preprocess.input_size / 224) for s in PAPER_SCALES)


def _normalise(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    return TF.normalize(images.float().div(255), list(preprocess.mean), list(preprocess.std))


def _resize(image: torch.Tensor, size: int, preprocess: Preprocess) -> torch.Tensor:
    mode = InterpolationMode(preprocess.interpolation)
    return TF.resize(image, [size], interpolation=mode, antialias=True)


def center_views(image: torch.Tensor, preprocess: Preprocess) -> list[torch.Tensor]:
    return [TF.center_crop(_resize(image, preprocess.resize_size, preprocess), [preprocess.input_size])]


def flip_views(image: torch.Tensor, preprocess: Preprocess) -> list[torch.Tensor]:
    (center,) = center_views(image, preprocess)
    return [center, TF.horizontal_flip(center)]


def ten_crop_views(image: torch.Tensor, preprocess: Preprocess) -> list[torch.Tensor]:
    return list(TF.ten_crop(_resize(image, preprocess.resize_size, preprocess), [preprocess.input_size]))


def multiscale_views(image: torch.Tensor, preprocess: Preprocess, scales: tuple[int, ...]) -> list[torch.Tensor]:
    views = []
    for scale in scales:
        resized = _resize(image, scale, preprocess)
        views += [resized, TF.horizontal_flip(resized)]
    return views


def _batches(samples: Iterable[tuple[torch.Tensor, int]], batch_size: int) -> Iterator[list[tuple[torch.Tensor, int]]]:
    batch: list[tuple[torch.Tensor, int]] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def evaluate_samples(model: nn.Module, samples: Iterable[tuple[torch.Tensor, int]], *, preprocess: Preprocess,
                     num_classes: int, protocol: str = "center", scales: tuple[int, ...] | None = None,
                     batch_size: int = 64, device: torch.device | str = "cpu") -> ClassificationMetrics:
    """Accuracy of ``model`` under one protocol; logits are log-averaged softmax over each image's views."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is not one of {PROTOCOLS}")
    device = torch.device(device)
    model.eval().to(device)
    metrics = ClassificationMetrics(num_classes)
    scales = scales or default_scales(preprocess)
    for batch in _batches(samples, batch_size):
        labels = torch.tensor([label for _, label in batch])
        if protocol == "multiscale":
            # Views differ in size: the network is fully convolutional, so run each view on its own.
            probs = []
            for image, _ in batch:
                views = multiscale_views(image, preprocess, scales)
                p = [model(_normalise(v, preprocess)[None].to(device)).softmax(1) for v in views]
                probs.append(torch.cat(p).mean(0))
            mean_probs = torch.stack(probs)
        else:
            make = {"center": center_views, "flip": flip_views, "10crop": ten_crop_views}[protocol]
            views = [make(image, preprocess) for image, _ in batch]
            per_image = len(views[0])
            stacked = _normalise(torch.stack([v for vs in views for v in vs]), preprocess).to(device)
            mean_probs = model(stacked).softmax(1).view(len(batch), per_image, -1).mean(1)
        metrics.update(mean_probs.clamp_min(1e-12).log().cpu(), labels)
    return metrics
