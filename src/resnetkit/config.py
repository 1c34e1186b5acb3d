"""Typed configuration for resnetkit.

Every dataclass here round-trips through plain JSON (``to_dict`` / ``from_dict``), so a model file,
a training report or a checkpoint records exactly what produced it. YAML recipes and CLI flags only
fill these in. This module imports nothing else from resnetkit.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

VARIANTS = ("v1", "v1.5", "v2")
AMP_MODES = ("bf16", "fp16", "none")
SHORTCUTS = ("A", "B", "C", "none")

T = TypeVar("T")


def _from_dict(cls: type[T], data: dict[str, Any], *, what: str) -> T:
    """Build dataclass ``cls`` from ``data``, naming unknown keys instead of failing on them late."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} field(s) {unknown}; known fields are {sorted(known)}")
    values = dict(data)
    for f in fields(cls):  # type: ignore[arg-type]
        # JSON has no tuples: turn lists back into the tuples the dataclass declares.
        if isinstance(values.get(f.name), list) and "tuple" in str(f.type):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def _opt(default: Any, help: str, *, flag: str = "", type: type | None = None, choices: tuple[str, ...] = (),
         positional: bool = False, metavar: str = "") -> Any:
    """A field a user sets from the command line: its help text (units, meaning) lives beside its default, and
    the CLI builds its ``--flag`` from both. ``flag`` renames the flag (``TrainConfig.model.arch`` is
    ``--model``); ``type`` is the flag's type where the default (None) does not tell it (for a tuple: of its
    items); ``positional``: an argument without ``--`` (the model of ``resnetkit eval MODEL DATA``); ``metavar``:
    the unit shown in the help (PIXELS, IMAGES)."""
    metadata: dict[str, Any] = {"help": help, "flag": flag, "type": type, "choices": choices, "positional": positional,
                                "metavar": metavar}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Flag:
    """One command-line setting: ``--name`` (or a positional ``name``) sets ``field`` (of ``section``)."""

    name: str
    section: str
    field: str
    default: Any
    help: str
    type: type
    choices: tuple[str, ...] = ()
    positional: bool = False
    many: bool = False  # a tuple field: the flag takes one or more values
    metavar: str = ""


