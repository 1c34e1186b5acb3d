"""One training run from a ``TrainConfig``: data, model, trainer, model file, report.

This is the function ``resnetkit train`` and ``resnetkit demo`` call; everything it does is visible
here in order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelInfo, Preprocess, TrainConfig
from ..device import describe_machine, resolve_device
from ..evaluate.report import write_report
from ..files import prepare_output_dir, remove_stale_temporaries, write_text_atomic
from ..data.classes import read_class_names
from ..models import build_model, default_preprocess, load_model, load_state_dict_file, load_weights, save_model
from ..models.hf_hub import is_hf_hub_name
from ..models.sources import is_keras_file, open_model
from ..models.state_dict import classifier_classes
from ..models.weights import has_resnetkit_metadata, read_model_info, resolve_weight_path
from .checkpoint import load_training_checkpoint
from .data import TrainData, build_train_data, resolve_augment
from .distributed import DistInfo
from .loop import CHECKPOINT_NAME, HEAD_PREFIXES, FitResult, Trainer
from .resume import check_not_shorter, check_resumable

log = logging.getLogger(__name__)
MODEL_FILE = "model.safetensors"
# What a run leaves that a new run in the same folder would overwrite. (config.json, the metrics logs and
# tensorboard/ are written from the first step on, so a run killed before its first checkpoint can simply start again.)
RESULT_FILES = (CHECKPOINT_NAME, MODEL_FILE, "report.json", "report.md")


def check_out_dir(out_dir: Path, *, resume: bool, also: tuple[str, ...] = ()) -> None:
    """A run never overwrites an earlier run's results (``RESULT_FILES`` and ``also``): a folder holding them is
    refused unless the run resumes from its checkpoint."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out-dir {out_dir} is a file, not a folder; choose another --out-dir")
    found = [name for name in (*RESULT_FILES, *also) if (out_dir / name).exists()]
    if not found or (resume and CHECKPOINT_NAME in found):
        return
    if CHECKPOINT_NAME in found:
        raise ValueError(f"{out_dir} already holds a run ({', '.join(found)}); pass --resume to continue it, or "
                         "choose another --out-dir: a new run would overwrite it")
    why = f"there is no {CHECKPOINT_NAME} to resume from" if resume else "a new run would overwrite them"
    stopped = not resume and any(name in also for name in found)  # a fine-tune stopped between its stages
    raise ValueError(f"{out_dir} already holds a run's results ({', '.join(found)}); {why}: "
                     f"{'pass --resume to continue it, ' if stopped else ''}choose another --out-dir, "
                     "or move them away to use this folder again")


def check_checkpoint_exists(out_dir: Path) -> None:
    """``--resume`` names a run to continue: a folder without its checkpoint (a mistyped ``--out-dir``) is refused
    rather than silently trained from the start, as torchvision's and timm's ``--resume`` refuse a missing file."""
    if not (out_dir / CHECKPOINT_NAME).exists():  # (a folder in its place is named when it is read)
        raise ValueError(f"--resume: {out_dir / CHECKPOINT_NAME} does not exist, so there is no run to continue; "
                         "check --out-dir, or run without --resume to start a new run")


def check_outside_data(out_dir: Path, source: str) -> None:
    """Refuse an output folder inside the image folder it trains on: its plots would become training images."""
    data = Path(source).expanduser()
    if data.is_dir() and out_dir.resolve().is_relative_to(data.resolve()):
        raise ValueError(f"--out-dir {out_dir} is inside the data folder {source}: the run's images (curves.png, "
                         "confusion.png) would become training images of the next run; choose a folder outside it")


def unused_out_dir(out_dir: Path) -> Path:
    """``out_dir``, or when it holds a run's results the first of ``out_dir-2``, ``out_dir-3`` ... that does not:
    where a command with a default folder (``resnetkit demo``) writes when it is run again."""
    candidate, n = Path(out_dir), 1
    while any((candidate / name).exists() for name in RESULT_FILES):
        n += 1
        candidate = Path(out_dir).with_name(f"{Path(out_dir).name}-{n}")
    return candidate


