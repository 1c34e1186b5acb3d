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
from ..device import describe_machine, resolve_amp, resolve_device
from ..evaluate.run import run_evaluation
from ..export.pruning import PruneReport, prune_model, save_pruned_model
from ..export.pruning_tp import require_torch_pruning
from ..files import prepare_output_dir, write_text_atomic
from ..models import ResNet, load_model
from ..models.widths import inner_chains
from .checkpoint import load_training_checkpoint
from .data import TrainData, build_train_data
from .distributed import DistInfo
from .loop import CHECKPOINT_NAME, Trainer
from .resume import check_resumable
from .run import MODEL_FILE, check_out_dir, check_same_classes

FINE_TUNE_DIR = "fine-tune"  # the fine-tune's training run, inside --out-dir
SETTINGS_FILE = "prune.json"  # the command's settings, which a --resume must repeat


@dataclass
class PruneResult:
    model_path: Path
    report: PruneReport
    fine_tune_s: float


def fine_tune_config(config: PruneConfig, info: ModelInfo) -> TrainConfig:
    """The recipe's settings on the model's own data split and preprocessing, every layer at one lr, no evaluation.

    The fine-tune is given in epochs (fractions allowed) and runs as a number of iterations, so the recipe's
    schedule must be set as fractions of the run's length to stretch over it; one set in its own epochs or
    iterations (the paper's step at 32k, Keras' at epoch 80) is refused rather than silently misplaced.
    """
    val_split, seed = info.held_out_split(config.val_split, config.seed)
    pre = info.preprocess
    overrides: dict[str, object] = dict(
        data=config.data, val_split=val_split, seed=seed, model=info.model.arch,
        image_size=pre.input_size, mean=tuple(pre.mean), std=tuple(pre.std), freeze_epochs=0, lr_mult=1.0,
        out_dir=str(Path(config.out_dir) / FINE_TUNE_DIR), eval_every=0, device=config.device, progress=config.progress,
        resume=config.resume)
    if config.lr:
        overrides["lr"] = config.lr
    if config.amp:
        overrides["amp"] = config.amp
    # The unpruned model teaches (named so the fine-tune's config records it), at the temperature --distill's help
    # states; without --distill no teacher, whatever the recipe says.
    if config.distill:
        overrides.update(teacher=config.model, distill_alpha=config.distill, distill_temperature=4.0)
    else:
        overrides.update(teacher="")
    train = load_train_config(config.recipe, **overrides)
    schedule = train.schedule
    fixed = ([f"schedule {schedule.name!r} (it needs a validation score every epoch)"] if schedule.name == "plateau"
             else [])
    if schedule.name == "step" and any(m > 1 for m in schedule.milestones):
        fixed.append(f"milestones {list(schedule.milestones)} (in the recipe's own epochs or iterations)")
    if schedule.warmup:
        fixed.append(f"warmup {schedule.warmup} (in the recipe's own epochs or iterations)")
    if fixed:
        raise ValueError(f"recipe {config.recipe}: {'; '.join(fixed)} cannot be stretched over a fine-tune of "
                         f"{config.fine_tune_epochs:g} epochs; use a recipe whose schedule is one-cycle, cosine or "
                         "step at fractions of the run (cifar10-fast, finetune), or a YAML file of your own")
    return train


def fine_tune_data(config: TrainConfig, info: ModelInfo, *, num_classes: int, recipe: str) -> TrainData:
    """The fine-tune's training data, refused unless its classes are the model's, in the model's order, and it
    gives at least one optimizer step's batches of ``recipe``'s batch size."""
    data = build_train_data(config, dist=DistInfo(), device=resolve_device(config.run.device))
    check_same_classes(info, data.class_names, num_classes=num_classes, model="the model", data=config.data.source,
                       fix="the model was trained on other classes or in another order; fine-tune it on the data it "
                           "was trained on")
    optim = config.optim
    if len(data.train) < optim.accumulate:  # (prune has no --batch-size: the recipe sets it)
        raise ValueError(f"the fine-tune's recipe {recipe} takes batches of {optim.batch_size} images"
                         + (f" (accumulate {optim.accumulate})" if optim.accumulate > 1 else "")
                         + f", more than the training split of {data.description} gives: give --recipe a YAML file "
                         "with a smaller batch_size, or more training images, or --fine-tune-epochs 0")
    return data


