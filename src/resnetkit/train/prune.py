"""``resnetkit prune``: a trained model pruned to a MAC target, then fine-tuned by the training loop.

Pruning (``export.pruning``) removes channels inside the residual blocks; what keeps the accuracy is the
fine-tune, which is the ordinary training loop (``Trainer``) with a recipe's settings over a fraction of an
epoch or a few. Top-1 is measured by ``resnetkit eval``'s own code on the images the model's training held
out: before pruning, right after, and after the fine-tune. The result is an ordinary resnetkit model file
(it records its pruned widths), so predict, eval, export and serve load it like any other.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import EvalConfig, ModelInfo, PruneConfig, TrainConfig, load_train_config
from ..device import describe_machine, resolve_device
from ..evaluate.run import run_evaluation
from ..export.pruning import PruneReport, prune_model, save_pruned_model
from ..models import ResNet, load_model
from .data import build_train_data
from .distributed import DistInfo
from .loop import Trainer
from .run import MODEL_FILE



@dataclass
class PruneResult:
    model_path: Path
    report: PruneReport
    fine_tune_s: float


def fine_tune_config(config: PruneConfig, info: ModelInfo) -> TrainConfig:
    """The recipe's settings on the model's own data split and preprocessing, without evaluation."""
    pre = info.preprocess
    overrides: dict[str, object] = dict(
        data=config.data, val_split=config.val_split, seed=config.seed, model=info.model.arch,
        image_size=pre.input_size, mean=tuple(pre.mean), std=tuple(pre.std),
        out_dir=str(Path(config.out_dir) / "fine-tune"), eval_every=0, device=config.device, progress=config.progress)
    if config.lr:
        overrides["lr"] = config.lr
    return load_train_config(config.recipe, **overrides)


def fine_tune(model: nn.Module, config: TrainConfig, *, epochs: float, class_names: list[str]) -> nn.Module:
    """Train ``model`` for ``epochs`` of ``config``'s training split (fractions allowed); returns the trained
    weights (the EMA average when the recipe keeps one), on the CPU, in eval mode."""
    device = resolve_device(config.run.device)
    data = build_train_data(config, dist=DistInfo(), device=device)
    if class_names and list(data.class_names) != list(class_names):
        raise ValueError(f"{config.data.source} has classes {data.class_names[:10]}, the model was trained on "
                         f"{class_names[:10]}: fine-tune it on the data it was trained on")
    steps = max(1, round(epochs * len(data.train)))
    fit = Trainer(model, config.with_flat(iterations=steps), data.train, None, num_classes=data.num_classes,
                  device=device).fit()
    return fit.model.to("cpu", memory_format=torch.contiguous_format).eval()


def run_pruning(config: PruneConfig) -> PruneResult:
    """What ``resnetkit prune`` does: prune, fine-tune, save, and write report.md/report.json to ``out_dir``."""
    out = Path(config.out_dir)
    if (out / MODEL_FILE).exists():
        raise ValueError(f"{out} already holds a pruned model ({MODEL_FILE}); choose another --out-dir so it is "
                         "not overwritten")
    model, info = load_model(config.model)
    if not isinstance(model, ResNet):
        raise ValueError(f"{config.model}: pruning works on resnetkit ResNets; this file holds a "
                         f"{type(model).__name__}")
    out.mkdir(parents=True, exist_ok=True)

    def top1(path: str | Path, name: str) -> float:
        return run_evaluation(EvalConfig(model=str(path), data=config.data, val_split=config.val_split,
                                         seed=config.seed, out_dir=str(out / name), device=config.device)).top1

    started = time.perf_counter()
    before = top1(config.model, "eval-unpruned")
    pruned, report = prune_model(model, target_ratio=config.ratio, method=config.method,
                                 input_size=info.preprocess.input_size)
    with tempfile.TemporaryDirectory() as scratch:
        save_pruned_model(pruned, Path(scratch) / MODEL_FILE, info)
        right_after = top1(Path(scratch) / MODEL_FILE, "eval-pruned")
    tune_started = time.perf_counter()
    if config.fine_tune_epochs > 0:
        pruned = fine_tune(pruned, fine_tune_config(config, info), epochs=config.fine_tune_epochs,
                           class_names=info.class_names)
    tune_s = time.perf_counter() - tune_started
    path = out / MODEL_FILE
    save_pruned_model(pruned, path, info)
    after = top1(path, "eval-fine-tuned") if config.fine_tune_epochs > 0 else right_after
    report = dataclasses.replace(report, top1_before=before, top1_pruned=right_after,
                                 top1_fine_tuned=after if config.fine_tune_epochs > 0 else None)
    _write_report(out, config, report, tune_s=tune_s, wall_s=time.perf_counter() - started)
    return PruneResult(model_path=path, report=report, fine_tune_s=tune_s)


def _write_report(out: Path, config: PruneConfig, report: PruneReport, *, tune_s: float, wall_s: float) -> None:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    measured = (f"the {config.val_split} images held out of {config.data} (seed {config.seed})" if config.val_split
                else f"the test split of {config.data}")
    ratio = report.macs_after / report.macs_before
    final = report.top1_fine_tuned if report.top1_fine_tuned is not None else report.top1_pruned
    lines = [f"# Pruned: {config.model}", "",
             f"- method {config.method}, target {config.ratio:g} of the MACs; fine-tune: {config.fine_tune_epochs:g} "
             f"epochs of recipe `{config.recipe}`" + (f" at peak lr {config.lr:g}" if config.lr else "")
             + f" ({tune_s:.0f} s); {wall_s:.0f} s in all",
             f"- top-1 on {measured}, single centre view", f"- machine: {describe_machine()}", "",
             "| model | MACs | params | top-1 |", "|---|---:|---:|---:|",
             f"| unpruned | {report.macs_before / 1e6:.2f}M | {report.params_before:,} | {pct(report.top1_before)} |",
             f"| pruned, before fine-tune | {report.macs_after / 1e6:.2f}M ({ratio:.3f}) | {report.params_after:,} | "
             f"{pct(report.top1_pruned)} |"]
    if report.top1_fine_tuned is not None:
        lines.append(f"| pruned + fine-tune | {report.macs_after / 1e6:.2f}M | {report.params_after:,} | "
                     f"{pct(report.top1_fine_tuned)} |")
    lines += ["", f"Change: {100 * (final - report.top1_before):+.2f} points of top-1 at "
              f"{report.macs_before / report.macs_after:.2f}x fewer MACs. Fewer MACs are not proportionally faster: "
              f"measure the speed with `resnetkit export {out / MODEL_FILE} --images FOLDER --report torch,onnx` "
              "beside the unpruned model, or bench/bench_pruning.py.", ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps({"config": config.to_dict(), **dataclasses.asdict(report),
                                                 "fine_tune_s": round(tune_s, 1), "wall_time_s": round(wall_s, 1),
                                                 "machine": describe_machine()}, indent=2))
