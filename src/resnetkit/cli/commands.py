"""What each ``resnetkit`` command does with its parsed arguments: build its config, call one library function,
print the result. Library imports stay inside each command, so ``resnetkit predict`` never loads training code."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any


def _cmd_models(args: argparse.Namespace) -> int:
    from ..models.catalog import models_table, pretrained_table

    print(pretrained_table(args.pattern) if args.pretrained else models_table(args.pattern, input_size=args.input_size))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from ..models import create_model, default_preprocess, list_models, summarize, summary_table
    from ..models.pretrained import close_model_names, get_weights

    import torch

    entry = None if args.name in list_models() else get_weights(args.name)  # resnet20_cifar10: its architecture
    if entry is None and args.name not in list_models():  # the suggestions cover pretrained names too
        raise ValueError(f"unknown model {args.name!r}: see `resnetkit models` (and `resnetkit models --pretrained`)"
                         f"{close_model_names(args.name)}")
    arch = entry.arch if entry is not None else args.name
    size = args.input_size or (entry.preprocess if entry and entry.preprocess else default_preprocess(arch)).input_size
    with torch.device("meta"):  # shapes and counts only: no memory for weights or activations, at any input size
        model = create_model(arch, variant=args.variant, shortcut=args.shortcut)
    print(f"{args.name} (variant {model.config.variant}, shortcut {model.config.shortcut}) at {size}x{size}")
    print(summary_table(summarize(model, input_size=size)))
    return 0


def _config_from_args(cls: type, args: argparse.Namespace, **settings: Any) -> Any:
    """A config dataclass filled from the parsed arguments named as its flags (and ``settings``, not flags)."""
    from ..config import config_flags

    return cls(**{f.field: f.field_value(getattr(args, name)) for name, f in config_flags(cls).items()}, **settings)


def _overrides(args: argparse.Namespace, *, exclude: tuple[str, ...]) -> dict[str, object]:
    return {k: v for k, v in vars(args).items() if k not in ("command", "func", "debug", *exclude)}


def _print_result(result) -> None:
    if result.model_path is None:
        return
    top1 = f"{100 * result.top1:.2f}%" if result.top1 is not None else \
        "n/a (no validation images: --val-split N holds N training images out, or give a val/ or test/ folder)"
    print(f"top-1 {top1} in {result.wall_time_s:.0f} s; model: {result.model_path}")
    for name, path in result.report_paths.items():
        print(f"{name}: {path}")


def _cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_train_config

    config = load_train_config(args.recipe, **_overrides(args, exclude=("recipe",)))
    return _train(config)


def _train(config: Any, *, finetune: bool = False) -> int:
    """Run training (``finetune``: ``run_finetune``, also for a one-stage linear probe) and print where its results
    are; a diverging run ends with its message, not a traceback."""
    from ..train.finetune import run_finetune
    from ..train.loop import NonFiniteLossError
    from ..train.run import check_checkpoint_exists, run_training

    # A recipe with a head-only stage (finetune.yaml) and a start model is a two-stage fine-tune, whichever
    # command runs it; without a start model there is no head to train alone: an ordinary run.
    two_stage = config.finetune.freeze_epochs > 0 and bool(config.finetune.pretrained)
    if config.run.resume and not (finetune or two_stage):  # (a fine-tune checks its own folder)
        check_checkpoint_exists(Path(config.run.out_dir))
    try:
        _print_result(run_finetune(config) if finetune or two_stage else run_training(config))
    except NonFiniteLossError as e:  # the run stopped itself, its checkpoint (if any) untouched
        print(f"resnetkit {'finetune' if finetune else 'train'}: stopped: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..config import LRFindOptions, config_flags, load_train_config
    from ..train.lr_find import find_lr, write_lr_find

    options = _config_from_args(LRFindOptions, args)
    config = load_train_config(args.recipe, **_overrides(args, exclude=("recipe", *config_flags(LRFindOptions))))
    result = find_lr(config, options)
    paths = write_lr_find(result, Path(config.run.out_dir),
                          title=f"{config.model.arch} on {Path(config.data.source).name or config.data.source}")
    ended = "the loss blew up" if result.diverged else f"all {options.steps} steps ran"
    print(f"{result.stage}: {len(result.lrs)} steps from lr {options.start_lr:g} to {result.lrs[-1]:.3g} ({ended})")
    suggestions = result.suggestions()
    if not suggestions:
        print("no suggestion: fewer than 3 of the steps read (all but the first tenth and the last 5) had a finite "
              "loss; lower --start-lr, or give more --steps")
    for name, lr in suggestions.items():
        print(f"{name:>8}: lr {lr:.3g}")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _cmd_show_batch(args: argparse.Namespace) -> int:
    from ..config import ShowBatchOptions, config_flags, load_train_config
    from ..train.show_batch import show_batch

    options = _config_from_args(ShowBatchOptions, args)
    config = load_train_config(args.recipe, **_overrides(args, exclude=("recipe", *config_flags(ShowBatchOptions))))
    print(f"figure: {show_batch(config, options)}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..config import load_train_config
    from ..files import is_url
    from ..models import list_models
    from ..models.pretrained import get_weights
    from ..models.sources import check_self_describing

    overrides = _overrides(args, exclude=("recipe", "start", "data_source", "weights"))
    if args.start in list_models():  # ARCH --weights FILE (torchvision, timm, Keras)
        if not args.weights:
            raise ValueError(f"{args.start} is an architecture name: give its weights with --weights FILE_OR_URL")
        if args.weights.startswith("hf-hub:"):  # the repository names its architecture: it must be this one
            from ..models.hf_hub import check_hub_architecture

            check_hub_architecture(args.start, args.weights)
        overrides.update(model=args.start, pretrained=args.weights)
    elif args.weights:
        raise ValueError(f"{args.start}: --weights goes with an architecture name; a model file holds its weights")
    elif not is_url(args.start) and not Path(args.start).exists() and (entry := get_weights(args.start)):
        overrides.update(model=entry.arch, pretrained=args.start)  # a pretrained name (resnet20_cifar10)
    else:
        if not is_url(args.start) and not args.start.startswith("hf-hub:"):
            check_self_describing(Path(args.start), shown=args.start)  # a .pth needs ARCH --weights FILE
        overrides["pretrained"] = args.start
    config = load_train_config(args.recipe, data=args.data_source, **overrides)
    if config.finetune.freeze_backbone:  # a linear probe has one stage: the head's
        config = config.with_flat(freeze_epochs=0)
    return _train(config, finetune=True)


def _cmd_features(args: argparse.Namespace) -> int:
    from ..infer.features import check_features_out, extract_features, write_features
    from ..infer.predictor import Predictor
    from ..models.sources import open_model

    check_features_out(args.out)  # before any image is read
    model, info = open_model(args.model, weights=args.weights)
    predictor = Predictor(model, info, device=args.device)
    features = extract_features(predictor, args.data, stage=args.stage, pool=args.stage is None or args.pool,
                                split=args.split, batch_size=args.batch_size, progress=args.progress)
    path = write_features(features, args.out, extra={"model": args.model, "stage": args.stage,
                                                     "pooled": args.stage is None or args.pool})
    print(f"{features.features.shape[0]} images -> features {tuple(features.features.shape[1:])} in {path}"
          + (f"; skipped {len(features.skipped)} unreadable image(s)" if features.skipped else ""))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..config import load_train_config

    overrides = _overrides(args, exclude=())
    if "out_dir" not in overrides and not overrides.get("resume"):  # run again: a new folder beside the first one
        from pathlib import Path

        from ..train.run import unused_out_dir

        overrides["out_dir"] = str(unused_out_dir(Path(load_train_config("demo").run.out_dir)))
    config = load_train_config("demo", **overrides)
    print(f"training {config.model.arch} on the bundled digits ({config.schedule.epochs} epochs); writing "
          f"{config.run.out_dir}/")
    return _train(config)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from ..config import StudyConfig
    from ..reproduce import run_study

    study = _config_from_args(StudyConfig, args)
    print(f"report: {run_study(study)}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..config import EvalConfig
    from ..evaluate.run import run_evaluation

    config = _config_from_args(EvalConfig, args)
    result = run_evaluation(config)
    ece = result.expected_calibration_error
    print(f"{config.protocol}: top-1 {100 * result.top1:.2f}%, top-5 {100 * result.top5:.2f}% "
          f"on {result.count} images (macro F1 {100 * result.macro_f1:.2f}%, calibration error "
          f"{'n/a' if math.isnan(ece) else f'{100 * ece:.2f}%'}); report: {config.out_dir}/report.md")
    if non_finite := int(result.unanswered.sum()):
        print(f"warning: the model's outputs were NaN or infinite for {non_finite} of the {result.count} images "
              "(counted wrong): its weights or --amp precision overflow", file=sys.stderr)
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ..config import CalibrateConfig
    from ..evaluate.calibrate import run_calibration

    result = run_calibration(_config_from_args(CalibrateConfig, args))
    print(f"images: {result.images}")
    print(f"temperature {result.temperature:.4f}, fitted on {result.fit_images} images")
    if result.check_images:
        before, after = result.before, result.after
        print(f"on the {result.check_images} other images: calibration error (ECE) {100 * before['ece']:.2f}% -> "
              f"{100 * after['ece']:.2f}%, NLL {before['nll']:.4f} -> {after['nll']:.4f}, top-1 "
              f"{100 * after['top1']:.2f}% (unchanged)")
        if result.worse:
            print("resnetkit calibrate: warning: the other images' NLL got worse with this temperature: it does not "
                  "carry over; calibrate on more images", file=sys.stderr)
    if result.skipped_non_finite:
        print(f"resnetkit calibrate: warning: {result.skipped_non_finite} image(s) gave NaN or infinite outputs and "
              "were left out", file=sys.stderr)
    print(f"model: {result.model_path}")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from ..config import PruneConfig
    from ..train.prune import run_pruning

    config = _config_from_args(PruneConfig, args)
    result = run_pruning(config)
    print(f"{result.report.summary()}\nmodel: {result.model_path}; report: {config.out_dir}/report.md")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..infer import format_predictions, load_predictor, predict_inputs

    overrides = {k: v for k in ("input_size", "resize_size", "interpolation", "mean", "std")
                 if (v := getattr(args, k)) is not None}
    predictor = load_predictor(args.model, weights=args.weights, class_names=args.classes, device=args.device,
                               pretrained=args.pretrained, preprocess=overrides, tta=args.tta,
                               min_confidence=args.min_confidence)
    predictions = predict_inputs(predictor, args.inputs, top_k=args.top_k, batch_size=args.batch_size,
                                 annotate_dir=args.annotate, cam_dir=args.cam, cam_class=args.cam_class)
    print(format_predictions(predictions, args.format))
    if args.format != "table":  # the table shows errors in place; JSON and CSV readers may not look
        for p in predictions:
            if not p.ok:
                print(f"resnetkit predict: {p.error}", file=sys.stderr)
    return 0 if any(p.ok for p in predictions) else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..config import ServeOptions
    from ..serve import MissingDependencyError, api_key_from_env, serve

    try:
        options = _config_from_args(ServeOptions, args, api_key=api_key_from_env(args.api_key))
        if args.no_batching:
            options = options.with_overrides(max_batch=1, max_wait_ms=0.0)
        serve(args.model, weights=args.weights, class_names=args.classes, device=args.device, host=args.host,
              port=args.port, access_log=args.access_log, options=options)
    except MissingDependencyError as e:
        print(f"resnetkit serve: error: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ..config import ExportConfig
    from ..export import ParityError, export_from_file

    try:
        print(export_from_file(_config_from_args(ExportConfig, args)))
    except ParityError as e:
        print(f"resnetkit export: PARITY CHECK FAILED: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..export.bench import bench_table, benchmark, load_average

    print(load_average())
    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        raise ValueError(f"--batch {args.batch!r}: give whole numbers separated by commas (1,32,256)") from None
    rows = benchmark(args.model, runtimes=args.runtime.split(","), batches=batches,
                     input_size=args.input_size, threads=args.threads, rounds=args.rounds, memory=not args.no_memory)
    print(load_average())
    print("peak RSS MB: peak resident-set growth (VmHWM) of a fresh process that builds the runtime and runs the batch")
    print(bench_table(rows, baseline=args.baseline))
    return 0
