"""Layer groups and discriminative learning rates, for fine-tuning a pretrained network.

Early layers of a pretrained network hold generic features (edges, textures) that a new task barely
needs to change; later layers and the fresh head need to move most (Howard & Ruder, ULMFiT; fastai's
``fine_tune``). So the network is cut into groups, input to output: the stem with the first stage, each
further stage, the head; and the learning rates rise geometrically from ``lr / lr_mult`` for the first
group to ``lr`` for the head.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..models.resnet import HEAD_MODULES


def layer_groups(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """``(name, parameters)`` per group, input to output: ``stem+layer1``, ``layer2`` ..., ``head``.

    Every trainable parameter is in exactly one group; frozen ones (``requires_grad=False``) are left out.
    """
    stage_names = list(getattr(model, "stage_names", []))
    if not stage_names:
        raise ValueError(f"discriminative learning rates (lr_mult != 1) need a network with stages "
                         f"(resnetkit's ResNet); got {type(model).__name__}: set lr_mult to 1")
    first, last = stage_names[0], stage_names[-1]
    names = [f"stem+{first}", *stage_names[1:], "head"]
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in names}
    for param_name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        top = param_name.split(".", 1)[0]
        if top in stage_names[1:]:
            group = top
        elif top in (*HEAD_MODULES, "head", "classifier"):
            group = "head"
        elif top == "norm":  # the pre-activation nets' final BN belongs to the last stage
            group = last if last != first else names[0]
        else:  # conv1, bn1 and anything else ahead of the stages
            group = names[0]
        groups[group].append(param)
    return [(name, params) for name, params in groups.items()]


def discriminative_lrs(lr: float, lr_mult: float, count: int) -> list[float]:
    """``count`` learning rates rising geometrically from ``lr / lr_mult`` to ``lr`` (fastai's ``slice``)."""
    if lr_mult < 1:
        raise ValueError(f"lr_mult={lr_mult} must be >= 1: the head's lr over the first layers' (1: one lr for all)")
    if count == 1:
        return [lr]
    return [lr / lr_mult ** (1 - i / (count - 1)) for i in range(count)]


def discriminative_param_groups(model: nn.Module, *, lr: float, lr_mult: float, weight_decay: float,
                                decay_norm_and_bias: bool) -> list[dict[str, Any]]:
    """Optimizer parameter groups, one (or two, sparing BN and biases weight decay) per layer group,
    each with its own ``lr``; schedules then scale every group's rate by the same factor."""
    named = layer_groups(model)
    lrs = discriminative_lrs(lr, lr_mult, len(named))
    result: list[dict[str, Any]] = []
    for (name, params), group_lr in zip(named, lrs):
        if not params:
            continue
        if decay_norm_and_bias:
            result.append({"params": params, "weight_decay": weight_decay, "lr": group_lr, "name": name})
        else:
            result += [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay, "lr": group_lr,
                        "name": name},
                       {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": group_lr,
                        "name": f"{name} (no decay)"}]
    return [g for g in result if g["params"]]
