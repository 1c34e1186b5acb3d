"""Training checkpoints: written atomically, read back without running any code.

A checkpoint holds only tensors, numbers, strings and dicts of them, so it loads with
``torch.load(weights_only=True)``. It is written to a temporary file and renamed, so a run killed
mid-write keeps its previous checkpoint.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_path


def rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                             "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        # A run resumed on a machine with fewer GPUs visible: each device that is there gets its own state back.
        for index, cuda_state in enumerate(list(state["cuda"])[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as file:  # a full disk: atomic_path names the file
        torch.save(state, file)
    return path


# What ``Trainer.state_dict`` writes and ``Trainer.resume`` reads back.
CHECKPOINT_KEYS = frozenset({"epoch", "step", "config", "history", "model", "optimizer", "scheduler", "scaler", "ema",
                             "rng"})
HISTORY_KEYS = frozenset({"epoch", "train_loss", "train_acc"})  # in every epoch's row; the report's curves read them


class CheckpointError(ValueError):
    """A checkpoint file that is not one resnetkit wrote (damaged, truncated, or another program's)."""


def checkpoint_error(path: str | os.PathLike[str],
                     problem: str = "is not a resnetkit checkpoint (damaged, or written by something else)"
                     ) -> CheckpointError:
    """The one message for a checkpoint that cannot be resumed: what is wrong with ``path``, then what to do."""
    return CheckpointError(f"{path} {problem}: move it away or delete it to start this run over, or train into "
                           "another --out-dir")


def load_checkpoint(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """The dict ``save_checkpoint`` wrote; anything else is refused without running any code it holds. ``mmap``:
    map the tensors rather than read them (to look at the config alone)."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise checkpoint_error(path, "is not a file (a folder, pipe or device)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError as e:
        if e.errno == errno.EINVAL:  # mmap of a zip cut short: EINVAL; not the disk, the file
            raise checkpoint_error(path, "is truncated or damaged (a copy or a run stopped while writing it)") from e
        raise  # the disk (ENOSPC, EIO) or permissions, not the file's content: said as it is
    except MemoryError:
        raise
    except Exception as e:  # torch's text is not repeated: it may suggest weights_only=False (running the file's code)
        raise checkpoint_error(path) from e
    if not isinstance(state, dict):
        raise checkpoint_error(path)
    return state


def load_training_checkpoint(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """A training run's checkpoint, with everything ``Trainer.resume`` reads (a bare state dict is refused)."""
    state = load_checkpoint(path, mmap=mmap)
    if not CHECKPOINT_KEYS <= state.keys() or not isinstance(state["config"], dict):
        raise checkpoint_error(path)
    counts = (state["epoch"], state["step"])
    if (any(type(n) is not int or n < -1 for n in counts) or not isinstance(state["history"], list)
            or not all(isinstance(row, dict) and HISTORY_KEYS <= row.keys() for row in state["history"])):
        raise checkpoint_error(path)
    # Values a run reads back as numbers: a crafted text would fail only after an epoch trained and the model file
    # was replaced (plotting the history, the optimizer's first step).
    odd = [f"history[{i}][{key!r}]" for i, row in enumerate(state["history"]) for key, value in row.items()
           if not _number(value)]
    groups = state["optimizer"].get("param_groups", []) if isinstance(state["optimizer"], dict) else []
    odd += [f"optimizer group {i} {key!r}" for i, group in enumerate(groups if isinstance(groups, list) else [])
            for key, value in (group.items() if isinstance(group, dict) else [("group", group)])
            if key != "params" and not _setting(value)]
    if odd:
        raise checkpoint_error(path, f"holds values that are not numbers where numbers belong ({', '.join(odd[:3])})"
                                     ": it is damaged or crafted")
    return state


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
        isinstance(value, torch.Tensor) and value.numel() == 1)


def _setting(value: Any) -> bool:
    """An optimizer hyper-parameter as torch's optimizers keep them: numbers, flags, None, pairs (betas), tensors."""
    if isinstance(value, (tuple, list)):
        return all(_setting(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, torch.Tensor))
