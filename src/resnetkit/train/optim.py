"""The optimizer a ``TrainConfig`` names, built from parameter groups: SGD, Adam, AdamW or RMSprop.

Every optimizer is torch's own; this module only maps the recipe's fields onto their arguments. The
learning-rate schedule (``schedules.py``) multiplies each group's lr, so every schedule works with every
optimizer. Weight decay means what torch means by it: an L2 term added to the gradient for SGD, Adam and
RMSprop (Keras' ``kernel_regularizer=l2(...)`` is the same idea), decoupled decay for AdamW.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..config import TrainConfig

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


def build_optimizer(groups: Iterable[dict[str, Any]], *, name: str, lr: float, momentum: float = 0.9,
                    nesterov: bool = False, betas: tuple[float, ...] = (0.9, 0.999), eps: float = 1e-8,
                    rmsprop_alpha: float = 0.99) -> torch.optim.Optimizer:
    """``name`` over ``groups`` (dicts with ``params`` and their own ``weight_decay``, as ``param_groups`` gives).

    ``momentum``/``nesterov`` apply to SGD (and ``momentum`` to RMSprop); ``betas``/``eps`` to Adam and AdamW
    (``eps`` to RMSprop too); ``rmsprop_alpha`` is RMSprop's squared-gradient average (Keras calls it ``rho``).
    """
    groups = list(groups)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if nesterov:
        raise ValueError(f"nesterov=True applies to optimizer='sgd' only, not {name!r}; drop --nesterov, or pass "
                         "--no-nesterov where the recipe sets it (cifar10-fast does)")
    if name in ("adam", "adamw"):
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas={tuple(betas)} must be two numbers in [0, 1), e.g. --betas 0.9 0.999")
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(groups, lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=rmsprop_alpha, eps=eps, momentum=momentum)
    raise ValueError(f"optimizer={name!r} is not one of {OPTIMIZERS}")


def optimizer_from_config(groups: Iterable[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    """``build_optimizer`` with a ``TrainConfig``'s fields."""
    return build_optimizer(groups, name=config.optim.optimizer, lr=config.optim.lr, momentum=config.optim.momentum,
                           nesterov=config.optim.nesterov, betas=tuple(config.optim.betas), eps=config.optim.eps,
                           rmsprop_alpha=config.optim.rmsprop_alpha)