def config_flags(cls: type, *, section: str = "") -> dict[str, Flag]:
    """The command-line settings of a config dataclass: its fields that carry help (``_opt``), by flag name."""
    found: dict[str, Flag] = {}
    for f in fields(cls):
        if "help" not in f.metadata:
            continue  # set by the program (num_classes from the data), not by the user
        meta = f.metadata
        kind = meta["type"] or (float if isinstance(f.default, tuple) else type(f.default))
        name = meta["flag"] or f.name
        found[name] = Flag(name, section, f.name, f.default, meta["help"], kind, meta["choices"], meta["positional"],
                           many="tuple" in str(f.type), metavar=meta["metavar"] or kind.__name__.upper())
    return found


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a network's architecture.

    ``arch`` is a registry name (``resnet50``, ``resnet20``, ``plain34`` ...); the other fields are the
    options ``create_model`` accepts. A field left at None takes the architecture's default (resnet20: v1,
    shortcut A, 10 classes; resnet50: v1.5, shortcut B, 1000 classes); ``models.resolve_config`` fills them
    in, and every built network and model file carries the resolved config. Two equal resolved configs
    always build identical architectures.
    """

    arch: str = _opt("resnet20", "architecture name (see `resnetkit models`)", flag="model")
    num_classes: int | None = None
    in_chans: int = 3
    variant: str | None = _opt(None, "'v1' (paper), 'v1.5' (torchvision), 'v2' (pre-activation); default: the "
                               "architecture's", type=str)
    shortcut: str | None = _opt(None, "'A' zero-pad, 'B' projection when the shape changes, 'C' projection always, "
                                "'none'; default: the architecture's", type=str)
    width: float | None = _opt(None, "channel width multiplier; default: the architecture's (10 for wide_resnet28_10, "
                               "else 1)", type=float)
    zero_init_residual: bool = _opt(False, "start each residual branch's last BN (or conv) at zero")
    drop_rate: float = _opt(0.0, "dropout probability before the classifier")
    head_hidden: int = _opt(0, "units of a hidden ReLU layer between the pooled features and the classifier (the "
                            "seeds' Dense(256, relu) head); 0: none", metavar="UNITS")

    def __post_init__(self) -> None:
        if self.head_hidden < 0:
            raise ValueError(f"head_hidden={self.head_hidden} must be >= 0 (0: no hidden layer in the head)")
        if self.variant is not None and self.variant not in VARIANTS:
            raise ValueError(f"variant={self.variant!r} is not one of {VARIANTS}")
        if self.shortcut is not None and self.shortcut not in SHORTCUTS:
            raise ValueError(
                f"shortcut={self.shortcut!r} is not one of {SHORTCUTS} "
                "(A: identity with zero-padded channels, B: projection when the shape changes, "
                "C: projection on every block, none: a plain network)"
            )
        if self.num_classes is not None and self.num_classes < 0:
            raise ValueError(f"num_classes={self.num_classes} must be >= 0 (0 removes the classifier)")
        if self.in_chans < 1:
            raise ValueError(f"in_chans={self.in_chans} must be >= 1")
        if self.width is not None and self.width <= 0:
            raise ValueError(f"width={self.width} must be > 0")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate={self.drop_rate} must be in [0, 1)")

    @property
    def resolved(self) -> bool:
        """True when no field is left to the architecture's default (as in a built network or a model file)."""
        return None not in (self.num_classes, self.variant, self.shortcut, self.width)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, data, what="model config")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input: resize the shorter side, centre-crop, normalise.

    Stored with the weights so inference can never drift from training.
    """

    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        return _from_dict(cls, data, what="preprocess")


IMAGENET_PREPROCESS = Preprocess()
CIFAR_PREPROCESS = Preprocess(input_size=32, resize_size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD)


@dataclass
class ModelInfo:
    """What a model file carries besides the tensors: the architecture, labels and preprocessing."""

    model: ModelConfig
    class_names: list[str] = field(default_factory=list)
    preprocess: Preprocess = field(default_factory=Preprocess)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "class_names": list(self.class_names),
            "preprocess": self.preprocess.to_dict(),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(
            model=ModelConfig.from_dict(data["model"]),
            class_names=list(data.get("class_names", [])),
            preprocess=Preprocess.from_dict(data.get("preprocess", {})),
            extra=dict(data.get("extra", {})),
        )


@dataclass(frozen=True)
class DataConfig:
    """Which data, which split of it, and how it is read; ``data.load_data(DataConfig(...))`` loads it.

    - ``source``: ``"digits"``, ``"cifar10"``, ``"cifar100"``, or a path to a CIFAR folder/archive or
      an image folder/tar (``<class>/<image>``, optionally under ``train/`` and ``test/`` or ``val/``).
    - ``root``: where named CIFAR datasets live (default ``$RESNETKIT_DATA`` or ``~/.cache/resnetkit/datasets``).
    - ``val_split``: training images held out as a validation set (stratified by class, seeded by ``seed``).
    - ``image_size``: square size of the in-memory images; None keeps the source's size (digits: 16).
    - ``download``: fetch a named CIFAR dataset when it is not under ``root``.
    - ``cache``: reuse decoded image trees from ``$RESNETKIT_CACHE`` (default ``~/.cache/resnetkit``).
    - ``workers``: decoding threads for image trees (default: CPU count, at most 8).
    - ``cifar100_labels``: ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses).
    - ``classes``: a class-name file (one per line, or a JSON list) naming the classes in label order.
    - ``mean`` / ``std``: the normalisation a model trained on this data uses; empty: the training
      split's own per-channel statistics (a fine-tune keeps its pretrained model's instead).
    """

    source: str = _opt("digits", "a folder of class folders, a tar of one, 'cifar10', 'cifar100', 'digits', or a "
                       "CIFAR archive", flag="data")
    root: str | None = None
    val_split: int = _opt(0, "images held out of the training split for validation (stratified, seeded); 0: none")
    seed: int = 0
    image_size: int | None = _opt(None, "image size in pixels; default: the dataset's own (32 for CIFAR)", type=int)
    download: bool = False
    cache: bool = True
    workers: int | None = None
    cifar100_labels: str = _opt("fine", "CIFAR-100: 'fine' (100 classes) or 'coarse' (20 superclasses)")
    classes: str = _opt("", "class-name file (one per line, or a JSON list) naming the data's classes in label "
                        "order; '': the folder names")
    mean: tuple[float, ...] = _opt((), "per-channel input mean in [0, 1] (as the pretrained model was trained); (): "
                                   "the data's own statistics")
    std: tuple[float, ...] = _opt((), "per-channel input std in [0, 1]; (): the data's own statistics")

    def __post_init__(self) -> None:
        if self.val_split < 0:
            raise ValueError(f"val_split={self.val_split} must be >= 0 (a number of images, e.g. 5000)")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size={self.image_size} must be a positive number of pixels or None")
        if self.cifar100_labels not in ("fine", "coarse"):
            raise ValueError(f"cifar100_labels={self.cifar100_labels!r} must be 'fine' or 'coarse'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        return _from_dict(cls, data, what="data config")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation: a base policy, further augmentations on top (0 is off), batch mixing.
    Small images are augmented batch-wise on uint8 tensors, large ones in the loader workers."""

    policy: str = _opt("auto", "'pad-crop-flip' (paper CIFAR), 'pad-crop', 'flip', 'none' (small images, batch-wise); "
                       "'scale' (paper ImageNet), 'rrc' (RandomResizedCrop) (large images, loader workers); 'auto': "
                       "pad-crop for digits, pad-crop-flip up to 64 px, rrc for larger photos", flag="augment")
    lighting: float = _opt(0.0, "large images: std of AlexNet's PCA colour noise (0.1 in the paper's ImageNet recipe)")
    rotation: float = _opt(0.0, "degrees: rotation angle uniform in [-rotation, rotation]; 0: off")
    width_shift: float = _opt(0.0, "fraction of the width (Keras' width_shift_range), border pixels replicated; 0: off")
    height_shift: float = _opt(0.0, "fraction of the height (Keras' height_shift_range); 0: off")
    brightness: float = _opt(0.0, "brightness factor uniform in [1 - x, 1 + x]; 0: off")
    contrast: float = _opt(0.0, "contrast factor uniform in [1 - x, 1 + x]; 0: off")
    cutout: int = _opt(0, "side in pixels of one square hole per image (16 for CIFAR-10 in DeVries & Taylor); 0: off")
    random_erasing: float = _opt(0.0, "probability per image of erasing a random rectangle (Zhong et al.); 0: off")
    erasing_scale: tuple[float, ...] = _opt((0.02, 0.33), "random erasing's area range, as fractions of the image")
    mixup_alpha: float = _opt(0.0, "mixup Beta(alpha, alpha) parameter; 0: off")
    cutmix_alpha: float = _opt(0.0, "CutMix Beta(alpha, alpha) parameter; 0: off")


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer, the loss's regularisers and the step: what one update does."""

    optimizer: str = _opt("sgd", "'sgd', 'adam', 'adamw' or 'rmsprop' (torch.optim's; every schedule works with each)")
    batch_size: int = _opt(128, "images per optimizer step")
    lr: float = _opt(0.1, "learning rate at --batch-size (not rescaled per 256 images)")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(False, "Nesterov momentum")
    weight_decay: float = _opt(1e-4, "L2 weight decay per step")
    decay_norm_and_bias: bool = _opt(True, "also decay BN parameters and biases")
    betas: tuple[float, ...] = _opt((0.9, 0.999), "Adam/AdamW moment decays")
    eps: float = _opt(1e-8, "Adam/AdamW/RMSprop denominator term (Keras' default is 1e-7)")
    rmsprop_alpha: float = _opt(0.99, "RMSprop's squared-gradient average (Keras' rho, 0.9 there); momentum applies too")
    label_smoothing: float = _opt(0.0, "label smoothing, as a probability mass in [0, 1)")
    head_l2: float = _opt(0.0, "L2 penalty on the head's weights alone, as Keras' kernel_regularizer=l2(x): adds x * "
                          "sum(w ** 2) of the classifier (and hidden head layer) to the loss; 0: off")
    ema_decay: float = _opt(0.0, "per-step decay of an exponential moving average of the weights, evaluated "
                            "instead; 0: off")
    grad_clip: float = _opt(0.0, "clip the global gradient L2 norm to this; 0: off")
    accumulate: int = _opt(1, "micro-batches of gradient accumulated per optimizer step")


