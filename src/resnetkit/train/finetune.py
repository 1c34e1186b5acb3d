"""Fine-tuning a pretrained network on new classes: what ``resnetkit finetune MODEL DATA`` runs.

Two stages, as fastai's ``fine_tune``, each an ordinary ``run_training`` run:

1. ``freeze_epochs`` epochs train only the new head; the body and its BatchNorm statistics stay frozen,
   so the random head cannot wreck the pretrained features with large early gradients.
2. ``epochs`` epochs train everything with discriminative learning rates (``lr_mult``: the first layer
   group at ``lr / lr_mult``, rising to ``lr`` at the head), under the recipe's schedule (one-cycle).

``freeze_backbone`` is the linear probe: only the head stage, with frozen BatchNorm, for ``epochs``.
The start model may be any file ``open_model`` reads; it is converted once into ``start.safetensors``
so both stages load the same tensors, and its normalisation (mean/std) is kept for training and stored
in the fine-tuned model file.
"""

from __future__ import annotations

import json
import os
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..files import file_sha256, is_url, prepare_output_dir, write_text_atomic
from ..models import save_model
from .run import CHECKPOINT_NAME, MODEL_FILE, TrainResult, check_out_dir, open_start, run_training

log = logging.getLogger(__name__)
START_FILE = "start.safetensors"  # the start model, converted once
ORIGIN_FILE = "start.json"  # where it came from
HEAD_STAGE_DIR = "stage1-head"


@dataclass
class FinetuneResult:
    final: TrainResult  # the last stage: its model file and report are the run's
    head_stage: TrainResult | None
    wall_time_s: float

    @property
    def model_path(self) -> Path | None:
        return self.final.model_path

    @property
    def top1(self) -> float | None:
        return self.final.top1

    @property
    def report_paths(self) -> dict[str, Path]:
        return self.final.report_paths


def prepare_start(config: TrainConfig, out_dir: Path) -> TrainConfig:
    """Open the start model (``config.finetune.pretrained``, with ``config.model.arch`` naming the architecture of a
    bare state dict), write it as ``start.safetensors`` and return the config that trains from it."""
    if not config.finetune.pretrained:
        raise ValueError("fine-tuning needs a start model: resnetkit finetune MODEL DATA (a resnetkit or Keras "
                         "file, or ARCH --weights FILE), or --pretrained FILE")
    model, info = open_start(config)
    start = save_model(model, out_dir / START_FILE, info=info)
    mc = info.model
    return config.with_flat(
        pretrained=str(start), model=mc.arch, variant=mc.variant, shortcut=mc.shortcut, width=mc.width,
        # The pretrained weights expect their own input statistics: keep them unless the user chose others.
        mean=config.data.mean or tuple(info.preprocess.mean), std=config.data.std or tuple(info.preprocess.std))


def describe_choices(config: TrainConfig) -> str:
    """One line for the report: what was frozen, for how long, at which learning rates."""
    tune, lr = config.finetune, config.optim.lr
    if tune.freeze_backbone:
        return (f"linear probe: only the new head trained for {config.schedule.epochs} epochs at lr {lr:g} "
                "(body and BatchNorm statistics frozen)")
    head = (f"head only for {tune.freeze_epochs} epoch(s) at lr {lr:g} (body and BatchNorm frozen), then "
            if tune.freeze_epochs > 0 else "")
    lrs = (f"discriminative lrs from {lr / tune.lr_mult:g} (stem, first stage) to {lr:g} (head)"
           if tune.lr_mult != 1 else f"one lr {lr:g}")
    bn = ", BatchNorm statistics frozen" if tune.freeze_bn else ""
    return f"{head}everything for {config.schedule.epochs} epochs with {lrs}, schedule {config.schedule.name}{bn}"


def check_same_start(out_dir: Path, start: str) -> None:
    """``--resume`` continues a fine-tune of the same start model: a folder holding no fine-tune (a mistyped
    ``--out-dir``, a training run's) or one begun from another model is refused before any stage trains."""
    begun = [name for name in (CHECKPOINT_NAME, START_FILE, HEAD_STAGE_DIR) if (out_dir / name).exists()]
    if not begun:
        raise ValueError(f"--resume: {out_dir} holds no fine-tune to continue (no {CHECKPOINT_NAME}, {START_FILE} or "
                         f"{HEAD_STAGE_DIR}/); check --out-dir, or run without --resume to start one")
    origin = out_dir / ORIGIN_FILE
    if not origin.exists() and not (out_dir / START_FILE).exists():
        raise ValueError(f"--resume: {out_dir} holds a training run, not a fine-tune ({ORIGIN_FILE} and {START_FILE} "
                         "are missing); continue it with `resnetkit train --resume`, or give another --out-dir")
    recorded, digest = _recorded_origin(origin, default="")
    # The same model spelled another way (another working folder, another machine): the same file's digest.
    same = recorded == start or (digest is not None and _local_digest(start) == digest)
    if recorded and not same:
        raise ValueError(f"--resume: {out_dir} is a fine-tune of {recorded}, not of {start}; resume it with that "
                         "model, or give another --out-dir for a fine-tune of this one")


def _local_digest(start: str) -> str | None:
    """The SHA-256 of a start model given as a file on this machine; None for a name, a URL or a missing file."""
    path = Path(start)
    return file_sha256(path) if not is_url(start) and path.is_file() else None


