"""The learning-rate range test (Smith 2017, fastai's ``lr_find``): what ``resnetkit lr-find`` runs.

The run's own training step (its data, augmentation, mixing, precision, frozen layers, accumulation, start model)
on a throwaway copy of its network, with the learning rate rising exponentially from ``start_lr`` to ``end_lr``
over ``steps`` optimizer steps, and the loss after each step, smoothed, against the lr. It stops when the
smoothed loss passes ``DIVERGED`` times its lowest value or is not finite, as fastai's does. torch-lr-finder runs
a loop of its own; this one is the training loop itself, so what it measures is what ``resnetkit train`` would do.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import LRFindOptions, TrainConfig
from ..device import resolve_device
from ..evaluate.report import pyplot_or_none
from ..files import save_figure_atomic, write_text_atomic
from .data import build_train_data, resolve_augment
from .distributed import DistInfo
from .loop import Trainer
from .run import build_model_for

SMOOTHING = 0.98  # fastai's: an exponential moving average of the loss over about 50 steps, bias-corrected
DIVERGED = 4.0  # stop once the smoothed loss is this many times its lowest


class _Diverged(Exception):
    """Raised from the step callback to end the test: the loss has blown up."""


@dataclass
class LRFindResult:
    """The lr of every step, the loss after it (raw and smoothed) and why the test ended."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed
    raw_losses: list[float] = field(default_factory=list)
    diverged: bool = False

    def suggestions(self) -> dict[str, float]:
        """Three readings of the curve, as fastai offers them: ``valley`` (the middle of the longest stretch over
        which the loss keeps falling: fastai's default), ``steep`` (where the loss falls fastest per decade of lr,
        before its lowest point) and ``minimum`` (a tenth of the lr of the lowest loss). Empty when there are fewer than 3 finite points."""
        points = [(lr, loss) for lr, loss in zip(self.lrs, self.losses) if math.isfinite(loss)]
        if len(points) < 3:
            return {}
        lrs, losses = [p[0] for p in points], [p[1] for p in points]
        lowest = min(range(len(losses)), key=losses.__getitem__)
        # The steepest fall lies before the lowest loss, past the first tenth (the average is still warming up
        # there: a few noisy losses move it most).
        first = len(lrs) // 10 if lowest > len(lrs) // 10 + 1 else 0
        slopes = {i: (losses[i + 1] - losses[i - 1]) / (math.log10(lrs[i + 1]) - math.log10(lrs[i - 1]))
                  for i in range(max(1, first), max(lowest, 2))}
        start, end = _longest_fall(losses)
        return {"valley": lrs[(start + end) // 2], "steep": lrs[min(slopes, key=slopes.__getitem__)],
                "minimum": lrs[lowest] / 10}

    def to_dict(self) -> dict[str, Any]:
        return {"lrs": self.lrs, "losses": self.losses, "raw_losses": self.raw_losses, "diverged": self.diverged,
                "suggestions": self.suggestions()}


def _longest_fall(losses: list[float]) -> tuple[int, int]:
    """First and last index of the longest strictly falling subsequence of ``losses`` (quadratic: ~100 points)."""
    length, before = [1] * len(losses), [-1] * len(losses)
    for i in range(len(losses)):
        for j in range(i):
            if losses[j] > losses[i] and length[j] + 1 > length[i]:
                length[i], before[i] = length[j] + 1, j
    end = max(range(len(losses)), key=length.__getitem__)
    start = end
    while before[start] >= 0:
        start = before[start]
    return start, end


def find_lr(config: TrainConfig, options: LRFindOptions | None = None) -> LRFindResult:
    """Run the range test for the run ``config`` describes (its ``lr``, schedule, EMA and evaluation are replaced;
    nothing is written to its folder)."""
    options = options or LRFindOptions()
    device = resolve_device(config.run.device)
    torch.manual_seed(config.run.seed)
    with tempfile.TemporaryDirectory(prefix="resnetkit-lr-find-") as scratch:
        config = config.with_flat(augment=resolve_augment(config), lr=options.start_lr, schedule="constant",
                                  warmup=0.0, iterations=options.steps, ema_decay=0.0, eval_every=0, resume=False,
                                  out_dir=scratch)
        data = build_train_data(config, dist=DistInfo(), device=device)
        model = build_model_for(config, data.num_classes)
        trainer = Trainer(model, config, data.train, None, num_classes=data.num_classes, device=device,
                          class_names=data.class_names)
        ratio = options.end_lr / options.start_lr
        trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(
            trainer.optimizer, lambda step: ratio ** (min(step, options.steps - 1) / (options.steps - 1)))
        result, average = LRFindResult(), 0.0

        def record(lr: float, loss: torch.Tensor) -> None:
            nonlocal average
            value = float(loss)
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smoothed = average / (1 - SMOOTHING ** (len(result.lrs) + 1))
            result.lrs.append(lr)
            result.raw_losses.append(value)
            result.losses.append(smoothed)
            if not math.isfinite(smoothed) or smoothed > DIVERGED * min(result.losses):
                raise _Diverged

        trainer.step_callback = record
        try:
            for epoch in range(trainer.epochs):
                trainer.train_one_epoch(epoch)
        except _Diverged:
            result.diverged = True
        finally:
            trainer.logger.close()
    return result


def write_lr_find(result: LRFindResult, out_dir: Path, *, title: str) -> dict[str, Path]:
    """``lr_find.json`` (every point and the suggestions) and, with matplotlib, ``lr_find.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "lr_find.json"}
    write_text_atomic(paths["json"], json.dumps(result.to_dict(), indent=2))
    plt = pyplot_or_none()
    if plt is not None and result.lrs:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(result.lrs, result.raw_losses, color="C0", alpha=0.25, label="loss")
        ax.plot(result.lrs, result.losses, color="C0", label="loss, smoothed")
        for (name, lr), colour in zip(result.suggestions().items(), ("C1", "C2", "C3")):
            ax.axvline(lr, color=colour, linestyle="--", label=f"{name}: {lr:.2e}")
        finite = [v for v in result.losses if math.isfinite(v)]
        if finite:  # the blow-up at the end would flatten the rest of the curve
            low, high = min(finite), min(max(finite), DIVERGED * min(finite))
            ax.set_ylim(0.95 * low, max(1.05 * high, low + 1e-3))
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title=title)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        fig.tight_layout()
        paths["figure"] = out_dir / "lr_find.png"
        save_figure_atomic(fig, paths["figure"], dpi=100)
        plt.close(fig)
    return paths
