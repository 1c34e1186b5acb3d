"""What a deployment variant costs and buys: size, speed and top-1 on a labelled set, side by side.

``compare_variants`` builds fp32, ONNX, INT8 and fp16/bf16 runners of one model and reports each
against the fp32 eager model, so the accuracy cost of quantization is a number, not a guess.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ModelInfo
from ..models import ResNet
from .data import LabelledImages, as_labelled
from .registry import build_runner, prepare_runtimes
from .runtimes import Runner


def top1_accuracy(runner: Runner | torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                  batch_size: int = 64) -> float:
    predictions = []
    for chunk in images.split(batch_size):
        if isinstance(runner, torch.nn.Module):
            with torch.no_grad():
                logits = runner(chunk).numpy()
        else:
            logits = runner(chunk)
        predictions.append(torch.from_numpy(np.asarray(logits)).argmax(1))
    return float((torch.cat(predictions) == labels).float().mean())


def median_latency_ms(runner: Runner, batch: torch.Tensor, *, repeats: int = 10, warmup: int = 2) -> float:
    array = batch.numpy().astype(np.float32)
    for _ in range(warmup):
        runner(array)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(array)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


@dataclass(frozen=True)
class VariantResult:
    name: str
    size_bytes: int
    latency_ms: float
    top1: float
    top1_change: float
    agreement: float  # share of images whose top-1 matches the fp32 eager model


@dataclass(frozen=True)
class VariantReport:
    rows: list[VariantResult]
    images: int
    latency_batch: int

    def table(self) -> str:
        lines = [f"{'variant':<15} {'size MB':>8} {'ms/batch':>9} {'top-1':>8} {'change':>8} {'agrees':>7}   "
                 f"({self.images} labelled images, latency at batch {self.latency_batch})"]
        for r in self.rows:
            lines.append(f"{r.name:<15} {r.size_bytes / 1e6:>8.2f} {r.latency_ms:>9.2f} {r.top1:>8.2%} "
                         f"{r.top1_change * 100:>+7.2f}p {r.agreement:>7.1%}")
        return "\n".join(lines)


def compare_variants(model: ResNet | str | os.PathLike[str],
                     data: LabelledImages | tuple[torch.Tensor, torch.Tensor] | str | os.PathLike[str],
                     *, variants: tuple[str, ...] = ("torch", "torch-bf16", "onnx", "onnx-int8"),
                     calibration: torch.Tensor | None = None, info: ModelInfo | None = None,
                     latency_batch: int = 1, limit: int | None = None) -> VariantReport:
    """Size, latency and top-1 of each variant on a labelled set (a root/<class>/<image> folder or tensors).

    ``calibration`` defaults to the first 64 evaluation images; pass separate images for an honest
    estimate on a large set (calibrating on the test images flatters INT8 slightly).
    """
    from ..models import load_model

    if isinstance(model, (str, os.PathLike)):
        model, info = load_model(model)
    if info is None:
        from ..models import default_info

        info = default_info(model)
    model = model.eval()
    labelled = as_labelled(data, preprocess=info.preprocess, class_names=info.class_names or None, limit=limit)
    if calibration is None:
        calibration = labelled.images[:64]
    with torch.no_grad():
        reference = torch.cat([model(c) for c in labelled.images.split(64)]).argmax(1)
    baseline_top1 = float((reference == labelled.labels).float().mean())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Each runtime's own default thread count and spinning: one runtime is timed at a time here.
        for spec in prepare_runtimes(model, info, variants, Path(tmp), calibration=calibration, threads=None,
                                     spinning=True):
            runner = build_runner(spec)
            predicted = torch.from_numpy(np.concatenate([runner(c) for c in labelled.images.split(64)])).argmax(1)
            top1 = float((predicted == labelled.labels).float().mean())
            rows.append(VariantResult(spec.name, runner.size_bytes,
                                      median_latency_ms(runner, labelled.images[:latency_batch]), top1,
                                      top1 - baseline_top1, float((predicted == reference).float().mean())))
    return VariantReport(rows, len(labelled), latency_batch)