@dataclass(frozen=True)
class ScheduleConfig:
    """How long training runs and how the learning rate moves. Lengths are in epochs unless ``iterations`` is
    set (the paper's CIFAR recipe counts iterations: 64k at batch 128, lr /10 at 32k and 48k)."""

    epochs: int = _opt(30, "training length in epochs (ignored when --iterations is set)")
    iterations: int = _opt(0, "training length in iterations (optimizer steps) instead of epochs; 0: use --epochs")
    name: str = _opt("step", "'step' (milestones), 'cosine', 'onecycle', 'constant', 'plateau' (lr x gamma when "
                     "validation top-1 stalls), 'exponential' (decay_rate ** (iteration / decay_steps))",
                     flag="schedule")
    milestones: tuple[float, ...] = _opt((0.5, 0.75), "step schedule: where lr is multiplied by gamma, as fractions "
                                         "of the run (<=1) or absolute epochs/iterations")
    gamma: float = _opt(0.1, "lr multiplier at each milestone (or plateau)")
    milestone_gammas: tuple[float, ...] = _opt((), "step schedule: one lr multiplier per milestone instead of "
                                               "--gamma, applied in turn (the Keras CIFAR example: 0.1 0.1 0.1 0.5)")
    patience: int = _opt(5, "'plateau': evaluations without a 0.1-point top-1 gain before lr drops")
    warmup: float = _opt(0.0, "linear warm-up length, in epochs (iterations when --iterations is set)")
    warmup_lr: float = _opt(0.0, "constant warm-up at this lr instead of linear (ResNet-110: 0.01 for 400 "
                            "iterations); 0: linear")
    decay_steps: int = _opt(0, "'exponential': lr x decay_rate every decay_steps iterations (Keras' ExponentialDecay)")
    decay_rate: float = _opt(0.9, "'exponential': the lr multiplier per decay_steps")
    staircase: bool = _opt(False, "'exponential': drop in whole steps, not continuously")


