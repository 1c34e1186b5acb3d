"""Learning-rate schedules, all stepped once per optimizer step (iteration).

Each schedule is a pure function of the iteration, wrapped in ``torch.optim.lr_scheduler.LambdaLR``,
so resuming only needs the iteration count. "plateau" (the paper's ImageNet rule: divide by 10 when
the error plateaus) is constant in the iteration and multiplied by ``gamma ** plateau_drops(...)``, a
pure function of the validation history; ``ReduceLROnPlateau`` would own the learning rate and not
compose with warm-up and the iteration schedules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("step", "cosine", "onecycle", "constant", "plateau", "exponential")
PLATEAU_THRESHOLD = 0.001  # a gain in val top-1 smaller than 0.1 points is no gain


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule in iterations; built from a ``TrainConfig`` by ``schedule_from_config``."""

    kind: str
    total_steps: int
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    gammas: tuple[float, ...] = ()  # "step": one multiplier per milestone instead of gamma at each
    warmup_steps: int = 0
    warmup_factor: float = 0.0  # >0: constant warm-up at base_lr * factor (the paper's ResNet-110 trick)
    decay_steps: int = 0  # "exponential": the lr is multiplied by decay_rate every decay_steps iterations
    decay_rate: float = 0.9
    staircase: bool = False  # "exponential": whole multiples only (Keras' ExponentialDecay(staircase=True))


def lr_factor(spec: ScheduleSpec, step: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based)."""
    if step < spec.warmup_steps:
        if spec.warmup_factor > 0:
            return spec.warmup_factor
        return (step + 1) / spec.warmup_steps
    if spec.kind in ("constant", "plateau"):
        return 1.0
    if spec.kind == "step":
        passed = sum(step >= m for m in spec.milestones)
        return math.prod(spec.gammas[:passed]) if spec.gammas else spec.gamma ** passed
    if spec.kind == "exponential":
        # Keras' ExponentialDecay: rate ** (step / decay_steps), counted from the end of the warm-up.
        exponent = (step - spec.warmup_steps) / spec.decay_steps
        return spec.decay_rate ** (math.floor(exponent) if spec.staircase else exponent)
    progress = (step - spec.warmup_steps) / max(1, spec.total_steps - spec.warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if spec.kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if spec.kind == "onecycle":
        # Linear up to the peak over the first 25% (or the warm-up), then linear down to zero:
        # the triangular one-cycle that fast CIFAR recipes use.
        peak = 0.25 if spec.warmup_steps == 0 else 0.0
        if progress < peak:
            return 0.1 + 0.9 * progress / peak
        return max(0.0, 1.0 - (progress - peak) / (1.0 - peak))
    raise ValueError(f"unknown schedule {spec.kind!r}; choose one of {SCHEDULES}")


def schedule_from_config(*, kind: str, milestones: tuple[float, ...], gamma: float, warmup: float,
                         warmup_lr: float, base_lr: float, total_steps: int, steps_per_unit: int,
                         decay_steps: int = 0, decay_rate: float = 0.9, staircase: bool = False,
                         gammas: tuple[float, ...] = ()) -> ScheduleSpec:
    """Turn recipe units (epochs, or iterations when ``steps_per_unit`` is 1) into iterations.

    Milestones <= 1 are fractions of the run; larger ones are absolute epochs (or iterations).
    ``decay_steps`` is in iterations (optimizer steps) always, as Keras counts it.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule={kind!r} is not one of {SCHEDULES}")
    if kind == "exponential":
        if decay_steps < 1:
            raise ValueError(f"schedule='exponential' needs decay_steps >= 1 (iterations), got {decay_steps}; "
                             "e.g. --decay-steps 10000 --decay-rate 0.9 --staircase")
        if not 0.0 < decay_rate <= 1.0:
            raise ValueError(f"decay_rate={decay_rate} must be in (0, 1] (the lr is multiplied by it)")
    if warmup_lr > 0 and not base_lr > 0:
        raise ValueError(f"warmup_lr={warmup_lr:g} warms up towards lr={base_lr:g}, which trains nothing: give the lr "
                         "to reach after the warm-up (--lr), or leave --warmup-lr out")
    # A milestone past the run's end is never reached: kept there (1e308 epochs would overflow in round()).
    steps = tuple(round(m * total_steps) if m <= 1 else round(min(m * steps_per_unit, total_steps + 1))
                  for m in milestones)
    if gammas and (len(gammas) != len(steps) or list(steps) != sorted(steps)):
        raise ValueError(f"milestone_gammas={tuple(gammas)} needs one multiplier per milestone, milestones in "
                         f"increasing order (milestones={tuple(milestones)})")
    return ScheduleSpec(kind=kind, total_steps=total_steps, milestones=steps, gamma=gamma, gammas=tuple(gammas),
                        warmup_steps=round(warmup * steps_per_unit),
                        warmup_factor=warmup_lr / base_lr if warmup_lr > 0 else 0.0,
                        decay_steps=decay_steps, decay_rate=decay_rate, staircase=staircase)


def plateau_drops(val_top1: list[float], *, patience: int, threshold: float = PLATEAU_THRESHOLD) -> int:
    """How often the lr has been divided after these evaluations: once each time more than ``patience``
    evaluations in a row failed to beat the best top-1 by ``threshold`` (``ReduceLROnPlateau``'s rule, mode
    "max", absolute threshold, no cooldown)."""
    best, bad, drops = -math.inf, 0, 0
    for top1 in val_top1:
        if top1 > best + threshold:
            best, bad = top1, 0
        else:
            bad += 1
            if bad > patience:
                drops, bad = drops + 1, 0
    return drops


def build_scheduler(optimizer: torch.optim.Optimizer, spec: ScheduleSpec, *,
                    drops: Callable[[], int] = lambda: 0) -> LambdaLR:
    """``drops()``: how many times a "plateau" schedule has multiplied the lr by ``gamma`` so far."""
    fn: Callable[[int], float] = lambda step: lr_factor(spec, step) * spec.gamma ** drops()  # noqa: E731
    return LambdaLR(optimizer, fn)
