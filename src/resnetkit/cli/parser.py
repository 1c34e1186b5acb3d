"""The ``resnetkit`` argument parser: one sub-command per task, its flags built from the config dataclasses (help
and default beside each field), the rest written here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .commands import (_cmd_bench, _cmd_calibrate, _cmd_demo, _cmd_eval, _cmd_export, _cmd_features, _cmd_finetune,
                       _cmd_lr_find, _cmd_models, _cmd_predict, _cmd_prune, _cmd_reproduce, _cmd_serve,
                       _cmd_show_batch, _cmd_summary, _cmd_train)

DESCRIPTION = "resnetkit: deep residual networks (He et al. 2015) and their successors: build, train, reproduce " \
              "the paper, classify images, evaluate and deploy."
EXAMPLES = """examples:
  resnetkit demo                                     train a ResNet-20 on the bundled digits (about a minute)
  resnetkit models 'resnet*'                         networks with their parameters and multiply-adds
  resnetkit models --pretrained                      trained networks ready to use
  resnetkit predict resnet50 --weights resnet50-11ad3fa6.pth photo.jpg
                                                     classify with torchvision's weights (their preprocessing)
  resnetkit train --recipe cifar10-fast --data cifar10 --out-dir runs/r20
  resnetkit lr-find --recipe cifar10-fast --data cifar10   loss against lr, and suggested lrs (fastai's lr_find)
  resnetkit show-batch --recipe cifar10-fast --data cifar10   the first batch as the network gets it (batch.png)
  resnetkit eval runs/r20/model.safetensors cifar10  top-1/top-5 and a report
  resnetkit calibrate resnet20_cifar10 cifar10-train-jpeg.tar --val-split 5000 --out r20-calibrated.safetensors
  resnetkit export runs/r20/model.safetensors --format onnx
  resnetkit prune runs/r20/model.safetensors cifar10 --ratio 0.5 --fine-tune-epochs 2
  resnetkit reproduce cifar10 --plain --epochs-scale 0.1

Run `resnetkit COMMAND --help` for a command's options; put --debug before COMMAND to see an error's traceback."""


def _add_config_flags(parser: argparse.ArgumentParser, flags: dict, *, recipe: bool = False) -> None:
    """One argument for every setting of a config (``config.config_flags``): help and default come from the
    field itself, in one place. With ``recipe``, only flags given on the line override the recipe."""
    for name, f in flags.items():
        default = f.default
        shown = (" ".join(map(str, default)) or "none") if isinstance(default, tuple) else \
            repr(default) if default == "" else default
        if isinstance(default, bool):
            shown = "on" if default else "off"
        unless = ", unless the recipe sets it" if recipe else ""
        text = f.help if default is None else f"{f.help} (default: {shown}{unless})"
        if f.positional:
            parser.add_argument(name, metavar=name.upper(), help=f.help)
            continue
        flag, given = "--" + name.replace("_", "-"), {"dest": name, "help": text,
                                                      "default": argparse.SUPPRESS if recipe else default}
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **given)
        elif f.many:
            parser.add_argument(flag, type=_argument_type(f.type), nargs="+", metavar=f.metavar, **given)
        elif f.choices:
            parser.add_argument(flag, choices=f.choices, **given)
        else:
            parser.add_argument(flag, type=_argument_type(f.type), metavar=f.metavar, **given)


def _add_run_flags(parser: argparse.ArgumentParser, options: dict, *, without: tuple[str, ...] = ()) -> None:
    """A command that looks at a training run without training it (lr-find, show-batch): its own ``options``, then
    ``--recipe`` and every TrainConfig flag but ``without``, so it describes the run as ``resnetkit train`` would."""
    from ..config import TrainConfig

    parser.add_argument("--recipe", default=None,
                        help="bundled recipe name or a YAML path, as for train (default: none, the flags' defaults)")
    _add_config_flags(parser, options)
    _add_config_flags(parser, {k: f for k, f in TrainConfig.flags().items() if k not in without}, recipe=True)


def _argument_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag's parser; a config's own (``mebibytes``) has its message shown as it is, not as "invalid value"."""
    if convert in (int, float, str):
        return convert

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    from ..config import (BENCH_RUNTIMES, INTERPOLATIONS, SHORTCUTS, VARIANTS,
                         TTA_MODES, CalibrateConfig, EvalConfig, ExportConfig, LRFindOptions, PruneConfig, ServeOptions,
                         ShowBatchOptions, StudyConfig, TrainConfig, config_flags)
    from ..config.tasks import MIN_CONFIDENCE_HELP

    parser = argparse.ArgumentParser(prog="resnetkit", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback; log every detail (default: off)")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    p = sub.add_parser("models", help="list the registered networks with parameters and MACs, or the pretrained ones",
                       description="The registered networks with their parameter and multiply-accumulate counts, or "
                                   "(--pretrained) the trained weights this install can use, with their accuracy.")
    p.add_argument("pattern", nargs="?", default="*",
                   help="shell-style name filter, e.g. 'resnet*' (default: '*', all)")
    p.add_argument("--input-size", type=_pixels, default=None, metavar="PIXELS",
                   help="square image side for MACs (default: the model's own, 224 for ImageNet models, 32 for CIFAR)")
    p.add_argument("--pretrained", action="store_true",
                   help="list the pretrained weights (name, accuracy, preprocessing) instead (default: off)")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("summary", help="stage-by-stage table of one network: output shapes, parameters, MACs")
    p.add_argument("name", help="architecture name (see `resnetkit models`)")
    p.add_argument("--input-size", type=_pixels, default=None, metavar="PIXELS",
                   help="square image side (default: the model's own, 224 or 32)")
    p.add_argument("--variant", choices=list(VARIANTS), default=None,
                   help="v1: the paper, v1.5: torchvision, v2: pre-activation (default: the architecture's)")
    p.add_argument("--shortcut", choices=list(SHORTCUTS), default=None,
                   help="A: zero-pad, B: projection when the shape changes, C: always, none: the plain net "
                        "(default: the architecture's)")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("train", help="train a network from a recipe; any recipe field can be overridden",
                       formatter_class=_HelpFormatter,
                       description="Train from a recipe (--recipe cifar10-fast) or a YAML file; every field of "
                                   "resnetkit.config.TrainConfig is a flag (--epochs 10 --lr 0.05 ...); recipes use the same names. "
                                   "Multi-process: torchrun --nproc-per-node N -m resnetkit.cli train ...")
    p.add_argument("--recipe", default=None,
                   help="bundled recipe name (cifar10-paper, cifar10-fast, keras-cifar10, imagenet-paper, finetune, "
                        "demo) or a YAML path (default: none, the flags' defaults)")
    _add_config_flags(p, TrainConfig.flags(), recipe=True)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("lr-find", help="learning-rate range test: the loss as the lr rises, and suggested lrs",
                       formatter_class=_HelpFormatter,
                       description="The lr range test (Smith 2017; fastai's lr_find): the run a recipe and flags "
                                   "describe, on a throwaway copy of its network, with the lr rising exponentially "
                                   "from --start-lr to --end-lr over --steps steps, until the loss blows up. Prints "
                                   "fastai's three suggestions (valley, steep, minimum/10) and writes lr_find.png "
                                   "and lr_find.json to --out-dir; trains nothing else and writes no model.")
    _add_run_flags(p, config_flags(LRFindOptions), without=("lr",))  # the test sets the lr
    p.set_defaults(func=_cmd_lr_find)

    p = sub.add_parser("show-batch", help="draw a run's first batch with its labels, to check data and augmentation",
                       formatter_class=_HelpFormatter,
                       description="The first batch of the run a recipe and flags describe (fastai's show_batch), as "
                                   "the network gets it: the same data, loader seeding, augmentation and MixUp/CutMix "
                                   "as `resnetkit train`, the normalisation undone. Writes batch.png (--split val: "
                                   "val_batch.png, the evaluation preprocessing) to --out-dir; trains nothing.")
    _add_run_flags(p, config_flags(ShowBatchOptions))
    p.set_defaults(func=_cmd_show_batch)

    p = sub.add_parser("finetune", help="fine-tune a pretrained model on new classes (head first, then all layers)",
                       description="Fine-tune MODEL on the classes of DATA: a new head; stage 1 trains it with the body "
                                   "and its BatchNorm frozen (--freeze-epochs), stage 2 trains everything with "
                                   "discriminative learning rates from lr/lr-mult (first layers) to lr (head), "
                                   "one-cycle (--epochs). --freeze: a linear probe (the head only). Defaults from "
                                   "the finetune recipe; every TrainConfig setting is a flag. Writes the model file "
                                   "(with the class names and MODEL's preprocessing) and report to --out-dir.")
    p.add_argument("start", metavar="MODEL",
                   help="a resnetkit .safetensors or Keras .h5/.weights.h5 file, a pretrained name (resnet20_cifar10), "
                        "or an architecture name with --weights")
    p.add_argument("data_source", metavar="DATA", help="image folder (root/<class>/<image>) or tar, a CSV of image,label "
                                                              "rows, 'cifar10' ...")
    p.add_argument("--weights", metavar="FILE_OR_URL", default=None,
                   help="torchvision / timm / resnetkit / Keras weights for MODEL given as an architecture name "
                        "(default: none)")
    p.add_argument("--recipe", default="finetune", help="bundled recipe name or YAML path (default: finetune)")
    p.add_argument("--freeze", dest="freeze_backbone", action="store_true", default=argparse.SUPPRESS,
                   help="linear probe: train only the new head, body and BatchNorm frozen (default: off, two stages)")
    _add_config_flags(p, {k: f for k, f in TrainConfig.flags().items() if k not in ("data", "pretrained")},
                      recipe=True)  # MODEL and DATA are the positional arguments
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("features", help="extract pooled features or a stage's feature maps for a set of images",
                       description="Run MODEL (with its own preprocessing) over the images of DATA and write the "
                                   "features before the classifier (or --stage K's maps) to --out, with the file "
                                   "list and the labels of class folders (.safetensors: in the file; NAME.npy: in "
                                   "NAME.json beside it).")
    p.add_argument("model", metavar="MODEL", help="a resnetkit .safetensors or Keras .h5 file, or an architecture "
                                                  "name with --weights")
    p.add_argument("data", metavar="DATA", help="image tree (root/<class>/<image>, folder or tar), a labels CSV, "
                                                  "a folder, a file, or a dataset: digits, cifar10, cifar100")
    p.add_argument("--out", required=True, metavar="FILE", help="output .npy or .safetensors (required, no default)")
    p.add_argument("--weights", metavar="FILE_OR_URL", default=None,
                   help="torchvision / timm / resnetkit / Keras weights for MODEL given as an architecture name "
                        "(default: none)")
    p.add_argument("--stage", type=int, default=None, metavar="K",
                   help="the K-th stage's feature maps (1 = first) instead of the pooled features (default: pooled)")
    p.add_argument("--pool", action="store_true",
                   help="with --stage: average-pool the maps to one vector per image (default: off)")
    p.add_argument("--split", default="train", help="for trees with train/ and val/ or test/ folders (default: train)")
    p.add_argument("--batch-size", type=int, default=64, metavar="IMAGES", help="images per forward pass (default: 64)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when it is a terminal)")
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("demo", help="train a ResNet-20 on the bundled digits (about a minute on 2 cores)")
    _add_config_flags(p, TrainConfig.flags(), recipe=True)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("reproduce", help="the paper's experiments: train, resume and report the CIFAR-10 study",
                       description="The CIFAR-10 study of section 4.2: every depth (and its plain twin with --plain) "
                                   "as its own resumable run under --out, then report.md with Table 6 side by side "
                                   "with the paper, Figures 6 and 7 and gradient flow. Run the same command again "
                                   "to continue after a stop; finished runs are skipped.")
    p.add_argument("study", choices=["cifar10"], help="which study (the CIFAR-10 one of section 4.2)")
    _add_config_flags(p, config_flags(StudyConfig))
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("eval", help="evaluate a model on a labelled image folder, tar, CSV or dataset")
    _add_config_flags(p, config_flags(EvalConfig))
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("calibrate", help="temperature scaling: calibrated probabilities, written as a new model file",
                       description="Fit the temperature T that makes MODEL's softmax as confident as it is right "
                                   "(Guo et al. 2017) on labelled images it did not train on, measure it on the "
                                   "--check-fraction of them left out of the fit, and write the model with T in its "
                                   "classifier to --out: predict, serve, eval and export then give calibrated "
                                   "probabilities; top-1 does not change.")
    _add_config_flags(p, config_flags(CalibrateConfig))
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("predict", help="classify images with a model, print top-k, optionally annotate / Grad-CAM",
                       description="Classify images. MODEL is a resnetkit model file (path or URL), a pretrained name "
                                   "(resnet20_cifar10, resnet50_imagenet1k_v2; `resnetkit models --pretrained`), or an "
                                   "architecture name with --pretrained TAG or --weights FILE. Weights the catalog "
                                   "knows (same SHA-256) bring their own preprocessing and class names; for others, "
                                   "set the preprocessing with --resize-size, --input-size, --interpolation, --mean, "
                                   "--std.")
    p.add_argument("model", metavar="MODEL", help="a resnetkit .safetensors model file (path or URL), a pretrained "
                                                  "name, or an architecture name with --weights or --pretrained")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (searched recursively), glob patterns or URLs")
    p.add_argument("--weights", metavar="FILE_OR_URL", default=None,
                   help="torchvision / timm / resnetkit weights (or a pretrained name) for MODEL given as an "
                        "architecture name (default: none)")
    p.add_argument("--pretrained", metavar="TAG", default=None,
                   help="with an architecture name: its pretrained weights TAG, e.g. resnet20 --pretrained cifar10 "
                        "(default: none)")
    p.add_argument("--classes", metavar="FILE", default=None,
                   help="class names: one per line, or a JSON list (default: the model's own, else indices)")
    p.add_argument("--input-size", type=_pixels, default=None, metavar="PIXELS",
                   help="override: side of the square centre crop the model sees; alone, it scales the resize with it "
                        "(default: the model's own)")
    p.add_argument("--resize-size", type=_pixels, default=None, metavar="PIXELS",
                   help="override: shorter side is resized to this before the crop (default: the model's own)")
    p.add_argument("--interpolation", choices=INTERPOLATIONS, default=None,
                   help="override: resize interpolation (default: the model's own)")
    p.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="override: per-channel mean subtracted, on the 0-1 scale (default: the model's own)")
    p.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="override: per-channel standard deviation divided by, on the 0-1 scale (default: the "
                        "model's own)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="classes shown per image (default: 5)")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="test-time augmentation: flip averages each image's softmax with its mirror's, as `resnetkit "
                        "eval --protocol flip` (two forward passes; for models trained on mirrored images) "
                        "(default: none)")
    p.add_argument("--min-confidence", type=float, default=0.0, metavar="P", help=f"{MIN_CONFIDENCE_HELP} (default: 0)")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table", help="output format (default: table)")
    p.add_argument("--batch-size", type=int, default=32, metavar="IMAGES",
                   help="images per forward pass (default: 32)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    p.add_argument("--annotate", metavar="OUT_DIR", default=None,
                   help="write each image with its top label drawn on it into OUT_DIR (default: off)")
    p.add_argument("--cam", metavar="OUT_DIR", default=None,
                   help="write a Grad-CAM heat-map overlay for each image into OUT_DIR (default: off)")
    p.add_argument("--cam-class", metavar="NAME_OR_INDEX", default=None,
                   help="class the Grad-CAM explains (default: the predicted class)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("serve", help="HTTP API and web page for a model (needs the 'serve' extra)",
                       description="Serve MODEL over HTTP: POST /v1/predict, /v1/cam, GET /v1/model, /healthz, "
                                   "/readyz, /metrics, /docs and an upload page at /. Requests that arrive "
                                   "together are batched for the model. SIGTERM finishes in-flight requests.")
    p.add_argument("model", metavar="MODEL",
                   help="a resnetkit .safetensors model file, a pretrained name, or an architecture name with --weights")
    p.add_argument("--weights", metavar="FILE_OR_URL", default=None,
                   help="weights for MODEL given as an architecture name (default: none)")
    p.add_argument("--classes", metavar="FILE", default=None,
                   help="class names, one per line or a JSON list (default: the model's own)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on, 0.0.0.0 to accept other machines (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port, 1-65535 (default: 8000)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    _add_config_flags(p, config_flags(ServeOptions))
    p.add_argument("--no-batching", action="store_true", help="one image per forward pass, i.e. --max-batch 1 (default: off)")
    p.add_argument("--api-key", default=None,
                   help="require this key (Authorization: Bearer KEY, X-API-Key: KEY, or as the HTTP Basic password) "
                        "on every route but /healthz and /readyz; default: $RESNETKIT_API_KEY, else none")
    p.add_argument("--access-log", action="store_true", help="log every request, uvicorn's access log (default: off)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("export", help="write ONNX / TorchScript / ExportedProgram, checked against PyTorch")
    _add_config_flags(p, config_flags(ExportConfig))
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("prune", help="prune a trained ResNet to a MAC target and fine-tune it; top-1 before and after",
                       description="Remove channels inside the residual blocks until the MACs are at most --ratio of "
                                   "the model's, fine-tune the result with the training loop (--recipe, for "
                                   "--fine-tune-epochs), and measure top-1 before pruning, right after and after the "
                                   "fine-tune on the images the model's training held out. Writes a resnetkit model "
                                   "file that loads everywhere.")
    _add_config_flags(p, config_flags(PruneConfig))
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser("bench", help="latency, throughput and peak memory per runtime, as a table")
    p.add_argument("model", help="a registered name (random weights) or a resnetkit .safetensors file")
    p.add_argument("--batch", default="1,32", metavar="SIZES", help="comma-separated batch sizes (default: 1,32)")
    p.add_argument("--runtime", default="torch,torch-bf16,onnx,onnx-int8",
                   help=f"comma-separated: {', '.join(BENCH_RUNTIMES)} (default: %(default)s)")
    p.add_argument("--input-size", type=_pixels, default=None, metavar="PIXELS",
                   help="square image side (default: the model's own input size)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads per runtime (default: 2)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds of 5 calls at batch 1 (default: 10)")
    p.add_argument("--baseline", default="onnx-int8-default",
                   help="runtime the speed-up column compares with (default: onnx-int8-default)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes (default: off)")
    p.set_defaults(func=_cmd_bench)
    for command in sub.choices.values():  # also accepted after the command: `resnetkit predict ... --debug`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="on an error, show the full traceback; log every detail (default: off)")
    return parser


def _pixels(text: str) -> int:
    """An image side given on the command line, refused at parse time by the configs' own rule."""
    from ..config.model import check_image_side

    try:
        value = int(text)
        check_image_side("it", value)
    except ValueError:
        from ..config import MAX_IMAGE_SIDE

        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of pixels from 1 to {MAX_IMAGE_SIDE}") from None
    return value


def _port(text: str) -> int:
    """A TCP port given on the command line, refused at parse time (not by the socket, after the model loaded)."""
    value = int(text) if text.strip().isdigit() else -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: give a whole number from 1 to 65535")
    return value