@dataclass
class TrainResult:
    fit: FitResult
    model_path: Path | None
    report_paths: dict[str, Path]
    top1: float | None
    wall_time_s: float


def check_same_run(config: TrainConfig) -> None:
    """Resuming: refuse (``ValueError``) settings other than those of the run whose checkpoint is in the output
    folder, only where it runs and how long may change. Nothing is read but the checkpoint's config."""
    checkpoint = Path(config.run.out_dir) / CHECKPOINT_NAME
    if config.run.resume and checkpoint.exists():
        state = load_training_checkpoint(checkpoint, mmap=True)  # tensors not read
        check_resumable(config.with_flat(augment=resolve_augment(config)), state["config"], path=checkpoint)
        check_not_shorter(config, epochs_done=state["epoch"] + 1, steps_done=state["step"], path=checkpoint)


def build_model_for(config: TrainConfig, num_classes: int, class_names: list[str] | None = None) -> nn.Module:
    """The network a run trains: from scratch, or from its start weights (``config.finetune.pretrained``) with a new
    classifier unless the start model's is for these classes (the same number and, where both are named, the same
    ``class_names`` in the same order: training it further, as torchvision's ``--weights`` does)."""
    model = build_model(dataclasses.replace(config.model, num_classes=num_classes))
    if config.finetune.pretrained:
        path = resolve_weight_path(config.finetune.pretrained)
        state = load_state_dict_file(path)
        file_classes = classifier_classes(state, source=config.finetune.pretrained,  # 0: a file without a head
                                          features=model.head_features)
        # Transfer learning: load the file with its own head size, then start a fresh classifier for ours.
        model.reset_classifier(file_classes)
        load_weights(model, state, source=config.finetune.pretrained)
        named = read_model_info(path).class_names if class_names and has_resnetkit_metadata(path) else []
        if file_classes != num_classes or (named and named != list(class_names or [])):
            model.reset_classifier(num_classes)  # CIFAR-10's head on the digits 0-9 would start from wrong answers
    if config.finetune.freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(HEAD_PREFIXES)  # the head: classifier and its hidden layer
    return model


def class_names_for(path: str, data_names: list[str]) -> list[str]:
    """Names from a class-name file, one per class of the data in label order (sorted folder names)."""
    names = read_class_names(path)
    if len(names) != len(data_names):
        raise ValueError(f"{path}: {len(names)} class names, but the data has {len(data_names)} classes "
                         f"({', '.join(data_names[:5])}{' ...' if len(data_names) > 5 else ''}); give one name "
                         "per class, in the order of the sorted folder names")
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise ValueError(f"{path}: class name(s) {repeated[:5]} given twice; two classes need two names")
    folder_index = {name: i for i, name in enumerate(data_names)}  # ImageNet-21k: 21,843 names, so no list.index
    moved = [(name, folder_index[name], i) for i, name in enumerate(names)
             if name in folder_index and folder_index[name] != i]
    if moved:  # the folders' own names in another order would swap the labels, not rename them
        name, folder_at, given_at = moved[0]
        raise ValueError(f"{path}: names the data's classes in another order ({name!r} is class {folder_at} of the "
                         f"data, line {given_at + 1} of the file); labels follow the sorted folder names "
                         f"({', '.join(data_names[:5])}{' ...' if len(data_names) > 5 else ''}): list the names in "
                         "that order, or leave --classes out to use the folder names")
    return names


def check_same_classes(info: ModelInfo, class_names: list[str], *, num_classes: int, model: str, data: str,
                       fix: str) -> None:
    """A model whose outputs a run uses as they are (a teacher's targets, a pruned network's fine-tune) must predict
    the data's classes in the data's order; ``fix`` says what to do otherwise."""
    names = info.class_names or [str(i) for i in range(num_classes)]
    if len(names) != len(class_names) or (info.class_names and list(info.class_names) != list(class_names)):
        raise ValueError(f"{model} predicts the classes {names[:10]}, {data} has {class_names[:10]}: {fix}")


