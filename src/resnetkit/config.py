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


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a network's architecture.

    ``arch`` is a registry name (``resnet50``, ``resnet20``, ``plain34`` ...); the other fields are the
    options ``create_model`` accepts. Two equal configs always build identical architectures.
    """

    arch: str
    num_classes: int = 1000
    in_chans: int = 3
    variant: str = "v1.5"
    shortcut: str = "B"
    width: float = 1.0
    zero_init_residual: bool = False
    drop_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant={self.variant!r} is not one of {VARIANTS}")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(
                f"shortcut={self.shortcut!r} is not one of {SHORTCUTS} "
                "(A: identity with zero-padded channels, B: projection when the shape changes, "
                "C: projection on every block, none: a plain network)"
            )
        if self.num_classes < 0:
            raise ValueError(f"num_classes={self.num_classes} must be >= 0 (0 removes the classifier)")
        if self.in_chans < 1:
            raise ValueError(f"in_chans={self.in_chans} must be >= 1")
        if self.width <= 0:
            raise ValueError(f"width={self.width} must be > 0")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate={self.drop_rate} must be in [0, 1)")

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


def _opt(default: Any, help: str) -> Any:
    """A field whose help text (units, meaning) lives beside its default; the CLI builds its flags from both."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """One training run, fully: the recipe YAML fills it, CLI flags override any field.

    Units: ``lr`` per 256 images is NOT applied implicitly; ``lr`` is the rate at ``batch_size``.
    Schedule lengths are in epochs unless ``iterations`` is set (the paper's CIFAR recipe counts
    iterations: 64k at batch 128, lr /10 at 32k and 48k).
    """

    # data
    data: str = _opt("digits", "a folder of class folders, a tar of one, 'cifar10', 'cifar100', 'digits', or a CIFAR "
                     "archive")
    val_split: int = _opt(0, "images held out of the training split for validation (stratified, seeded); 0: none")
    augment: str = _opt("auto", "'pad-crop-flip' (paper CIFAR), 'pad-crop', 'flip', 'none' (small images, batch-wise); "
                        "'scale' (paper ImageNet), 'rrc' (RandomResizedCrop) (large images, loader workers); 'auto': "
                        "pad-crop for digits, pad-crop-flip up to 64 px, rrc for larger photos")
    image_size: int = _opt(0, "training image size in pixels; 0: the dataset's own (32 for CIFAR)")
    cifar100_labels: str = _opt("fine", "CIFAR-100: 'fine' (100 classes) or 'coarse' (20 superclasses)")
    lighting: float = _opt(0.0, "large images: std of AlexNet's PCA colour noise (0.1 in the paper's ImageNet recipe)")
    workers: int = _opt(2, "loader processes for large images (small images are augmented in-process)")
    # further augmentations, on top of `augment` (small images batch-wise, large ones in the workers); 0 is off
    rotation: float = _opt(0.0, "degrees: rotation angle uniform in [-rotation, rotation]; 0: off")
    width_shift: float = _opt(0.0, "fraction of the width (Keras' width_shift_range), border pixels replicated; 0: off")
    height_shift: float = _opt(0.0, "fraction of the height (Keras' height_shift_range); 0: off")
    brightness: float = _opt(0.0, "brightness factor uniform in [1 - x, 1 + x]; 0: off")
    contrast: float = _opt(0.0, "contrast factor uniform in [1 - x, 1 + x]; 0: off")
    cutout: int = _opt(0, "side in pixels of one square hole per image (16 for CIFAR-10 in DeVries & Taylor); 0: off")
    random_erasing: float = _opt(0.0, "probability per image of erasing a random rectangle (Zhong et al.); 0: off")
    erasing_scale: tuple[float, ...] = _opt((0.02, 0.33), "random erasing's area range, as fractions of the image")
    # model
    model: str = _opt("resnet20", "architecture name (see `resnetkit models`)")
    variant: str = _opt("", "'v1' (paper), 'v1.5' (torchvision), 'v2' (pre-activation); '': the architecture's default")
    shortcut: str = _opt("", "'A' zero-pad, 'B' projection when the shape changes, 'C' projection always, 'none'; "
                         "'': the architecture's default")
    width: float = _opt(0.0, "channel width multiplier; 0: the architecture's default (10 for wide_resnet28_10, else 1)")
    zero_init_residual: bool = _opt(False, "start each residual branch's last BN (or conv) at zero")
    drop_rate: float = _opt(0.0, "dropout probability before the classifier")
    pretrained: str = _opt("", "weights to start from: a file, a URL or a pretrained name; the head is reset if the "
                           "class count differs; '': random init")
    freeze_backbone: bool = _opt(False, "train the classifier only (feature extraction)")
    freeze_bn: bool = _opt(False, "keep BatchNorm on its running statistics (small-batch fine-tuning)")
    # fine-tuning (`resnetkit finetune`, train/finetune.py): a head-only stage with the body and its BatchNorm
    # frozen, then everything with discriminative lrs; mean/std: normalise as the pretrained model did
    freeze_epochs: int = _opt(0, "with --pretrained: epochs of a head-only first stage (body and BN frozen); 0: none")
    lr_mult: float = _opt(1.0, "discriminative lrs: they rise geometrically from lr/lr_mult (stem, first stage) to lr "
                          "(head); 1: one lr")
    classes: str = _opt("", "class-name file (one per line, or a JSON list) naming the data's classes in label order; "
                        "'': the folder names")
    mean: tuple[float, ...] = _opt((), "per-channel input mean in [0, 1] (as the pretrained model was trained); (): "
                                   "the data's own statistics")
    std: tuple[float, ...] = _opt((), "per-channel input std in [0, 1]; (): the data's own statistics")
    # optimisation
    epochs: int = _opt(30, "training length in epochs (ignored when --iterations is set)")
    iterations: int = _opt(0, "training length in iterations (optimizer steps) instead of epochs; 0: use --epochs")
    batch_size: int = _opt(128, "images per optimizer step")
    lr: float = _opt(0.1, "learning rate at --batch-size (not rescaled per 256 images)")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(False, "Nesterov momentum")
    weight_decay: float = _opt(1e-4, "L2 weight decay per step")
    decay_norm_and_bias: bool = _opt(True, "also decay BN parameters and biases")
    label_smoothing: float = _opt(0.0, "label smoothing, as a probability mass in [0, 1)")
    mixup_alpha: float = _opt(0.0, "mixup Beta(alpha, alpha) parameter; 0: off")
    cutmix_alpha: float = _opt(0.0, "CutMix Beta(alpha, alpha) parameter; 0: off")
    ema_decay: float = _opt(0.0, "per-step decay of an exponential moving average of the weights, evaluated "
                            "instead; 0: off")
    grad_clip: float = _opt(0.0, "clip the global gradient L2 norm to this; 0: off")
    accumulate: int = _opt(1, "micro-batches of gradient accumulated per optimizer step")
    optimizer: str = _opt("sgd", "'sgd', 'adam', 'adamw' or 'rmsprop' (torch.optim's; every schedule works with each)")
    betas: tuple[float, ...] = _opt((0.9, 0.999), "Adam/AdamW moment decays")
    eps: float = _opt(1e-8, "Adam/AdamW/RMSprop denominator term (Keras' default is 1e-7)")
    rmsprop_alpha: float = _opt(0.99, "RMSprop's squared-gradient average (Keras' rho, 0.9 there); momentum applies too")
    schedule: str = _opt("step", "'step' (milestones), 'cosine', 'onecycle', 'constant', 'plateau' (lr x gamma when "
                         "validation top-1 stalls), 'exponential' (decay_rate ** (iteration / decay_steps))")
    milestones: tuple[float, ...] = _opt((0.5, 0.75), "step schedule: where lr is multiplied by gamma, as fractions "
                                         "of the run (<=1) or absolute epochs/iterations")
    gamma: float = _opt(0.1, "lr multiplier at each milestone (or plateau)")
    patience: int = _opt(5, "'plateau': evaluations without a 0.1-point top-1 gain before lr drops")
    warmup: float = _opt(0.0, "linear warm-up length, in epochs (iterations when --iterations is set)")
    warmup_lr: float = _opt(0.0, "constant warm-up at this lr instead of linear (ResNet-110: 0.01 for 400 "
                            "iterations); 0: linear")
    decay_steps: int = _opt(0, "'exponential': lr x decay_rate every decay_steps iterations (Keras' ExponentialDecay)")
    decay_rate: float = _opt(0.9, "'exponential': the lr multiplier per decay_steps")
    staircase: bool = _opt(False, "'exponential': drop in whole steps, not continuously")
    # speed and reproducibility
    amp: str = _opt("bf16", "mixed precision: 'bf16', 'fp16' (CUDA) or 'none'")
    channels_last: bool = _opt(True, "NHWC memory layout (faster convolutions on most hardware)")
    compile: bool = _opt(False, "torch.compile the model (slower start, faster steps)")
    device: str = _opt("auto", "'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1' ...")
    sync_bn: bool = _opt(False, "SyncBatchNorm under multi-process (DDP) training")
    seed: int = _opt(0, "random seed for initialisation, data order and the validation split")
    # output
    out_dir: str = _opt("runs/train", "folder for the checkpoint, model file, logs and report")
    resume: bool = _opt(False, "continue from OUT_DIR's last checkpoint")
    eval_every: int = _opt(1, "evaluate on the validation split every N epochs; 0: only at the end")
    progress: bool = _opt(True, "progress bars")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, data, what="train config")


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
    """A ``TrainConfig`` from a recipe, with ``overrides`` (any field) applied on top."""
    import yaml

    values: dict[str, Any] = {}
    if recipe:
        path = recipe_path(recipe)
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"recipe {path} must be a mapping of TrainConfig fields")
        values.update(loaded)
    values.update(overrides)
    try:
        return TrainConfig.from_dict(values)
    except ValueError as e:
        raise ValueError(f"recipe {recipe or '(none)'}: {e}") from None
