"""Test-time augmentation, one definition for evaluation (``resnetkit eval --protocol flip``) and prediction
(``resnetkit predict --tta flip``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TTA_MODES

__all__ = ["TTA_MODES", "averaged_log_probs", "flip_averaged_log_probs", "mirror_averaged"]


def averaged_log_probs(logits: torch.Tensor, *, dim: int) -> torch.Tensor:
    """The log of the softmax averaged over the views along ``dim`` of ``logits`` (views, ..., classes), computed in
    log space: a probability too small for float32 keeps its own loss instead of being rounded to 0 (or clamped)."""
    return torch.logsumexp(logits.float().log_softmax(-1), dim=dim) - math.log(logits.shape[dim])


def flip_averaged_log_probs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Each image's softmax averaged with its horizontal mirror's, as log-probabilities (N, classes): a softmax of
    them gives the averaged probabilities back, so they stand in for logits. NaN stays NaN."""
    return mirror_averaged(model(images), model(images.flip(-1)))


def mirror_averaged(logits: torch.Tensor, mirror_logits: torch.Tensor) -> torch.Tensor:
    """The images' and their mirrors' softmax averaged, as log-probabilities (for a runtime that is not a torch
    module: the server's ONNX or OpenVINO runners)."""
    return averaged_log_probs(torch.stack([logits, mirror_logits]), dim=0)