def check_teacher(info: ModelInfo, source: str, class_names: list[str], preprocess: Preprocess, *,
                  num_classes: int) -> None:
    """A teacher must predict the student's classes, in the same order (its outputs are the student's targets), and
    expect the inputs the student gets (it sees the student's normalised batches)."""
    check_same_classes(info, class_names, num_classes=num_classes, model=f"teacher {source}", data="the data",
                       fix="a teacher must have been trained on the same classes, in the same order (give the data's "
                           "class names in the teacher's order with --classes FILE when only the names differ)")
    theirs = info.preprocess
    if theirs.input_size != preprocess.input_size or any(
            abs(a - b) > 1e-4 for a, b in zip((*theirs.mean, *theirs.std), (*preprocess.mean, *preprocess.std))):
        raise ValueError(f"teacher {source} expects {theirs.input_size}-pixel inputs normalised with mean "
                         f"{list(theirs.mean)} std {list(theirs.std)}; this run feeds {preprocess.input_size}-pixel "
                         f"inputs with mean {list(preprocess.mean)} std {list(preprocess.std)}: give the teacher's "
                         "--mean/--std (and --image-size), or a teacher trained on this data")


FLIP_AUGMENTS = ("pad-crop-flip", "flip", "scale", "rrc")  # the training augmentations that mirror images


def start_run(config: TrainConfig) -> TrainConfig:
    """What every run does first: seed the global RNG with the run's seed (the network's initial weights), make
    ``augment: auto`` the policy it stands for, and feed a start model (``--pretrained``) the input statistics it was
    trained with unless ``--mean``/``--std`` are given, as a fine-tune does (fastai and timm keep them too); the run
    records both."""
    torch.manual_seed(config.run.seed)
    for setting in config.unused_settings():
        warnings.warn(f"{setting}; the setting has no effect in this run", stacklevel=2)
    if config.finetune.pretrained and not (config.data.mean and config.data.std):
        mean, std = _start_statistics(config)
        config = config.with_flat(mean=config.data.mean or mean, std=config.data.std or std)
    return config.with_flat(augment=resolve_augment(config))