def _recorded_origin(path: Path, *, default: str) -> tuple[str, str | None]:
    """Where a resumed fine-tune's start model came from (for its report) and that file's SHA-256 when it was a file,
    as ``start.json`` records them; a missing or damaged record costs that line of the report, not the run."""
    try:
        record = json.loads(path.read_text())
        origin, digest = record["pretrained"], record.get("sha256")
        if isinstance(origin, str):
            return origin, digest if isinstance(digest, str) else None
    except FileNotFoundError:
        return default, None
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        pass
    log.warning("%s is damaged: the report names %s as the start model instead", path, default)
    return default, None


def head_only(config: TrainConfig) -> TrainConfig:
    """The stage that trains the new head alone (a linear probe, or a fine-tune's first stage): body and
    BatchNorm statistics frozen, one lr."""
    return config.with_flat(freeze_backbone=True, freeze_bn=True, lr_mult=1.0)


def first_stage(config: TrainConfig, scratch: Path) -> tuple[TrainConfig, str]:
    """What a run starts with, as ``resnetkit train`` / ``finetune`` would run it, and its name: the training
    itself, or for a start model (converted into ``scratch``, its mean/std kept) the head-only stage when there
    is one, else the whole fine-tune."""
    if not config.finetune.pretrained:
        return config, "training"
    config = prepare_start(config, scratch)
    if config.finetune.freeze_backbone or config.finetune.freeze_epochs > 0:
        return head_only(config), "the head-only stage (body and BatchNorm frozen)"
    return config, "the fine-tune of every layer"


def _remove_unless_resumable(out_dir: Path, new_files: list[Path]) -> None:
    """After a refused or failed fine-tune: remove what this run wrote (its start model, origin, head-stage folder)
    when no stage got as far as a checkpoint, so that the corrected command runs in the same --out-dir; a run with a
    checkpoint keeps everything for --resume."""
    head_dir = out_dir / HEAD_STAGE_DIR
    if any((folder / name).exists() for folder in (out_dir, head_dir) for name in (CHECKPOINT_NAME, MODEL_FILE)):
        return
    for path in new_files:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def run_finetune(config: TrainConfig) -> FinetuneResult:
    """Fine-tune ``config.finetune.pretrained`` on ``config.data.source``; the run's files are in
    ``config.run.out_dir``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # its stages would each join and end the process group
        raise ValueError("a fine-tune with a head-only stage (or a linear probe) runs in one process: start it with "
                         "resnetkit, not torchrun; under torchrun, fine-tune in one stage: `resnetkit train "
                         "--pretrained MODEL --freeze-epochs 0`")
    started = time.perf_counter()
    out_dir = Path(config.run.out_dir)
    if config.run.resume:
        check_same_start(out_dir, config.finetune.pretrained)
    # Before start.safetensors is written: a fine-tune stopped between its stages has no checkpoint in out_dir yet,
    # only its start model and head stage, which a new run would overwrite (a resumed one continues them).
    check_out_dir(out_dir, resume=config.run.resume,
                  also=() if config.run.resume else (START_FILE, ORIGIN_FILE, HEAD_STAGE_DIR))
    prepare_output_dir(out_dir, flag="--out-dir")
    if config.finetune.freeze_epochs < 0:
        raise ValueError(f"freeze_epochs={config.finetune.freeze_epochs} must be >= 0 (0 skips the head-only stage)")
    start_file, origin_file = out_dir / START_FILE, out_dir / ORIGIN_FILE
    new_files = [path for path in (start_file, origin_file, out_dir / HEAD_STAGE_DIR) if not path.exists()]
    try:
        if config.run.resume and start_file.exists():  # converted by the run being resumed: the same tensors
            origin = _recorded_origin(origin_file, default=str(start_file))[0]
            config = prepare_start(config.with_flat(pretrained=str(start_file)), out_dir)
        else:
            origin = config.finetune.pretrained
            config = prepare_start(config, out_dir)
            record = {"pretrained": origin, "sha256": _local_digest(origin)}  # the digest: for --resume elsewhere
            write_text_atomic(origin_file, json.dumps(record, indent=2))
        report: dict[str, Any] = {"fine_tuning": describe_choices(config), "started_from": origin}

        head_stage = None
        if config.finetune.freeze_backbone:
            final_config = head_only(config)
        else:
            if config.finetune.freeze_epochs > 0:
                head_dir = out_dir / HEAD_STAGE_DIR
                head_config = head_only(config).with_flat(epochs=config.finetune.freeze_epochs, iterations=0,
                                                          out_dir=str(head_dir))
                if config.run.resume and (head_dir / MODEL_FILE).exists():
                    log.info("head-only stage already finished in %s; continuing with the full fine-tune", head_dir)
                else:
                    head_stage = run_training(head_config)
                    if head_stage.top1 is not None:
                        report["top1_after_head_only_stage"] = round(head_stage.top1, 4)
                config = config.with_flat(pretrained=str(head_dir / MODEL_FILE))
            final_config = config
        final = run_training(final_config, report_extra=report)
    except Exception:
        _remove_unless_resumable(out_dir, new_files)
        raise
    return FinetuneResult(final=final, head_stage=head_stage, wall_time_s=time.perf_counter() - started)

