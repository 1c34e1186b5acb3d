"""Whether a run may continue from a checkpoint: the same run (only where it runs, how fast and how long may change)
and not a shorter one than is trained already. Read by the loop, the run, pruning and the study."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..models.registry import resolve_config

# Fields that may differ between a run and its resumption (where and how fast it runs, and how long);
# any other difference is refused. Memory layout and compilation change speed, not the recipe's arithmetic.
# How a run runs, not what it learns: a resumed run may change these.
RESUME_MAY_CHANGE = frozenset({"resume", "progress", "eval_every", "out_dir", "device", "workers", "epochs",
                               "iterations", "channels_last", "compile", "amp", "grad_checkpointing"})


def _settings_meant(config: TrainConfig) -> dict[str, Any]:
    """The flag-named settings, with the model's None fields (variant, shortcut, width) as the architecture's
    defaults they stand for; a model outside the registry is compared as written."""
    try:
        config = dataclasses.replace(config, model=resolve_config(config.model))
    except ValueError:
        pass
    return config.to_flat()


PATH_SETTINGS = frozenset({"data", "pretrained", "teacher", "classes"})  # flat settings that name files or folders


def same_setting(key: str, was: Any, now: Any) -> bool:
    """Whether two values of one flat setting mean the same: equal, or (for a path) naming the same file or folder,
    however spelled (relative to another folder, absolute, through a link)."""
    if was == now:
        return True
    if key in PATH_SETTINGS and isinstance(was, str) and isinstance(now, str) and was and now:
        try:
            return os.path.samefile(was, now)
        except (OSError, ValueError):  # one of them is not on this machine (a dataset name, a URL, a moved file)
            return False
    return False


def check_resumable(config: TrainConfig, saved: dict[str, Any], *, path: Path) -> dict[str, tuple[Any, Any]]:
    """A resumed run must be the same run as the one that wrote the checkpoint at ``path`` (its config ``saved``):
    only where it runs and how long may change. Returns the lengths that changed, {name: (was, now)}."""
    # Flat (written before sections) or nested; a setting added later had its default value then.
    try:
        current, saved = _settings_meant(config), _settings_meant(TrainConfig.from_dict(saved))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path} records a configuration this resnetkit cannot read ({e}); start a new run in another "
                         "--out-dir") from e
    changed = sorted(k for k in current if k not in RESUME_MAY_CHANGE and not same_setting(k, saved[k], current[k]))
    if changed:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"{path} was written by a different configuration ({shown}); resume with the same settings, "
                         "or start a new run in another --out-dir")
    return {key: (saved.get(key), current[key]) for key in ("epochs", "iterations") if saved.get(key) != current[key]}


def check_not_shorter(config: TrainConfig, *, epochs_done: int, steps_done: int, path: Path) -> None:
    """Resuming with fewer epochs or iterations than are trained already would train nothing and rewrite the run's
    records as a shorter run's: refused."""
    sched = config.schedule
    if sched.iterations > 0 and steps_done > sched.iterations:
        length = f"--iterations {sched.iterations}, but {steps_done} steps"
    elif sched.iterations <= 0 and epochs_done > sched.epochs:
        length = f"--epochs {sched.epochs}, but {epochs_done} epochs"
    else:
        return
    raise ValueError(f"--resume: {length} are trained already ({path}); give at least as many to continue, or start "
                     "a new run in another --out-dir")
