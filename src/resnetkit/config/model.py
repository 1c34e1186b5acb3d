"""The architecture (``ModelConfig``), the preprocessing stored with the weights, and what a model file carries."""

from __future__ import annotations

import math
import numbers
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from .fields import JsonConfig, _opt, check_count, check_in_range

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

VARIANTS = ("v1", "v1.5", "v2")
SHORTCUTS = ("A", "B", "C", "D", "none")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # the resize filters a preprocessing may name
# The largest image side resnetkit resizes to, in pixels: far beyond any real model's input (ImageNet models take
# 224-640), small enough that a typo (--input-size 20000) or a crafted model file (input_size 100000: a 30 GB
# tensor) is refused at once instead of running for minutes or exhausting memory.
MAX_IMAGE_SIDE = 8192
MAX_CLASSES = 1_000_000   # ImageNet-21k has 21,843; the largest classification heads in use have a few 100,000
MAX_IN_CHANS = 1024       # hyperspectral images have a few hundred bands
MAX_WIDTH = 64.0          # channel multiplier; wide_resnet28_10 is 10


def check_image_side(name: str, value: Any) -> None:
    """``value`` must be a whole number of pixels in [1, MAX_IMAGE_SIDE]; the error names ``name`` and the value."""
    check_count(name, value, minimum=1, maximum=MAX_IMAGE_SIDE, meaning="pixels")


MIN_STD = 1e-3  # Caffe's inputs on the 0-255 scale are std 1/255 = 0.0039 here; 1e-300 made every input infinite


def check_mean_std(mean: Any, std: Any) -> None:
    """Normalisation values: finite numbers, as many means as stds, every std at least ``MIN_STD`` (0 makes every
    input NaN, a tiny one infinite)."""
    def numbers_in(values: Any) -> bool:
        return isinstance(values, (tuple, list)) and len(values) > 0 and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values)

    if not numbers_in(mean) or not numbers_in(std) or len(mean) != len(std) or min(std) < MIN_STD:
        raise ValueError(f"mean={_shown(mean)} std={_shown(std)}: give a finite mean and a std >= {MIN_STD} for each "
                         "channel (RGB, on the 0-1 scale, e.g. mean 0.485 0.456 0.406 std 0.229 0.224 0.225)")


def _shown(values: Any) -> str:
    if not isinstance(values, (tuple, list)):
        return repr(values)
    return "[" + ", ".join(f"{v:.4g}" if isinstance(v, float) else repr(v) for v in values) + "]"


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Everything that fixes a network's architecture.

    ``arch`` is a registry name (``resnet50``, ``resnet20``, ``plain34`` ...); the other fields are the
    options ``create_model`` accepts. A field left at None takes the architecture's default (resnet20: v1,
    shortcut A, 10 classes; resnet50: v1.5, shortcut B, 1000 classes); ``models.resolve_config`` fills them
    in, and every built network and model file carries the resolved config. Two equal resolved configs
    always build identical architectures.
    """

    _what = "model config"

    arch: str = _opt("resnet20", "architecture name (see `resnetkit models`)", flag="model")
    num_classes: int | None = None
    in_chans: int = 3
    variant: str | None = _opt(None, "'v1' (paper), 'v1.5' (torchvision), 'v2' (pre-activation); default: the "
                               "architecture's", type=str)
    shortcut: str | None = _opt(None, "'A' zero-pad, 'B' projection when the shape changes, 'C' projection always, "
                                "'D' B with a 2x2 average pool doing the stride (ResNet-D, He et al. 2019), 'none'; "
                                "default: the architecture's", type=str)
    width: float | None = _opt(None, "channel width multiplier; default: the architecture's (10 for wide_resnet28_10, "
                               "else 1)", type=float)
    zero_init_residual: bool = _opt(False, "start each residual branch's last BN (or conv) at zero")
    drop_rate: float = _opt(0.0, "dropout probability before the classifier")
    drop_path_rate: float = _opt(0.0, "stochastic depth (Huang et al. 2016): the last residual block's probability "
                                 "of skipping its branch for a sample in a training step, rising linearly from 0 at "
                                 "the first block (timm's drop_path_rate); 0: off", metavar="P")
    head_hidden: int = _opt(0, "units of a hidden ReLU layer between the pooled features and the classifier (the "
                            "seeds' Dense(256, relu) head); 0: none", metavar="UNITS")

    def __post_init__(self) -> None:
        if self.variant is not None and self.variant not in VARIANTS:
            raise ValueError(f"variant={self.variant!r} is not one of {VARIANTS}")
        if self.shortcut is not None and self.shortcut not in SHORTCUTS:
            raise ValueError(
                f"shortcut={self.shortcut!r} is not one of {SHORTCUTS} "
                "(A: identity with zero-padded channels, B: projection when the shape changes, "
                "C: projection on every block, D: as B with a 2x2 average pool before a stride-1 projection, "
                "none: a plain network)"
            )
        if not isinstance(self.arch, str):
            raise ValueError(f"model name {self.arch!r} must be a string such as 'resnet50' (see `resnetkit models`)")
        # Upper bounds: far past any real network, so that a typo or a crafted model file is refused at once
        # instead of trying to allocate terabytes.
        if self.num_classes is not None:
            check_count("num_classes", self.num_classes, minimum=0, maximum=MAX_CLASSES,
                        meaning="0 removes the classifier")
        check_count("in_chans", self.in_chans, minimum=1, maximum=MAX_IN_CHANS, meaning="input channels")
        check_count("head_hidden", self.head_hidden, minimum=0, maximum=MAX_CLASSES,
                    meaning="units of the head's hidden layer; 0: none")
        if self.width is not None and not (isinstance(self.width, numbers.Real) and 0 < self.width <= MAX_WIDTH):
            raise ValueError(f"width={self.width!r} must be a number > 0 and <= {MAX_WIDTH} (a channel multiplier: "
                             "1 is the paper's network, 10 wide_resnet28_10's)")
        check_in_range("drop_rate", self.drop_rate, 0.0, 1.0, meaning="dropout probability before the classifier")
        check_in_range("drop_path_rate", self.drop_path_rate, 0.0, 1.0,
                       meaning="the last block's probability of skipping its residual branch")

    @property
    def resolved(self) -> bool:
        """True when no field is left to the architecture's default (as in a built network or a model file)."""
        return None not in (self.num_classes, self.variant, self.shortcut, self.width)


