"""Typed configuration for resnetkit.

Every dataclass here round-trips through plain JSON (``to_dict`` / ``from_dict``), so a model file,
a training report or a checkpoint records exactly what produced it. YAML recipes and CLI flags only
fill these in. This module imports nothing else from resnetkit.
"""

from __future__ import annotations

import dataclasses
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


@dataclass
class TrainConfig:
    """One training run, fully: the recipe YAML fills it, CLI flags override any field.

    Units: ``lr`` per 256 images is NOT applied implicitly; ``lr`` is the rate at ``batch_size``.
    Schedule lengths are in epochs unless ``iterations`` is set (the paper's CIFAR recipe counts
    iterations: 64k at batch 128, lr /10 at 32k and 48k).
    """

    # data
    data: str = "digits"  # a folder, a tar of a folder tree, "cifar10", "cifar100", "digits", or a CIFAR archive
    val_split: int = 0  # hold out this many training images (stratified, seeded) for validation
    # "pad-crop-flip" (paper CIFAR), "pad-crop", "flip", "none" (small images, batch-wise);
    # "scale" (paper ImageNet), "rrc" (RandomResizedCrop) (large images, loader workers);
    # "auto": pad-crop for digits, pad-crop-flip for CIFAR and images up to 64 px, rrc for larger photos
    augment: str = "auto"
    image_size: int = 0  # 0: the dataset's own size (32 for CIFAR)
    cifar100_labels: str = "fine"  # CIFAR-100: "fine" (100 classes) or "coarse" (20 superclasses)
    lighting: float = 0.0  # large images: std of AlexNet's PCA colour noise (0.1 in the paper's ImageNet recipe)
    workers: int = 2  # loader processes for large images (small images are augmented in-process, batch-wise)
    # model
    model: str = "resnet20"
    variant: str = ""  # "" keeps the registry default
    shortcut: str = ""
    width: float = 0.0  # 0 keeps the registry default (10 for wide_resnet28_10, 1 for the others)
    zero_init_residual: bool = False
    drop_rate: float = 0.0
    pretrained: str = ""  # weight file or URL to start from (fine-tuning); the head is reset if sizes differ
    freeze_backbone: bool = False  # feature extraction: train the classifier only
    freeze_bn: bool = False  # keep BatchNorm in eval mode (running statistics), for small-batch fine-tuning
    # fine-tuning (`resnetkit finetune`, train/finetune.py): a head-only stage with the body and its BatchNorm
    # frozen, then everything with discriminative lrs; mean/std: normalise as the pretrained model did
    freeze_epochs: int = 0  # >0 (with pretrained): epochs of the head-only first stage
    lr_mult: float = 1.0  # >1: lrs rise geometrically from lr/lr_mult (stem, first stage) to lr (head)
    classes: str = ""  # class-name file (one per line, or JSON) naming the data's classes in label order
    mean: tuple[float, ...] = ()  # () normalises with the data's own statistics
    std: tuple[float, ...] = ()
    # optimisation
    epochs: int = 30
    iterations: int = 0  # >0: train for this many iterations instead of epochs (the paper's CIFAR schedule)
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = True  # False: no weight decay on BN parameters and biases
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema_decay: float = 0.0  # >0: keep an exponential moving average of the weights and evaluate it
    grad_clip: float = 0.0  # >0: clip the global gradient norm
    accumulate: int = 1  # gradient accumulation steps
    # schedule: "step" (milestones), "cosine", "onecycle", "constant", "plateau" (lr x gamma when val top-1 stalls)
    schedule: str = "step"
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the run (<=1) or absolute epochs/iterations
    gamma: float = 0.1
    patience: int = 5  # "plateau": the lr drops after more than this many evaluations without a 0.1-point gain
    warmup: float = 0.0  # linear warm-up length, in epochs (or iterations when ``iterations`` is set)
    warmup_lr: float = 0.0  # >0: a constant warm-up at this lr instead of linear (ResNet-110: 0.01 for 400 its)
    # speed and reproducibility
    amp: str = "bf16"  # "bf16", "fp16" (CUDA), "none"
    channels_last: bool = True
    compile: bool = False
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1" ...
    sync_bn: bool = False  # SyncBatchNorm under DDP
    seed: int = 0
    # output
    out_dir: str = "runs/train"
    resume: bool = False
    eval_every: int = 1  # evaluate on the validation split every N epochs (0: only at the end)
    progress: bool = True

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