@dataclass(frozen=True)
class FinetuneConfig:
    """Starting from trained weights (`resnetkit finetune`, train/finetune.py): a head-only stage with the body
    and its BatchNorm frozen, then everything with discriminative learning rates."""

    pretrained: str = _opt("", "weights to start from: a file, a URL or a pretrained name; the head is reset if the "
                           "class count differs; '': random init")
    freeze_backbone: bool = _opt(False, "train the classifier only (feature extraction)")
    freeze_bn: bool = _opt(False, "keep BatchNorm on its running statistics (small-batch fine-tuning)")
    freeze_epochs: int = _opt(0, "with --pretrained: epochs of a head-only first stage (body and BN frozen); 0: none")
    lr_mult: float = _opt(1.0, "discriminative lrs: they rise geometrically from lr/lr_mult (stem, first stage) to lr "
                          "(head); 1: one lr")


@dataclass(frozen=True)
class RunConfig:
    """Where and how the run executes: precision, device, seed, output, evaluation cadence."""

    amp: str = _opt("bf16", "mixed precision: 'bf16', 'fp16' (CUDA) or 'none'")
    channels_last: bool = _opt(True, "NHWC memory layout (faster convolutions on most hardware)")
    compile: bool = _opt(False, "torch.compile the model (slower start, faster steps)")
    device: str = _opt("auto", "'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1' ...")
    sync_bn: bool = _opt(False, "SyncBatchNorm under multi-process (DDP) training")
    seed: int = _opt(0, "random seed for initialisation, data order and the validation split")
    workers: int = _opt(2, "loader processes for large images (small images are augmented in-process)")
    out_dir: str = _opt("runs/train", "folder for the checkpoint, model file, logs and report")
    resume: bool = _opt(False, "continue from OUT_DIR's last checkpoint")
    eval_every: int = _opt(1, "evaluate on the validation split every N epochs; 0: only at the end")
    progress: bool = _opt(True, "progress bars")


_LEGACY_UNSET = {"variant": "", "shortcut": "", "width": 0.0, "image_size": 0}  # flat configs before sections