@dataclass(frozen=True)
class Preprocess(JsonConfig):
    """How an image becomes the model's input: resize the shorter side, centre-crop, normalise.

    Stored with the weights so inference can never drift from training.
    """

    _what = "preprocess"

    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        # A model file's metadata comes through here too: a crafted or damaged one is refused before any work.
        check_image_side("input_size", self.input_size)
        check_image_side("resize_size", self.resize_size)
        check_mean_std(self.mean, self.std)
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")


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

    def held_out_split(self, val_split: int | None = None, seed: int | None = None) -> tuple[int, int]:
        """(val_split, seed) of the images the model's training held out: as given, else as the file records them
        (``resnetkit train`` writes both), else 0."""
        return (val_split if val_split is not None else _recorded_count(self.extra, "val_split"),
                seed if seed is not None else _recorded_count(self.extra, "split_seed"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        names = data.get("class_names", [])
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ValueError(f"class_names must be a list of strings, got {str(names)[:80]}")
        return cls(
            model=ModelConfig.from_dict(data["model"]),
            class_names=check_class_names(names, "class_names"),
            preprocess=Preprocess.from_dict(data.get("preprocess", {})),
            extra=dict(data.get("extra", {})),
        )


def _recorded_count(extra: dict[str, Any], key: str) -> int:
    """A whole number >= 0 the model file records (0 when absent); ``ValueError`` naming it for anything else (a
    crafted or damaged file: ``Infinity``, ``-3``, ``"many"``)."""
    value = extra.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or not 0 <= value < 2**63:
        raise ValueError(f"the model file records {key} {str(value)[:40]!r}, not a whole number >= 0; give "
                         f"--{key.replace('_', '-').replace('split-seed', 'seed')} yourself")
    return int(value)


def check_class_names(names: list[str], where: str) -> list[str]:
    """``names`` as a list, refusing a name with a control character (a newline, NUL, escape): it would break the
    lines of a report, a CSV or a terminal and an HTTP header, and no dataset's class is named so."""
    for index, name in enumerate(names):
        if any(unicodedata.category(char) == "Cc" for char in name):
            raise ValueError(f"{where}: class {index} {name[:40]!r} holds a control character (newline, tab, NUL "
                             "...); name it in printable characters")
    return list(names)
