"""The other commands' settings: eval, export, prune, serve and the paper's study."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from .fields import MIB, JsonConfig, _opt, check_count, check_finite, check_in_range, mebibytes
from .model import check_image_side
from .train import check_amp

PROTOCOLS = ("center", "flip", "10crop", "multiscale")
TTA_MODES = ("none", "flip")  # resnetkit predict --tta: the image alone, or averaged with its mirror (models/tta.py)
MIN_CONFIDENCE_HELP = "mark an answer uncertain when its top-1 probability is below this (0-1; meaningful with " \
                      "`resnetkit calibrate`d weights); 0: never"


def check_min_confidence(value: float) -> None:
    """``--min-confidence``: a probability, 0 (never uncertain) to 1."""
    check_in_range("min_confidence", value, 0.0, 1.0, high_included=True,
                   meaning="top-1 probability below which an answer is marked uncertain")


MAX_TOP_LOSSES = 1000  # rows of the report's table (and of the heap that keeps them during the evaluation)
EXPORT_FORMATS = ("onnx", "torchscript", "exported-program", "tflite")
_MODEL_HELP = "a resnetkit .safetensors model file, its URL, or a pretrained name (resnet20_cifar10; see " \
              "`resnetkit models --pretrained`)"


@dataclass(frozen=True)
class EvalConfig(JsonConfig):
    """``resnetkit eval``: one model on one labelled dataset with one protocol, and a report."""

    model: str = _opt("", _MODEL_HELP, positional=True)
    data: str = _opt("", "image folder (root/<class>/<image>), tar of one, CSV of image,label rows, 'cifar10', 'digits' ...", positional=True)
    protocol: str = _opt("center", "views per image: center crop, + its mirror, the 10 crops, or several scales",
                         choices=PROTOCOLS)
    scales: tuple[int, ...] | None = _opt(None, "multiscale: shorter-side sizes; default: the paper's 224..640, "
                                          "scaled to the model", type=int, metavar="PIXELS")
    batch_size: int = _opt(64, "images per forward pass", metavar="IMAGES")
    out_dir: str = _opt("runs/eval", "folder for report.md and its figures")
    device: str = _opt("auto", "'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1' ...", metavar="DEVICE")
    workers: int = _opt(2, "image-decoding worker processes")
    val_split: int = _opt(0, "measure the N images `resnetkit train --val-split N` held out of DATA's training "
                          "split; 0: DATA's test split", metavar="N")
    seed: int | None = _opt(None, "with --val-split: the seed of that held-out split; default: the model file's "
                            "(resnetkit train records it), else 0", type=int, metavar="SEED")
    cifar100_labels: str = _opt("fine", "CIFAR-100: the 100 classes or the 20 superclasses, as the model was trained",
                                choices=("fine", "coarse"))
    top_losses: int = _opt(16, "list and show the N images with the highest loss in the report (fastai's "
                           "top_losses); 0: none", metavar="N")

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r} is not one of {PROTOCOLS}")
        check_count("batch_size", self.batch_size, minimum=1, meaning="images per forward pass")
        check_count("workers", self.workers, minimum=0, meaning="image-decoding processes; 0: in the main process")
        check_count("top_losses", self.top_losses, minimum=0, maximum=MAX_TOP_LOSSES,
                    meaning="images listed with the highest loss; 0: none")
        check_count("val_split", self.val_split, minimum=0, meaning="held-out training images; 0: the test split")
        if self.seed is not None:
            check_count("seed", self.seed, minimum=0, maximum=2**32 - 1, meaning="the held-out split's seed")
        if self.scales is not None:
            if not self.scales:
                raise ValueError("scales is empty: give one or more shorter-side sizes in pixels, or None for the "
                                 "default ones")
            for scale in self.scales:
                check_image_side("scales", scale)


@dataclass(frozen=True)
class CalibrateConfig(JsonConfig):
    """``resnetkit calibrate``: temperature scaling (Guo et al. 2017) of one model on labelled images it was not
    trained on, written as a new model file."""

    model: str = _opt("", _MODEL_HELP, positional=True)
    data: str = _opt("", "labelled images the model did not train on: image folder, tar or labels CSV, 'cifar10' ... "
                     "(with --val-split: the images training held out)", positional=True)
    out: str = _opt("", "the calibrated model file to write (.safetensors; not the input model)", metavar="FILE")
    val_split: int | None = _opt(None, "use the N images `resnetkit train --val-split N` held out of DATA's training "
                                 "split; 0: DATA's test split; default: what the model file records (resnetkit train "
                                 "writes it), else 0", type=int, metavar="N")
    seed: int | None = _opt(None, "the seed of that held-out split (also seeds the check share); default: the model "
                            "file's, else 0", type=int, metavar="SEED")
    check_fraction: float = _opt(0.5, "share of the images kept out of the fit to measure it (stratified); 0: fit on "
                                 "all and measure nothing", metavar="F")
    batch_size: int = _opt(64, "images per forward pass", metavar="IMAGES")
    device: str = _opt("auto", "'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1' ...", metavar="DEVICE")
    workers: int = _opt(2, "image-decoding worker processes")
    cifar100_labels: str = _opt("fine", "CIFAR-100: the 100 classes or the 20 superclasses, as the model was trained",
                                choices=("fine", "coarse"))

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out is empty: give the calibrated model's file name with --out FILE.safetensors")
        check_count("batch_size", self.batch_size, minimum=1, meaning="images per forward pass")
        check_count("workers", self.workers, minimum=0, meaning="image-decoding processes; 0: in the main process")
        if self.val_split is not None:
            check_count("val_split", self.val_split, minimum=0, meaning="held-out training images; 0: the test split")
        check_in_range("check_fraction", self.check_fraction, 0.0, 0.9, high_included=True,
                       meaning="the share of the images that measures the fit")


@dataclass(frozen=True)
class ExportConfig(JsonConfig):
    """``resnetkit export``: one model to one artifact, checked against PyTorch, optionally INT8 and a report."""

    model: str = _opt("", _MODEL_HELP, positional=True)
    format: str = _opt("onnx", "artifact format; tflite: LiteRT flatbuffer, batch 1, needs the 'tflite' extra",
                       choices=EXPORT_FORMATS)
    output: str | None = _opt(None, "artifact path; PATH.json is written too; default: beside MODEL, or MODEL.onnx "
                              "in the current folder for a pretrained name", type=str, metavar="PATH")
    images: str | None = _opt(None, "images for parity and INT8 calibration (any folder of images); with --report, "
                              "labelled: root/<class>/<image> with the model's class names, an uncompressed tar of "
                              "one or a labels CSV; default: none, random inputs",
                              type=str, metavar="FOLDER")
    limit: int = _opt(256, "use at most this many images from --images", metavar="IMAGES")
    int8: bool = _opt(False, "INT8 static quantization (ONNX or TFLite, calibrated on --images)")
    report: str = _opt("", "also print size/speed/top-1 of these comma-separated variants on --images, e.g. "
                       "torch,torch-bf16,onnx,onnx-int8; '': none", metavar="VARIANTS")

    def __post_init__(self) -> None:
        if self.format not in EXPORT_FORMATS:
            raise ValueError(f"format={self.format!r} is not one of {EXPORT_FORMATS}")
        check_count("limit", self.limit, minimum=1, meaning="images taken from --images")
        if self.int8 and self.images is None:
            raise ValueError("--int8 needs --images FOLDER (root/<class>/<image>) to calibrate on")


PRUNE_METHODS = ("torch-pruning", "l1")


@dataclass(frozen=True)
class PruneConfig(JsonConfig):
    """``resnetkit prune``: a trained model to a MAC target, fine-tuned by the training loop, measured before/after."""

    model: str = _opt("", _MODEL_HELP, positional=True)
    data: str = _opt("", "the data the model trained on: the fine-tune uses its training split, top-1 is measured "
                     "on the images its training held out (--val-split) or on its test split", positional=True)
    ratio: float = _opt(0.5, "keep at most this fraction of the model's MACs", metavar="F")
    method: str = _opt("torch-pruning", "torch-pruning: channel groups ranked by L2 norm through Torch-Pruning's "
                       "dependency graph; l1: each filter by its L1 norm (Li et al. 2017)", choices=PRUNE_METHODS)
    fine_tune_epochs: float = _opt(1.0, "epochs of fine-tune after pruning (fractions allowed); 0: none",
                                   metavar="EPOCHS")
    recipe: str = _opt("cifar10-fast", "the fine-tune's training settings, a recipe name or YAML file; its schedule "
                       "must be set as fractions of the run's length (one-cycle, cosine, step at fractions) so it "
                       "stretches over --fine-tune-epochs; every layer trains at one lr (no freeze stage)",
                       metavar="RECIPE")
    lr: float = _opt(0.0, "the fine-tune's peak lr; 0: the recipe's", metavar="LR")
    distill: float = _opt(0.0, "knowledge distillation in the fine-tune: the weight of the unpruned model's softened "
                          "outputs in the loss (temperature 4); 0: the labels alone", metavar="ALPHA")
    amp: str = _opt("", "the fine-tune's mixed precision (auto, bf16, fp16, none); '': the recipe's. 'auto': bf16 "
                    "on CUDA, on a CPU the faster of bf16 and fp32, measured", metavar="PRECISION")
    val_split: int | None = _opt(None, "the N images the model's training held out: left out of the fine-tune and "
                                 "measured; 0: train on all, measure DATA's test split; default: what the model "
                                 "file records (resnetkit train writes it), else 0", type=int, metavar="N")
    seed: int | None = _opt(None, "the seed of that held-out split; default: the model file's, else 0", type=int,
                            metavar="SEED")
    out_dir: str = _opt("runs/prune", "folder for the pruned model.safetensors, report.md and the evaluations",
                        metavar="DIR")
    device: str = _opt("auto", "'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1' ...", metavar="DEVICE")
    progress: bool = _opt(True, "progress bars")
    resume: bool = _opt(False, "continue a fine-tune that was stopped part-way from its checkpoint in --out-dir: the "
                        "same command with --resume (the model is pruned again, the same way, and must be pruned to "
                        "the same widths)")

    def __post_init__(self) -> None:
        if not 0 < self.ratio < 1:
            raise ValueError(f"ratio={self.ratio} must be between 0 and 1 (the fraction of MACs to keep)")
        if self.method not in PRUNE_METHODS:
            raise ValueError(f"method={self.method!r} is not one of {PRUNE_METHODS}")
        check_finite("fine_tune_epochs", self.fine_tune_epochs)  # nan/inf: checked here, not after the pruning
        check_finite("lr", self.lr)
        if not 0 <= self.distill <= 1:
            raise ValueError(f"distill={self.distill} must be in [0, 1] (the teacher's weight in the loss)")
        if self.distill and not self.fine_tune_epochs:
            raise ValueError("distill needs a fine-tune (--fine-tune-epochs > 0): the unpruned model teaches it")
        check_amp(self.amp, recipe_default=True)


SERVE_RUNTIMES = ("auto", "torch", "onnx", "openvino-int8")
# `resnetkit bench --runtime` names, for the CLI's help without importing the export layer (about 2 s);
# export.registry.RUNTIMES describes each, and a test keeps the two the same.
BENCH_RUNTIMES = ("torch", "torch-bf16", "torch-fp16", "onnx", "onnx-int8", "onnx-int8-default", "openvino",
                  "openvino-bf16", "openvino-int8")
API_KEY_ENV = "RESNETKIT_API_KEY"
# Longest batching wait and shutdown grace a server accepts: past these a setting is a mistake, not a choice
# (and a timer that far out overflows the clock).
MAX_WAIT_MS = 60_000.0
MAX_GRACEFUL_S = 86_400.0
BODY_TIMEOUTS = 10  # a request body must arrive within this many read timeouts (a slow link still sends 32 MiB)


@dataclass(frozen=True)
class ServeOptions:
    """``resnetkit serve``: limits and batching for ``create_app``; every field but the key is a flag of the command
    (sizes in bytes here, in MiB on the command line)."""

    top_k: int = _opt(5, "top-k for requests that do not ask", metavar="K")
    tta: str = _opt("none", "test-time augmentation: flip averages each image's softmax with its mirror's, as "
                    "`resnetkit predict --tta flip` (two runs of every batch)", choices=TTA_MODES)
    min_confidence: float | None = _opt(None, MIN_CONFIDENCE_HELP + " (default: the predictor's own, 0 from the "
                                        "command line)", type=float, metavar="P")
    runtime: str = _opt("auto", "auto: openvino-int8 when MODEL's INT8 ONNX file (resnetkit export --int8) is beside "
                        "it or given with --onnx and OpenVINO is installed, else onnx (exported at startup), else torch",
                        choices=SERVE_RUNTIMES)
    onnx_file: str | None = _opt(None, "an ONNX file exported from MODEL (fp32 for --runtime onnx, INT8 for "
                                 "openvino-int8) (default: none, found beside MODEL or exported at startup)",
                                 flag="onnx", type=str, metavar="FILE")
    # Dynamic batching: the worker takes what is queued, up to max_batch images, waiting at most max_wait_ms after
    # the first for more to arrive. max_batch=1 turns batching off.
    max_batch: int = _opt(32, "most images per forward pass", metavar="IMAGES")
    max_wait_ms: float = _opt(2.0, "how long the oldest queued image may wait for a batch to fill", metavar="MS")
    max_queue: int = _opt(256, "images waiting for the model; beyond it, 503 with Retry-After", metavar="IMAGES")
    preprocess_threads: int = _opt(2, "threads decoding and resizing images, off the event loop", metavar="N")
    max_upload_bytes: int = _opt(20 * MIB, "largest image file in MiB", flag="max_upload_mb", type=mebibytes,
                                 metavar="MIB", unit=MIB)
    max_request_bytes: int = _opt(32 * MIB, "largest request body (all its images together) in MiB",
                                  flag="max_request_mb", type=mebibytes, metavar="MIB", unit=MIB)
    max_files: int = _opt(64, "most images in one request", metavar="IMAGES")
    max_pixels: int = _opt(50_000_000, "most pixels (width x height) of one image, read from its header before "
                           "decoding", metavar="PIXELS")
    # Past max_inflight_bytes, 503 + Retry-After: many slow or large uploads together cannot exhaust memory.
    max_inflight_bytes: int = _opt(256 * MIB, "request bodies held at once over all requests, in MiB; beyond it, 503 "
                                   "with Retry-After", flag="max_inflight_mb", type=mebibytes, metavar="MIB", unit=MIB)
    max_connections: int = _opt(512, "open connections at once; beyond it, 503", metavar="N")
    # None: no authentication (the server binds to 127.0.0.1 by default). Kept out of repr and logs; its flag
    # (--api-key, else $RESNETKIT_API_KEY) is the command's own.
    api_key: str | None = field(default=None, repr=False)
    graceful_timeout_s: float = _opt(30.0, "on SIGTERM, how long in-flight requests may take to finish",
                                     flag="graceful_timeout", metavar="S")
    # uvicorn waits for a request's headers and body forever: one slow client could hold a connection, and its bytes
    # of --max-inflight-mb, for good (nginx's client_header_timeout / client_body_timeout).
    read_timeout_s: float = _opt(30.0, "how long a client may take to send its request headers, and may pause while "
                                 "sending the body; past it the connection is closed (headers) or answered 408 "
                                 f"(body); a whole body gets {BODY_TIMEOUTS}x this", flag="read_timeout", metavar="S")

    def __post_init__(self) -> None:
        if self.runtime not in SERVE_RUNTIMES:
            raise ValueError(f"runtime {self.runtime!r} is not one of {', '.join(SERVE_RUNTIMES)}")
        if self.tta not in TTA_MODES:
            raise ValueError(f"tta {self.tta!r} is not one of {', '.join(TTA_MODES)}")
        if self.min_confidence is not None:
            check_min_confidence(self.min_confidence)
        for name in ("top_k", "max_batch", "max_queue", "preprocess_threads", "max_upload_bytes",
                     "max_request_bytes", "max_files", "max_pixels", "max_inflight_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_queue < self.max_files:  # else a full request could never be queued: a 503 forever
            raise ValueError(f"max_queue={self.max_queue} is below max_files={self.max_files}: a request of "
                             f"{self.max_files} images could never be queued; raise --max-queue or lower --max-files")
        if self.max_inflight_bytes < self.max_request_bytes:
            raise ValueError(f"max_inflight_bytes={self.max_inflight_bytes} is below max_request_bytes="
                             f"{self.max_request_bytes}: the largest request allowed could never be received; "
                             "raise --max-inflight-mb or lower --max-request-mb")
        check_finite("max_wait_ms", self.max_wait_ms)  # NaN would never fire, inf kills the batching thread
        check_finite("graceful_timeout_s", self.graceful_timeout_s)
        check_finite("read_timeout_s", self.read_timeout_s)
        for name, most in (("max_wait_ms", MAX_WAIT_MS), ("graceful_timeout_s", MAX_GRACEFUL_S),
                           ("read_timeout_s", MAX_GRACEFUL_S)):
            if getattr(self, name) > most:
                raise ValueError(f"{name}={getattr(self, name)} is over {most:g}: give a shorter wait")
        if self.read_timeout_s <= 0:
            raise ValueError(f"read_timeout_s={self.read_timeout_s} must be > 0")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError(f"the API key is empty; unset {API_KEY_ENV} or give a real key")
        if self.api_key is not None and self.api_key != self.api_key.strip():  # headers drop it: no client could log in
            raise ValueError(f"the API key starts or ends with whitespace ({API_KEY_ENV} or --api-key read with a "
                             "newline?), which the X-API-Key and Bearer headers cannot carry; remove it")

    def with_overrides(self, **overrides: Any) -> ServeOptions:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown serve option(s) {unknown}; choose from {sorted(known)}")
        return dataclasses.replace(self, **overrides)


MAX_LR_FIND_STEPS = 100_000


@dataclass(frozen=True)
class LRFindOptions(JsonConfig):
    """``resnetkit lr-find``: the range of the learning-rate range test and its length; the run itself is a
    ``TrainConfig`` (recipe and flags)."""

    start_lr: float = _opt(1e-7, "the lr of the first step", metavar="LR")
    end_lr: float = _opt(10.0, "the lr of the last step (the test stops earlier when the loss blows up)", metavar="LR")
    steps: int = _opt(100, "optimizer steps, the lr rising exponentially from --start-lr to --end-lr", metavar="N")

    def __post_init__(self) -> None:
        check_finite("start_lr", self.start_lr, minimum=1e-30)
        check_finite("end_lr", self.end_lr, minimum=1e-30)
        if self.end_lr <= self.start_lr:
            raise ValueError(f"end_lr={self.end_lr:g} must be above start_lr={self.start_lr:g}: the test raises the lr")
        check_count("steps", self.steps, minimum=10, maximum=MAX_LR_FIND_STEPS,  # fewer leave too few points to read
                    meaning="optimizer steps of the range test")


MAX_SHOW_BATCH = 64  # images in one figure


@dataclass(frozen=True)
class ShowBatchOptions(JsonConfig):
    """``resnetkit show-batch``: how many images of a run's first batch to draw, and from which split; the run itself
    is a ``TrainConfig`` (recipe and flags)."""

    count: int = _opt(16, "images drawn (at most the batch size)", metavar="N")
    split: str = _opt("train", "train: the first training batch as the network gets it (augmented, mixed); val: the "
                      "first validation batch (the evaluation preprocessing)", choices=("train", "val"))

    def __post_init__(self) -> None:
        check_count("count", self.count, minimum=1, maximum=MAX_SHOW_BATCH, meaning="images in the figure")
        if self.split not in ("train", "val"):
            raise ValueError(f"split={self.split!r} is not 'train' or 'val'")


STUDY_SCHEDULES = ("paper", "fast")


@dataclass
class StudyConfig(JsonConfig):
    """The paper's CIFAR-10 study (section 4.2): which networks, on which data, with which schedule.

    Each (family, depth, seed) is one training run under ``out_dir``; ``epochs_scale`` shrinks every
    schedule in proportion (1.0 is the paper's 64k iterations) so the study fits a CPU.
    """

    _what = "study config"

    data: str = _opt("cifar10", "CIFAR-10 as for `resnetkit train --data`: 'cifar10' (downloaded), its archive, or "
                     "an image folder/tar", metavar="PATH")
    out_dir: str = _opt("runs/reproduce-cifar10", "study folder: one run folder per network, report.md", flag="out",
                        metavar="DIR")
    depths: tuple[int, ...] = _opt((20, 32, 44, 56, 110), "CIFAR depths 6n+2", type=int, metavar="DEPTH")
    plain: bool = _opt(False, "also train each depth's plain twin (no shortcuts)")
    schedule: str = _opt("paper", "paper: the cifar10-paper recipe (section 4.2); fast: the cifar10-fast recipe; each "
                         "run takes its recipe's lengths", choices=STUDY_SCHEDULES)
    epochs_scale: float = _opt(1.0, "multiply every schedule length and milestone by F, e.g. 0.1 to fit a CPU "
                               "(1.0: each recipe's full length, the paper's 64k iterations for paper)", metavar="F")
    epochs: int = _opt(0, "with --schedule fast: every run N epochs long, instead of the recipe's epochs x F; 0: use F",
                       metavar="N")
    amp: str = _opt("", "mixed precision of every run: auto, bf16, fp16 or none; '': the recipe's. 'auto' takes bf16 "
                    "on CUDA and, on a CPU, the faster of bf16 and fp32, measured", metavar="PRECISION")
    compile: bool = _opt(False, "torch.compile every run's training step: faster steps after a slower start; needs a "
                         "C++ compiler; may be switched on or off when a run resumes")
    seeds: int = _opt(1, "runs per network, seeds 0..N-1 (mean and spread in the table)", metavar="N")
    only: tuple[str, ...] = _opt((), "train only these runs (resnet20, plain56, resnet56-s1, 'plain*'); others can run "
                                 "elsewhere; none: all runs", type=str, metavar="NAME")
    val_split: int = _opt(5000, "training images held out for validation (the paper's 45k/5k split)", metavar="N")
    device: str = _opt("auto", "'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1' ...", metavar="DEVICE")
    progress: bool = _opt(True, "progress bars")

    def __post_init__(self) -> None:
        if self.schedule not in STUDY_SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is not one of {STUDY_SCHEDULES}")
        if not 0 < self.epochs_scale <= 10:
            raise ValueError(f"epochs_scale={self.epochs_scale} must be in (0, 10] (1.0 is the full schedule)")
        if self.seeds < 1:
            raise ValueError(f"seeds={self.seeds} must be >= 1")
        if self.epochs and self.epochs_scale != 1.0:
            raise ValueError(f"epochs={self.epochs} and epochs_scale={self.epochs_scale}: give one length, "
                             "--epochs N or --epochs-scale F")
        if self.epochs < 0 or (self.epochs and self.schedule != "fast"):
            raise ValueError(f"epochs={self.epochs}: a number of epochs sets the length of the fast schedule only; "
                             "scale the paper's 64k iterations with epochs_scale (--epochs-scale) instead")
        check_amp(self.amp, recipe_default=True)
        if not self.depths:
            raise ValueError("depths is empty: give at least one depth, e.g. --depths 20 56")

    @property
    def recipe(self) -> str:
        """The recipe each run starts from; the schedule's lengths are its own (scaled by ``epochs_scale``)."""
        return f"cifar10-{self.schedule}"