@dataclass(frozen=True)
class TrainConfig:
    """One training run, fully, in sections: data, model, augment, optim, schedule, finetune, run.

    Recipes (YAML) and the command line name each setting by its flag (``lr``, ``model``, ``augment``),
    flat; ``TrainConfig.from_flat`` puts them in their sections, ``with_flat`` overrides some, ``to_dict``
    writes the nested form every run records. ``data.seed`` (the validation split) follows ``run.seed``.
    """

    data: DataConfig = field(default_factory=lambda: DataConfig(download=True))
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @classmethod
    def flags(cls) -> dict[str, Flag]:
        """Every setting a recipe or the command line may give, by flag name (``--batch-size`` is ``batch_size``)."""
        found: dict[str, Flag] = {}
        for section in fields(cls):
            found.update(config_flags(type(section.default_factory()), section=section.name))  # type: ignore[misc]
        return found

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from flag-named settings (a recipe, the command line, a config written before sections);
        an unknown name is refused with the list of known ones."""
        return cls().with_flat(**values)

    def with_flat(self, **values: Any) -> TrainConfig:
        """This config with flag-named settings replaced (``config.with_flat(lr=0.05, model="resnet56")``)."""
        flags = self.flags()
        unknown = sorted(set(values) - set(flags))
        if unknown:
            raise ValueError(f"unknown train config field(s) {unknown}; known fields are {sorted(flags)}")
        changes: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            flag = flags[name]
            if name in _LEGACY_UNSET and value == _LEGACY_UNSET[name]:
                value = None  # the old "use the default" sentinels ("" / 0) are None now
            if isinstance(value, list):
                value = tuple(value)
            changes.setdefault(flag.section, {})[flag.field] = value
        if "seed" in values:  # the validation split follows the run's seed
            changes.setdefault("data", {})["seed"] = values["seed"]
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **fields_)
                                            for section, fields_ in changes.items()})

    def to_flat(self) -> dict[str, Any]:
        """Every flag-named setting and its value (the inverse of ``from_flat``)."""
        return {name: getattr(getattr(self, flag.section), flag.field) for name, flag in self.flags().items()}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """From ``to_dict``'s nested form, or the flat form of recipes and of runs recorded before sections."""
        sections = {f.name: f for f in fields(cls)}
        if not all(isinstance(v, dict) and k in sections for k, v in data.items()):
            return cls.from_flat(data)
        values = {name: _from_dict(type(section.default_factory()), data[name], what=f"train config {name}")  # type: ignore[misc]
                  for name, section in sections.items() if name in data}
        return cls(**values)


PROTOCOLS = ("center", "flip", "10crop", "multiscale")
EXPORT_FORMATS = ("onnx", "torchscript", "exported-program", "tflite")
_MODEL_HELP = "a resnetkit .safetensors model file, its URL, or a pretrained name (resnet56_cifar10; see " \
              "`resnetkit models --pretrained`)"


@dataclass(frozen=True)
class EvalConfig:
    """``resnetkit eval``: one model on one labelled dataset with one protocol, and a report."""

    model: str = _opt("", _MODEL_HELP, positional=True)
    data: str = _opt("", "image folder (root/<class>/<image>), tar of one, 'cifar10', 'digits' ...", positional=True)
    protocol: str = _opt("center", "views per image: center crop, + its mirror, the 10 crops, or several scales",
                         choices=PROTOCOLS)
    scales: tuple[int, ...] | None = _opt(None, "multiscale: shorter-side sizes; default: the paper's 224..640, "
                                          "scaled to the model", type=int, metavar="PIXELS")
    batch_size: int = _opt(64, "images per forward pass", metavar="IMAGES")
    out_dir: str = _opt("runs/eval", "folder for report.md and its figures")
    device: str = _opt("auto", "'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1' ...")
    workers: int = _opt(2, "image-decoding worker processes")
    val_split: int = _opt(0, "measure the N images `resnetkit train --val-split N` held out of DATA's training "
                          "split; 0: DATA's test split", metavar="N")
    seed: int = _opt(0, "with --val-split: the training run's seed")
    cifar100_labels: str = _opt("fine", "CIFAR-100: the 100 classes or the 20 superclasses, as the model was trained",
                                choices=("fine", "coarse"))

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r} is not one of {PROTOCOLS}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ExportConfig:
    """``resnetkit export``: one model to one artifact, checked against PyTorch, optionally INT8 and a report."""

    model: str = _opt("", _MODEL_HELP, positional=True)
    format: str = _opt("onnx", "artifact format; tflite: LiteRT flatbuffer, batch 1, needs the 'tflite' extra",
                       choices=EXPORT_FORMATS)
    output: str | None = _opt(None, "artifact path; PATH.json is written too; default: beside MODEL, or MODEL.onnx "
                              "in the current folder for a pretrained name", type=str, metavar="PATH")
    images: str | None = _opt(None, "labelled folder root/<class>/<image>: parity inputs, INT8 calibration, the "
                              "--report set; default: none, random inputs", type=str, metavar="FOLDER")
    limit: int = _opt(256, "use at most this many images from --images", metavar="IMAGES")
    int8: bool = _opt(False, "INT8 static quantization (ONNX or TFLite, calibrated on --images)")
    report: str = _opt("", "also print size/speed/top-1 of these comma-separated variants on --images, e.g. "
                       "torch,torch-bf16,onnx,onnx-int8; '': none", metavar="VARIANTS")

    def __post_init__(self) -> None:
        if self.format not in EXPORT_FORMATS:
            raise ValueError(f"format={self.format!r} is not one of {EXPORT_FORMATS}")
        if self.int8 and self.images is None:
            raise ValueError("--int8 needs --images FOLDER (root/<class>/<image>) to calibrate on")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRUNE_METHODS = ("torch-pruning", "l1")