def _start_statistics(config: TrainConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std a run from a start model normalises with: those the run being resumed recorded (a run begun
    before start models kept theirs recorded the data's, (), and continues so), else the start model's, read from
    its file's metadata or its architecture's defaults without loading the weights."""
    checkpoint = Path(config.run.out_dir) / CHECKPOINT_NAME
    if config.run.resume and checkpoint.is_file():
        recorded = TrainConfig.from_dict(load_training_checkpoint(checkpoint, mmap=True)["config"]).data
        return tuple(recorded.mean), tuple(recorded.std)
    kind, path = _start_kind(config.finetune.pretrained)
    preprocess = (read_model_info(path).preprocess if kind == "resnetkit"
                  else default_preprocess(config.model.arch) if kind == "state_dict"  # a torchvision / timm one
                  else open_start(config)[1].preprocess)  # a hub repository's or Keras file's own config
    return tuple(preprocess.mean), tuple(preprocess.std)


def _start_kind(start: str) -> tuple[str, Path | None]:
    """What a start model is, for the two readers below: ``hub`` (an ``hf-hub:`` name), ``resnetkit`` or ``keras``
    (a self-describing file) or ``state_dict`` (a torchvision / timm one, of the run's architecture), and its path."""
    if is_hf_hub_name(start):
        return "hub", None
    path = resolve_weight_path(start)
    if is_keras_file(path):
        return "keras", path
    return ("resnetkit" if path.suffix == ".safetensors" and has_resnetkit_metadata(path) else "state_dict"), path


def open_start(config: TrainConfig) -> tuple[nn.Module, ModelInfo]:
    """The start model ``config.finetune.pretrained`` names and the ``ModelInfo`` it is used with: a resnetkit or Keras
    file, a catalog or ``hf-hub:`` name, or a torchvision / timm state dict of the architecture ``config.model``."""
    kind, path = _start_kind(config.finetune.pretrained)
    if kind == "hub":  # timm's repository names its architecture and preprocessing
        return open_model(config.finetune.pretrained)
    if kind != "state_dict":
        return open_model(str(path))
    mc = config.model
    return open_model(mc.arch, weights=str(path), variant=mc.variant, shortcut=mc.shortcut, width=mc.width)


def training_data(config: TrainConfig, *, dist: DistInfo, device: torch.device) -> TrainData:
    """A run's data as its training loop gets it, with the class names it is given (``--classes``)."""
    data = build_train_data(config, dist=dist, device=device)
    if config.data.classes:
        data.class_names = class_names_for(config.data.classes, data.class_names)
    return data


def training_parts(config: TrainConfig, *, dist: DistInfo, device: torch.device
                   ) -> tuple[TrainData, nn.Module, nn.Module | None]:
    """What a run trains with: its data (with the class names it is given), its network (from scratch or its start
    weights) and its distillation teacher (checked against the data), or None."""
    teacher = load_model(config.optim.teacher) if config.optim.teacher else None  # a bad file fails before the data
    data = training_data(config, dist=dist, device=device)
    if teacher is not None:
        check_teacher(teacher[1], config.optim.teacher, data.class_names, data.preprocess,
                      num_classes=teacher[0].num_classes)
    return (data, build_model_for(config, data.num_classes, data.class_names),
            teacher[0] if teacher is not None else None)


def run_training(config: TrainConfig, *, report_extra: dict[str, Any] | None = None) -> TrainResult:
    """Train as ``config`` says; ``report_extra`` adds lines to the report (the fine-tuning choices)."""
    started = time.perf_counter()
    device = resolve_device(config.run.device)
    dist = DistInfo.from_env(device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    out_dir = Path(config.run.out_dir)
    check_out_dir(out_dir, resume=config.run.resume)  # before anything is read (a start model downloaded)
    check_outside_data(out_dir, config.data.source)
    config = start_run(config)
    check_same_run(config)  # before config.json is rewritten with its settings (the Trainer checks again)
    if dist.is_main:
        prepare_output_dir(out_dir, flag="--out-dir")
        for stale in remove_stale_temporaries(out_dir):  # a run killed while writing its checkpoint left them
            log.info("removed %s, left by a run killed while writing it", stale)
    data, model, teacher = training_parts(config, dist=dist, device=device)
    trainer = Trainer(model, config, data.train, data.val, num_classes=data.num_classes, device=device, dist=dist,
                      class_names=data.class_names, teacher=teacher)
    if dist.is_main:  # after the data, model and optimizer are found usable: a refused run leaves no record of itself
        write_text_atomic(out_dir / "config.json", json.dumps(config.to_dict(), indent=2))
    try:
        fit = trainer.fit()
    finally:
        dist.shutdown()

    model_path, report_paths, top1 = None, {}, None
    if dist.is_main:
        # The machine that finished the run (a resumed run may have started elsewhere: its history's epoch times).
        extra = {"evaluated_on": data.val_description, "machine": describe_machine(device),
                 "precision": trainer.precision, **(report_extra or {})}
        if fit.final_metrics is not None and config.augment.policy in FLIP_AUGMENTS:
            # Trained on mirrored images too, so the mirror is a fair second view: the usual CIFAR figure.
            extra["top1_with_flip_tta"] = round(trainer.evaluate(flip=True).top1, 4)
        final = fit.model.to("cpu").to(memory_format=torch.contiguous_format)
        # The held-out split travels with the weights, so pruning or evaluating later measures the same images.
        info = ModelInfo(model=final.config, class_names=data.class_names, preprocess=data.preprocess,
                         extra={"trained_on": data.description, "epochs": len(fit.history),
                                "val_split": config.data.val_split, "split_seed": config.data.seed})
        model_path = save_model(final, out_dir / MODEL_FILE, info=info)
        if fit.final_metrics is not None:
            top1 = fit.final_metrics.top1
            report_paths = write_report(out_dir, title=f"{config.model.arch} on {data.description}",
                                        metrics=fit.final_metrics, class_names=data.class_names,
                                        config=config.to_dict(), history=fit.history,
                                        extra={**extra, "wall_time_s": round(time.perf_counter() - started, 1)})
    return TrainResult(fit=fit, model_path=model_path, report_paths=report_paths, top1=top1,
                       wall_time_s=time.perf_counter() - started)
