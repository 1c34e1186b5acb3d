"""The learning-rate range test (Smith 2017, fastai's ``lr_find``): what ``resnetkit lr-find`` runs.

The run's own training step (its data, augmentation, mixing, precision, accumulation, distillation teacher; for a
start model, the stage a fine-tune begins with) on a throwaway copy of its network, with the learning rate rising
exponentially from ``start_lr`` to ``end_lr`` over ``steps`` optimizer steps, and the loss of each step, smoothed,
against the lr. It stops when the smoothed loss passes ``DIVERGED`` times its lowest value or is not finite, as
fastai's does. torch-lr-finder runs a loop of its own; this one is the training loop itself, so what it measures
is what ``resnetkit train`` would do.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import LRFindOptions, TrainConfig
from ..device import resolve_device
from ..evaluate.report import pyplot_or_none
from ..files import prepare_output_dir, save_figure_atomic, write_text_atomic
from .distributed import DistInfo
from .finetune import first_stage
from .loop import NonFiniteLossError, Trainer
from .run import check_outside_data, start_run, training_parts

SMOOTHING = 0.98  # fastai's: an exponential moving average of the loss over about 50 steps, bias-corrected
DIVERGED = 4.0  # stop once the smoothed loss is this many times its lowest


class _Diverged(Exception):
    """Raised from the step callback to end the test: the loss has blown up."""


@dataclass
class LRFindResult:
    """The lr of every step, the loss after it (raw and smoothed) and why the test ended."""

    planned_steps: int = 0
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed
    raw_losses: list[float] = field(default_factory=list)
    diverged: bool = False
    stage: str = "training"  # what was tested: the training, or a fine-tune's first stage

    def suggestions(self) -> dict[str, float]:
        """fastai's three readings of the curve, on the points it reads (the first tenth of the planned steps and
        the last 5 left out, and everything from the first non-finite loss on): ``valley`` (the middle of the
        longest stretch over which the loss keeps falling: fastai's default), ``steep`` (the steepest fall per
        decade of lr before the lowest loss; fastai looks past it too) and ``minimum`` (a tenth of the lr of the
        lowest loss). Empty below 3 points."""
        cut = next((i for i, loss in enumerate(self.losses) if not math.isfinite(loss)), len(self.losses))
        lrs, losses = self.lrs[:cut][self.planned_steps // 10:-5], self.losses[:cut][self.planned_steps // 10:-5]
        if len(losses) < 3:
            return {}
        lowest = min(range(len(losses)), key=losses.__getitem__)
        # Before the lowest loss only: a loss that blew up and settles again (label smoothing bounds it) falls too.
        slopes = [(b - a) / (math.log(lr_b) - math.log(lr_a))
                  for a, b, lr_a, lr_b in zip(losses[:max(lowest, 1) + 1], losses[1:], lrs, lrs[1:])]
        start, end = _longest_fall(losses)
        return {"valley": lrs[(start + end) // 2], "steep": lrs[min(range(len(slopes)), key=slopes.__getitem__)],
                "minimum": lrs[lowest] / 10}

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "planned_steps": self.planned_steps, "lrs": self.lrs, "losses": self.losses,
                "raw_losses": self.raw_losses, "diverged": self.diverged, "suggestions": self.suggestions()}


def _longest_fall(losses: list[float]) -> tuple[int, int]:
    """First and last index of a longest strictly falling subsequence of ``losses`` (patience sorting on the
    negated values: n log n)."""
    tails: list[float] = []  # tails[k]: the smallest last -loss of a falling run of length k + 1 so far
    tail_at: list[int] = []
    before = [-1] * len(losses)
    for i, loss in enumerate(losses):
        k = bisect.bisect_left(tails, -loss)
        before[i] = tail_at[k - 1] if k else -1
        if k == len(tails):
            tails.append(-loss)
            tail_at.append(i)
        else:
            tails[k], tail_at[k] = -loss, i
    end = tail_at[-1]
    start = end
    while before[start] >= 0:
        start = before[start]
    return start, end


def find_lr(config: TrainConfig, options: LRFindOptions | None = None) -> LRFindResult:
    """Run the range test for the run ``config`` describes (its ``lr``, schedule, EMA and evaluation are replaced;
    nothing is written to its folder)."""
    options = options or LRFindOptions()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("lr-find runs in one process: start it with resnetkit, not torchrun (the lr it suggests "
                         "holds for the batch size it is given: --batch-size as the whole multi-process batch)")
    check_outside_data(Path(config.run.out_dir), config.data.source)  # lr_find.png would become a training image
    prepare_output_dir(config.run.out_dir, flag="--out-dir")  # a file in its place: said before the test runs
    device = resolve_device(config.run.device)
    with tempfile.TemporaryDirectory(prefix="resnetkit-lr-find-") as scratch:
        config, stage = first_stage(config.with_flat(out_dir=scratch, resume=False), Path(scratch))
        # The stage's start as run_training makes it (the seed, then the network), so the range test's first
        # steps are the run's own.
        config = start_run(config).with_flat(lr=options.start_lr, schedule="constant", warmup=0.0,
                                             iterations=options.steps, ema_decay=0.0, eval_every=0)
        data, model, teacher = training_parts(config, dist=DistInfo(), device=device)
        trainer = Trainer(model, config, data.train, None, num_classes=data.num_classes, device=device,
                          class_names=data.class_names, teacher=teacher)
        ratio = options.end_lr / options.start_lr
        trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(
            trainer.optimizer, lambda step: ratio ** (min(step, options.steps - 1) / (options.steps - 1)))
        result, average = LRFindResult(planned_steps=options.steps, stage=stage), 0.0

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
        except (_Diverged, NonFiniteLossError):  # the loop's own check sees a NaN of a step not yet recorded
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
