"""Which device to run on: one rule for training, evaluation and prediction."""

from __future__ import annotations

import torch


def resolve_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (or None) picks the local CUDA device when there is one, else the CPU; a named CUDA device
    that is not there is a clear error rather than a crash deep inside the first ``.to()``."""
    if name in (None, "", "auto"):
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but no CUDA device is available; use --device cpu")
    return device
