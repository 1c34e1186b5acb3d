"""Test-time augmentation, one definition for evaluation (``resnetkit eval --protocol flip``) and prediction
(``resnetkit predict --tta flip``)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import TTA_MODES

__all__ = ["TTA_MODES", "flip_averaged_log_probs", "mirror_averaged"]


def flip_averaged_log_probs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Each image's softmax averaged with its horizontal mirror's, as log-probabilities (N, classes): a softmax of
    them gives the averaged probabilities back, so they stand in for logits. NaN stays NaN."""
    return mirror_averaged(model(images), model(images.flip(-1)))


def mirror_averaged(logits: torch.Tensor, mirror_logits: torch.Tensor) -> torch.Tensor:
    """The images' and their mirrors' softmax averaged, as log-probabilities (for a runtime that is not a torch
    module: the server's ONNX or OpenVINO runners)."""
    probs = (logits.float().softmax(1) + mirror_logits.float().softmax(1)) / 2
    return probs.clamp_min(1e-12).log()
