"""Evaluation protocols of the paper (section 3.4 and Table 3/4):

- ``center``: resize the shorter side to ``resize_size``, one centre crop of ``input_size``;
- ``flip``: that centre crop and its mirror, softmax averaged (the usual CIFAR test-time augmentation);
- ``10crop``: the four corners and the centre, and their mirrors, at ``input_size``; softmax averaged;
- ``multiscale``: the fully convolutional form: the whole image with its shorter side at each scale
  (the paper's {224, 256, 384, 480, 640} for 224-pixel models, proportionally smaller for smaller
  models), and its mirror; softmax averaged over all of them.

Each takes ``(image, label)`` samples with ``image`` a (C, H, W) uint8 tensor of any size. The views and
their normalisation are the data package's one evaluation preprocessing (``data.preprocess.eval_views``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ..config import Preprocess
from ..data.preprocess import PAPER_SCALES, PROTOCOLS, default_scales, eval_views, to_model_input
from ..models.tta import averaged_log_probs
from .metrics import ClassificationMetrics

__all__ = ["PAPER_SCALES", "PROTOCOLS", "default_scales", "evaluate_samples", "protocol_log_probs"]


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
def protocol_log_probs(model: nn.Module, samples: Iterable[tuple[torch.Tensor, int]], *, preprocess: Preprocess,
                       protocol: str = "center", scales: tuple[int, ...] | None = None, batch_size: int = 64,
                       device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``model``'s answer under one protocol, batch by batch: ``(log_probs, labels)`` on the CPU, the log of the
    softmax averaged over each image's views (for ``center``: the logits, shifted by a constant per row)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is not one of {PROTOCOLS}")
    device = torch.device(device)
    model.eval().to(device)
    scales = scales or default_scales(preprocess)
    # Each image becomes its views as it arrives, so a batch holds views, never a batch of full-size photos.
    viewed = ((eval_views(image, preprocess, protocol=protocol, scales=scales), label) for image, label in samples)
    for batch in _batches(viewed, batch_size):
        labels = torch.tensor([label for _, label in batch])
        views = [image_views for image_views, _ in batch]
        if protocol == "multiscale":
            # Views differ in size: the network is fully convolutional, so run each view on its own.
            log_probs = torch.stack([averaged_log_probs(torch.cat([model(to_model_input(v, preprocess)[None].to(device))
                                                                   for v in image_views]), dim=0)
                                     for image_views in views])
        else:
            per_image = len(views[0])
            stacked = to_model_input(torch.stack([v for vs in views for v in vs]), preprocess).to(device)
            log_probs = averaged_log_probs(model(stacked).view(len(batch), per_image, -1), dim=1)
        yield log_probs.cpu(), labels


def evaluate_samples(model: nn.Module, samples: Iterable[tuple[torch.Tensor, int]], *, preprocess: Preprocess,
                     num_classes: int, protocol: str = "center", scales: tuple[int, ...] | None = None,
                     batch_size: int = 64, device: torch.device | str = "cpu",
                     keep_worst: int = 0) -> ClassificationMetrics:
    """Accuracy of ``model`` under one protocol (``protocol_log_probs``). ``keep_worst``: the metrics also keep
    that many highest-loss samples (``top_losses``)."""
    metrics = ClassificationMetrics(num_classes, keep_worst=keep_worst)
    for log_probs, labels in protocol_log_probs(model, samples, preprocess=preprocess, protocol=protocol,
                                                scales=scales, batch_size=batch_size, device=device):
        metrics.update(log_probs, labels)
    return metrics