def fine_tune(model: nn.Module, config: TrainConfig, data: TrainData, *, epochs: float,
              teacher: nn.Module | None = None) -> nn.Module:
    """Train ``model`` for ``epochs`` of ``data``'s training split (fractions allowed), learning also from
    ``teacher``'s outputs when given; returns the trained weights (the EMA average when the recipe keeps one), on
    the CPU, in eval mode."""
    steps = max(1, round(epochs * len(data.train) / config.optim.accumulate))  # optimizer steps
    fit = Trainer(model, config.with_flat(iterations=steps), data.train, None, num_classes=data.num_classes,
                  device=resolve_device(config.run.device), teacher=teacher).fit()
    return fit.model.to("cpu", memory_format=torch.contiguous_format).eval()


def check_prune_out_dir(config: PruneConfig) -> None:
    """A new pruning never overwrites an earlier one; ``--resume`` needs a fine-tune that was stopped part-way."""
    out = Path(config.out_dir)
    checkpoint, finished = out / FINE_TUNE_DIR / CHECKPOINT_NAME, (out / "report.json").exists()
    if not config.resume:
        if checkpoint.exists() and not finished:
            raise ValueError(f"{out} holds a pruning stopped before it finished ({FINE_TUNE_DIR}/{CHECKPOINT_NAME}, "
                             "no report.json): pass --resume to continue it, or choose another --out-dir (a new one "
                             "would overwrite it)")
        check_out_dir(out, resume=False)
        return
    if finished:
        raise ValueError(f"{out} holds a finished pruning (report.json); nothing to resume: choose another --out-dir")
    if not checkpoint.exists():
        raise ValueError(f"--resume: {checkpoint} does not exist, so there is no fine-tune to continue; run the "
                         "command without --resume")
    if not config.fine_tune_epochs:
        raise ValueError("--resume continues a fine-tune; --fine-tune-epochs 0 would drop it: give the stopped run's "
                         "--fine-tune-epochs")


def pruned_by(config: PruneConfig, held_out: tuple[int, int]) -> dict[str, object]:
    """What fixes the pruned network, its fine-tune's length and the measured images: a resume must keep them all
    (paths compared as the files they name, the held-out split as resolved from the model file)."""
    def source(text: str) -> str:
        return str(Path(text).resolve()) if Path(text).exists() else text

    return {"model": source(config.model), "data": source(config.data), "ratio": config.ratio,
            "method": config.method, "fine_tune_epochs": config.fine_tune_epochs, "held_out": list(held_out)}


def check_same_pruning(config: PruneConfig, now: dict[str, object], tune_config: TrainConfig) -> None:
    """``--resume``: refused, before anything is measured, unless the stopped run was this pruning and fine-tune."""
    out = Path(config.out_dir)
    try:
        saved = json.loads((out / SETTINGS_FILE).read_text())["pruned_by"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--resume: {out / SETTINGS_FILE} is missing or unreadable ({type(e).__name__}: {e}), so the "
                         "stopped fine-tune's pruning is unknown; run without --resume into another --out-dir"
                         ) from None
    changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in now.items() if saved.get(k) != v]
    if changed:
        raise ValueError(f"--resume: {out} was pruned with other settings ({', '.join(changed)}); resume with the "
                         "same ones, or run without --resume into another --out-dir")
    checkpoint = out / FINE_TUNE_DIR / CHECKPOINT_NAME
    check_resumable(tune_config, load_training_checkpoint(checkpoint, mmap=True)["config"], path=checkpoint)


