"""Test-time augmentation, one definition for evaluation (``resnetkit eval --protocol flip``) and prediction
(``resnetkit predict --tta flip``)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import TTA_MODES

__all__ = ["TTA_MODES", "flip_averaged_log_probs"]


def flip_averaged_log_probs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Each image's softmax averaged with its horizontal mirror's, as log-probabilities (N, classes): a softmax of
    them gives the averaged probabilities back, so they stand in for logits. NaN stays NaN."""
    probs = (model(images).float().softmax(1) + model(images.flip(-1)).float().softmax(1)) / 2
    return probs.clamp_min(1e-12).log()