@dataclass(frozen=True)
class PruneConfig:
    """``resnetkit prune``: a trained model to a MAC target, fine-tuned by the training loop, measured before/after."""

    model: str = _opt("", _MODEL_HELP, positional=True)
    data: str = _opt("", "the data the model trained on: the fine-tune uses its training split, top-1 is measured "
                     "on the images its training held out (--val-split) or on its test split", positional=True)
    ratio: float = _opt(0.5, "keep at most this fraction of the model's MACs", metavar="F")
    method: str = _opt("torch-pruning", "torch-pruning: channel groups ranked by L2 norm through Torch-Pruning's "
                       "dependency graph; l1: each filter by its L1 norm (Li et al. 2017)", choices=PRUNE_METHODS)
    fine_tune_epochs: float = _opt(1.0, "epochs of fine-tune after pruning (fractions allowed); 0: none",
                                   metavar="EPOCHS")
    recipe: str = _opt("cifar10-fast", "the fine-tune's training settings (its lr schedule over the fine-tune's "
                       "length); a recipe name or YAML file", metavar="RECIPE")
    lr: float = _opt(0.0, "the fine-tune's peak lr; 0: the recipe's", metavar="LR")
    val_split: int = _opt(5000, "the N images the model's training held out (--val-split of `resnetkit train`): "
                          "left out of the fine-tune and measured; 0: train on all, measure DATA's test split",
                          metavar="N")
    seed: int = _opt(0, "the training run's seed (it fixes which images were held out)", metavar="SEED")
    out_dir: str = _opt("runs/prune", "folder for the pruned model.safetensors, report.md and the evaluations",
                        metavar="DIR")
    device: str = _opt("auto", "'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1' ...")
    progress: bool = _opt(True, "progress bars")

    def __post_init__(self) -> None:
        if not 0 < self.ratio < 1:
            raise ValueError(f"ratio={self.ratio} must be between 0 and 1 (the fraction of MACs to keep)")
        if self.method not in PRUNE_METHODS:
            raise ValueError(f"method={self.method!r} is not one of {PRUNE_METHODS}")
        if self.fine_tune_epochs < 0:
            raise ValueError(f"fine_tune_epochs={self.fine_tune_epochs} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MIB = 1024 * 1024
SERVE_RUNTIMES = ("auto", "torch", "onnx", "openvino-int8")
API_KEY_ENV = "RESNETKIT_API_KEY"


@dataclass(frozen=True)
class ServeOptions:
    """``resnetkit serve``: limits and batching for ``create_app``; every field is a flag of the command."""

    top_k: int = 5  # the default top-k for requests that do not ask
    # auto: openvino-int8 when an INT8 ONNX file is given or sits beside the model file (as
    # `resnetkit export --int8` writes it) and OpenVINO is installed, else onnx, else torch.
    runtime: str = "auto"
    onnx_file: str | None = None  # an exported (fp32 or INT8) ONNX file of the model for onnx / openvino-int8
    # Dynamic batching: the worker takes what is queued, up to max_batch images, waiting at most
    # max_wait_ms after the first for more to arrive. max_batch=1 turns batching off.
    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 256  # images waiting for the model; beyond it requests get 503 + Retry-After
    preprocess_threads: int = 2  # decoding and resizing, off the event loop
    max_upload_bytes: int = 20 * MIB  # one image
    max_request_bytes: int = 32 * MIB  # one request body, all its images together
    max_files: int = 64  # images in one request
    max_pixels: int = 50_000_000  # width x height of one image, read from its header before decoding
    # None: no authentication (the server binds to 127.0.0.1 by default). Kept out of repr and logs.
    api_key: str | None = field(default=None, repr=False)
    graceful_timeout_s: float = 30.0  # on SIGTERM, how long in-flight requests may take to finish

    def __post_init__(self) -> None:
        if self.runtime not in SERVE_RUNTIMES:
            raise ValueError(f"runtime {self.runtime!r} is not one of {', '.join(SERVE_RUNTIMES)}")
        for name in ("top_k", "max_batch", "max_queue", "preprocess_threads", "max_upload_bytes",
                     "max_request_bytes", "max_files", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={self.max_wait_ms} must be >= 0")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError(f"the API key is empty; unset {API_KEY_ENV} or give a real key")

    def with_overrides(self, **overrides: Any) -> ServeOptions:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown serve option(s) {unknown}; choose from {sorted(known)}")
        return dataclasses.replace(self, **overrides)


STUDY_SCHEDULES = ("paper", "fast")


@dataclass
class StudyConfig:
    """The paper's CIFAR-10 study (section 4.2): which networks, on which data, with which schedule.

    Each (family, depth, seed) is one training run under ``out_dir``; ``epochs_scale`` shrinks every
    schedule in proportion (1.0 is the paper's 64k iterations) so the study fits a CPU.
    """

    data: str = "cifar10"  # anything ``resnetkit train --data`` takes
    out_dir: str = "runs/reproduce-cifar10"
    depths: tuple[int, ...] = (20, 32, 44, 56, 110)
    plain: bool = False  # also train the plain twin (no shortcuts) of every depth
    schedule: str = "paper"  # "paper": section 4.2 (recipe cifar10-paper); "fast": recipe cifar10-fast
    epochs_scale: float = 1.0  # every schedule length and milestone times this
    epochs: int = 0  # the fast schedule's length in epochs, instead of 26 x epochs_scale (0: use the scale)
    amp: str = ""  # mixed precision of every run (none, bf16, fp16); "": the recipe's
    seeds: int = 1  # runs per network, seeds 0 .. seeds-1 (mean and spread in the table)
    only: tuple[str, ...] = ()  # run only these runs (names or patterns: resnet20, plain*, resnet56-s1)
    val_split: int = 5000  # training images held out for validation, as the paper's 45k/5k split
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.schedule not in STUDY_SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is not one of {STUDY_SCHEDULES}")
        if not 0 < self.epochs_scale <= 10:
            raise ValueError(f"epochs_scale={self.epochs_scale} must be in (0, 10] (1.0 is the full schedule)")
        if self.seeds < 1:
            raise ValueError(f"seeds={self.seeds} must be >= 1")
        if self.epochs < 0 or (self.epochs and self.schedule != "fast"):
            raise ValueError(f"epochs={self.epochs}: a number of epochs sets the length of the fast schedule only; "
                             "scale the paper's 64k iterations with epochs_scale (--epochs-scale) instead")
        if self.amp not in ("", *AMP_MODES):
            raise ValueError(f"amp={self.amp!r} is not one of {AMP_MODES} (or empty for the recipe's)")
        if not self.depths:
            raise ValueError("depths is empty: give at least one depth, e.g. --depths 20 56")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        return _from_dict(cls, data, what="study config")


def cache_dir() -> Path:
    """Where resnetkit keeps downloads and derived data between runs: ``$RESNETKIT_CACHE``, or ``~/.cache/resnetkit``."""
    return Path(os.environ.get("RESNETKIT_CACHE") or Path.home() / ".cache" / "resnetkit").expanduser()


def recipe_path(name_or_path: str) -> Path:
    """A recipe by name (``cifar10-paper``) from the bundled recipes, or a YAML file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"recipe file {path} does not exist")
        return path
    bundled = Path(__file__).parent / "recipes" / f"{name_or_path}.yaml"
    if not bundled.exists():
        names = sorted(p.stem for p in bundled.parent.glob("*.yaml"))
        raise ValueError(f"unknown recipe {name_or_path!r}; bundled recipes are {names}, or pass a YAML file")
    return bundled


def load_train_config(recipe: str | None = None, **overrides: Any) -> TrainConfig:
    """A ``TrainConfig`` from a recipe, with ``overrides`` (any flag-named setting) applied on top."""
    import yaml

    values: dict[str, Any] = {}
    if recipe:
        path = recipe_path(recipe)
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"recipe {path} must be a mapping of TrainConfig settings (flags without --)")
        values.update(loaded)
    values.update(overrides)
    try:
        return TrainConfig.from_flat(values)
    except ValueError as e:
        raise ValueError(f"recipe {recipe or '(none)'}: {e}") from None