def run_pruning(config: PruneConfig) -> PruneResult:
    """What ``resnetkit prune`` does: prune, fine-tune, save, and write report.md/report.json to ``out_dir``.

    Everything that can be refused is checked before the first evaluation: the model, the recipe, the data's
    classes and the pruning library."""
    out = Path(config.out_dir)
    check_prune_out_dir(config)
    model, info = load_model(config.model)
    if not isinstance(model, ResNet):
        raise ValueError(f"{config.model}: pruning works on resnetkit ResNets; this file holds a "
                         f"{type(model).__name__}")
    try:
        inner_chains(model)  # a block it cannot prune (Keras', ResNeXt's grouped) is said before any evaluation
    except TypeError as error:
        raise ValueError(f"{config.model}: {error}") from None
    if config.method == "torch-pruning":
        require_torch_pruning()
    val_split, seed = info.held_out_split(config.val_split, config.seed)
    settings = pruned_by(config, (val_split, seed))
    tune_config = tune_data = None
    if config.fine_tune_epochs > 0:
        tune_config = fine_tune_config(config, info)
        if config.resume:  # (check_prune_out_dir refused a resume without a fine-tune)
            check_same_pruning(config, settings, tune_config)
        tune_data = fine_tune_data(tune_config, info, num_classes=model.num_classes, recipe=config.recipe)
    prepare_output_dir(out, flag="--out-dir")
    if not config.resume:
        write_text_atomic(out / SETTINGS_FILE,
                          json.dumps({"pruned_by": settings, "config": config.to_dict()}, indent=2))

    def top1(path: str | Path, name: str) -> float:
        # val_split is the recorded one unless --val-split was given: the images are chosen, no warning is due.
        return run_evaluation(EvalConfig(model=str(path), data=config.data, val_split=val_split, seed=seed,
                                         out_dir=str(out / name), device=config.device),
                              warn_if_training_images=False).top1

    started = time.perf_counter()
    before = top1(config.model, "eval-unpruned")
    pruned, report = prune_model(model, target_ratio=config.ratio, method=config.method,
                                 input_size=info.preprocess.input_size)
    with tempfile.TemporaryDirectory() as scratch:
        save_pruned_model(pruned, Path(scratch) / MODEL_FILE, info)
        right_after = top1(Path(scratch) / MODEL_FILE, "eval-pruned")
    tune_started = time.perf_counter()
    if tune_config is not None and tune_data is not None:
        pruned = fine_tune(pruned, tune_config, tune_data, epochs=config.fine_tune_epochs,
                           teacher=model if config.distill else None)
    tune_s = time.perf_counter() - tune_started
    path = out / MODEL_FILE
    save_pruned_model(pruned, path, info)
    after = top1(path, "eval-fine-tuned") if tune_config is not None else None
    report = dataclasses.replace(report, top1_before=before, top1_pruned=right_after, top1_fine_tuned=after)
    precision = resolve_amp(tune_config.run.amp, resolve_device(tune_config.run.device)) if tune_config else "-"
    measured = json.loads((out / "eval-unpruned" / "report.json").read_text())["config"]["split"]  # eval's words
    _write_report(out, config, report, measured=measured, tune_s=tune_s, amp=precision,
                  wall_s=time.perf_counter() - started)
    return PruneResult(model_path=path, report=report, fine_tune_s=tune_s)


def _write_report(out: Path, config: PruneConfig, report: PruneReport, *, measured: str, tune_s: float,
                  amp: str, wall_s: float) -> None:
    """``measured``: the images the evaluations measured, in ``resnetkit eval``'s words."""
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    ratio = report.macs_after / report.macs_before
    machine = describe_machine(resolve_device(config.device))
    final = report.top1_fine_tuned if report.top1_fine_tuned is not None else report.top1_pruned
    lines = [f"# Pruned: {config.model}", "",
             f"- method {config.method}, target {config.ratio:g} of the MACs; fine-tune: {config.fine_tune_epochs:g} "
             f"epochs of recipe `{config.recipe}`" + (f" at peak lr {config.lr:g}" if config.lr else "")
             + (f", distilled from the unpruned model (alpha {config.distill:g})" if config.distill else "")
             + f", precision {amp} ({tune_s:.0f} s); {wall_s:.0f} s in all",
             f"- top-1 on {config.data} ({measured}), single centre view", f"- machine: {machine}", "",
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
    write_text_atomic(out / "report.md", "\n".join(lines))
    write_text_atomic(out / "report.json", json.dumps({"config": config.to_dict(), **dataclasses.asdict(report),
                                                       "fine_tune_amp": amp, "fine_tune_s": round(tune_s, 1),
                                                       "wall_time_s": round(wall_s, 1), "machine": machine}, indent=2))
