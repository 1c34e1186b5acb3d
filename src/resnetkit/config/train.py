"""One training run in sections (data, model, augment, optim, schedule, finetune, run), and the recipes."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .fields import (Flag, JsonConfig, _from_dict, _opt, check_count, check_finite, check_flag, check_in_range,
                     config_flags)
from .model import ModelConfig, check_image_side, check_mean_std

AMP_MODES = ("auto", "bf16", "fp16", "none")
# torchvision's automatic augmentation policies (transforms.v2), by the name --auto-augment takes
AUTO_AUGMENTS = ("none", "trivialaugment", "randaugment", "autoaugment-imagenet", "autoaugment-cifar10",
                 "autoaugment-svhn", "augmix")


def check_amp(amp: str, *, recipe_default: bool = False) -> None:
    """``amp`` must name a precision; with ``recipe_default`` it may also be "" (a run takes its recipe's)."""
    if amp not in (("", *AMP_MODES) if recipe_default else AMP_MODES):
        raise ValueError(f"amp={amp!r} is not one of {AMP_MODES}" + (" (or empty for the recipe's)" if recipe_default
                                                                         else ""))


@dataclass(frozen=True)
class DataConfig(JsonConfig):
    """Which data, which split of it, and how it is read; ``data.load_data(DataConfig(...))`` loads it.

    - ``source``: ``"digits"``, ``"cifar10"``, ``"cifar100"``, or a path to a CIFAR folder/archive or
      an image folder/tar (``<class>/<image>``, optionally under ``train/`` and ``test/`` or ``val/``).
    - ``root``: where named CIFAR datasets live (default ``$RESNETKIT_DATA``, else ``$RESNETKIT_CACHE/datasets``).
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

    _what = "data config"

    source: str = _opt("digits", "a folder of class folders, a tar of one, a CSV of image,label rows, 'cifar10', "
                       "'cifar100', 'digits', or a CIFAR archive", flag="data")
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
        if self.image_size is not None:  # None: the data's own size
            check_image_side("image_size", self.image_size)
        if self.workers is not None:
            check_count("workers", self.workers, minimum=0, meaning="decoding threads")
        if self.mean or self.std:  # (): the data's own statistics
            check_mean_std(self.mean, self.std)
        if self.cifar100_labels not in ("fine", "coarse"):
            raise ValueError(f"cifar100_labels={self.cifar100_labels!r} must be 'fine' or 'coarse'")


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
    auto_augment: str = _opt("none", "torchvision's policy on each training image after the crop and flip: "
                             "trivialaugment (TrivialAugmentWide, torchvision's ResNet-50 v2 recipe), randaugment, "
                             "autoaugment-imagenet / -cifar10 / -svhn (Cubuk et al.'s learnt policies), augmix",
                             choices=AUTO_AUGMENTS)
    randaugment_ops: int = _opt(2, "randaugment: operations per image", metavar="N")
    randaugment_magnitude: int = _opt(9, "randaugment: strength of every operation, 0-30", metavar="M")
    cutout: int = _opt(0, "side in pixels of one square hole per image (16 for CIFAR-10 in DeVries & Taylor); 0: off")
    random_erasing: float = _opt(0.0, "probability per image of erasing a random rectangle (Zhong et al.); 0: off")
    erasing_scale: tuple[float, ...] = _opt((0.02, 0.33), "random erasing's area range, as fractions of the image")
    mixup_alpha: float = _opt(0.0, "mixup Beta(alpha, alpha) parameter; 0: off")
    cutmix_alpha: float = _opt(0.0, "CutMix Beta(alpha, alpha) parameter; 0: off")

    def __post_init__(self) -> None:
        # (the extra augmentations' ranges are checked where they are built, data/augment_extra.py)
        for name in ("lighting", "mixup_alpha", "cutmix_alpha"):
            check_finite(name, getattr(self, name))


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
    rmsprop_alpha: float = _opt(0.99, "RMSprop's squared-gradient average (Keras' rho, 0.9 there); momentum "
                                "applies too")
    label_smoothing: float = _opt(0.0, "label smoothing, as a probability mass in [0, 1)")
    head_l2: float = _opt(0.0, "L2 penalty on the head's weights alone, as Keras' kernel_regularizer=l2(x): adds x * "
                          "sum(w ** 2) of the classifier (and hidden head layer) to the loss; 0: off")
    ema_decay: float = _opt(0.0, "per-step decay of an exponential moving average of the weights, evaluated "
                            "instead; 0: off")
    grad_clip: float = _opt(0.0, "clip the global gradient L2 norm to this; 0: off")
    accumulate: int = _opt(1, "micro-batches of gradient accumulated per optimizer step")
    teacher: str = _opt("", "knowledge distillation: a model file or pretrained name (same classes) whose softened "
                        "outputs the network also learns from; '': none", metavar="MODEL")
    distill_alpha: float = _opt(0.5, "with --teacher: the weight of the teacher's soft targets in the loss (the "
                                "labels' loss gets 1 - alpha)", metavar="ALPHA")
    distill_temperature: float = _opt(4.0, "with --teacher: the softmax temperature of both networks' outputs",
                                      metavar="T")

    def __post_init__(self) -> None:
        check_count("batch_size", self.batch_size, minimum=1, meaning="images per optimizer step")
        check_count("accumulate", self.accumulate, minimum=1, meaning="micro-batches per optimizer step")
        check_finite("lr", self.lr)
        check_in_range("momentum", self.momentum, 0, 1)
        check_finite("weight_decay", self.weight_decay)
        check_flag("nesterov", self.nesterov)
        check_flag("decay_norm_and_bias", self.decay_norm_and_bias)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise ValueError(f"betas={self.betas!r} must be two numbers (Adam's beta1 beta2)")
        for beta in self.betas:
            check_in_range("betas", beta, 0, 1)
        check_in_range("eps", self.eps, 1e-30, 1, meaning="a small positive number")
        check_in_range("rmsprop_alpha", self.rmsprop_alpha, 0, 1, high_included=True)
        check_in_range("label_smoothing", self.label_smoothing, 0, 1)
        check_finite("head_l2", self.head_l2)
        check_in_range("ema_decay", self.ema_decay, 0, 1)
        check_finite("grad_clip", self.grad_clip)
        if not 0 <= self.distill_alpha <= 1 or not 0 < self.distill_temperature < math.inf:
            raise ValueError(f"distill_alpha={self.distill_alpha} must be in [0, 1] and "
                             f"distill_temperature={self.distill_temperature} a finite number > 0")


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

    def __post_init__(self) -> None:
        # A run of 0 epochs would replace a model file with an untrained network; 0 iterations means "use epochs".
        check_count("iterations", self.iterations, minimum=0, meaning="optimizer steps; 0: the length is epochs")
        if not self.iterations:  # the length is in epochs (with iterations set, epochs is not used)
            check_count("epochs", self.epochs, minimum=1, meaning="the training length; or set iterations")
        for name in ("milestones", "milestone_gammas"):
            if not isinstance(getattr(self, name), (tuple, list)):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a list of numbers ({name}: [0.5, 0.75])")
        for milestone in self.milestones:
            check_finite("milestones", milestone)
        for gamma in (self.gamma, *self.milestone_gammas):
            check_in_range("gamma", gamma, 1e-30, math.inf, meaning="an lr multiplier > 0")
        check_count("patience", self.patience, minimum=0, meaning="evaluations without a gain before lr drops")
        check_finite("warmup", self.warmup)
        check_finite("warmup_lr", self.warmup_lr)
        check_count("decay_steps", self.decay_steps, minimum=0, meaning="iterations per decay_rate step")
        check_in_range("decay_rate", self.decay_rate, 1e-30, math.inf, meaning="an lr multiplier > 0")
        check_flag("staircase", self.staircase)


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

    def __post_init__(self) -> None:
        check_count("freeze_epochs", self.freeze_epochs, minimum=0, meaning="epochs of the head-only stage; 0: none")
        check_in_range("lr_mult", self.lr_mult, 1, math.inf, meaning="the head's lr over the stem's; 1: one lr")
        check_flag("freeze_backbone", self.freeze_backbone)
        check_flag("freeze_bn", self.freeze_bn)


@dataclass(frozen=True)
class RunConfig:
    """Where and how the run executes: precision, device, seed, output, evaluation cadence."""

    amp: str = _opt("auto", "mixed precision: 'auto' (bf16 on CUDA; on a CPU the faster of bf16 and fp32, "
                          "measured), 'bf16', 'fp16' (CUDA) or 'none'", choices=AMP_MODES)
    channels_last: bool = _opt(True, "NHWC memory layout (faster convolutions on most hardware)")
    compile: bool = _opt(False, "torch.compile the model (slower start, faster steps)")
    grad_checkpointing: bool = _opt(False, "recompute each block's activations in the backward pass instead of "
                                    "keeping them: less memory per step (larger batches or images), slower steps")
    device: str = _opt("auto", "'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1' ...", metavar="DEVICE")
    sync_bn: bool = _opt(False, "SyncBatchNorm under multi-process (DDP) training")
    seed: int = _opt(0, "random seed for initialisation, data order and the validation split")
    workers: int = _opt(2, "loader processes for large images (small images are augmented in-process)")
    out_dir: str = _opt("runs/train", "folder for the checkpoint, model file, logs and report")
    resume: bool = _opt(False, "continue from OUT_DIR's last checkpoint")
    eval_every: int = _opt(1, "evaluate on the validation split every N epochs; 0: only at the end")
    progress: bool = _opt(True, "progress bars")

    def __post_init__(self) -> None:
        check_amp(self.amp)  # a recipe's typo fails here, not after the data has loaded
        check_count("seed", self.seed, minimum=0, maximum=2**32 - 1, meaning="the random seed")
        for name in ("channels_last", "compile", "sync_bn", "resume", "progress"):
            check_flag(name, getattr(self, name))
        check_count("workers", self.workers, minimum=0, meaning="loader processes; 0: load in the main process")
        check_count("eval_every", self.eval_every, minimum=0, meaning="epochs between evaluations; 0: at the end")


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

    def unused_settings(self) -> list[str]:
        """Settings that cannot take effect with the others (a recipe's, or a flag's), each with why: a run warns
        rather than refuses, since a recipe may set them for a schedule a flag then replaces."""
        sched, optim, augment = self.schedule, self.optim, self.augment
        unused = []
        if sched.milestone_gammas and sched.name != "step":
            unused.append(f"milestone_gammas {list(sched.milestone_gammas)}: only the step schedule uses them, not "
                          f"{sched.name!r}")
        if (sched.staircase or sched.decay_steps) and sched.name != "exponential":
            unused.append(f"staircase/decay_steps: only the exponential schedule uses them, not {sched.name!r}")
        if sched.warmup_lr and not sched.warmup:
            unused.append(f"warmup_lr {sched.warmup_lr:g}: there is no warm-up (--warmup 0)")
        if augment.auto_augment != "randaugment" and (augment.randaugment_ops, augment.randaugment_magnitude) != (
                AugmentConfig.randaugment_ops, AugmentConfig.randaugment_magnitude):
            unused.append(f"randaugment_ops/magnitude: the auto_augment policy is {augment.auto_augment!r}")
        if optim.lr == 0 and not sched.warmup_lr:
            unused.append("lr 0: nothing trains")
        return unused

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
        values = {name: _from_dict(type(section.default_factory()), data[name],  # type: ignore[misc]
                                   what=f"train config {name}")
                  for name, section in sections.items() if name in data}
        return cls(**values)


def recipe_path(name_or_path: str) -> Path:
    """A recipe by name (``cifar10-paper``) from the bundled recipes, or a YAML file path. A bundled name wins over a
    file or folder of that name in the working folder (an earlier ``--out-dir demo``); ``./NAME`` names the file."""
    path = Path(name_or_path)
    bundled = Path(__file__).parent.parent / "recipes" / f"{name_or_path}.yaml"
    if path.suffix not in (".yaml", ".yml") and "/" not in name_or_path and os.sep not in name_or_path \
            and bundled.is_file():
        return bundled
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"recipe file {path} does not exist")
        if not path.is_file():  # a folder, or a pipe that would block the read forever
            raise ValueError(f"recipe {path} is not a regular file; give a YAML file of settings or a bundled "
                             "recipe name")
        return path
    if not bundled.exists():
        names = sorted(p.stem for p in bundled.parent.glob("*.yaml"))
        raise ValueError(f"unknown recipe {name_or_path!r}; bundled recipes are {names}, or pass a YAML file")
    return bundled


def read_recipe(path: Path) -> dict[str, Any]:
    """A recipe file's settings; a file that is not a YAML mapping is refused with its name and what is wrong."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ValueError(f"recipe {path} is not a text file; give a YAML file of settings (lr: 0.1, epochs: 30 ...) "
                         "or a bundled recipe name") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)  # a parser error; a reader error (a control character) has none
        where = (f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None
                 else f" at character {e.position}" if isinstance(e, yaml.reader.ReaderError) else "")
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or type(e).__name__
        raise ValueError(f"recipe {path} is not valid YAML ({problem}{where}); fix the file, or use a bundled recipe "
                         "by name (demo, cifar10-fast, cifar10-paper ...)") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"recipe {path} holds a {type(loaded).__name__}, not a mapping of settings: write one "
                         "setting per line, named as the flags without -- (lr: 0.1, epochs: 30, batch_size: 128)")
    flags = TrainConfig.flags()
    for key, value in loaded.items():  # settings are values or flat lists of them; nesting (YAML aliases of
        # aliases: a few hundred bytes that expand to gigabytes) is refused
        items = value if isinstance(value, list) else [value]
        if len(items) > 10_000 or any(isinstance(item, (list, dict)) for item in items):
            raise ValueError(f"recipe {path}: setting {key!r} is not a value or a flat list of values; write it "
                             "as the flag takes it (milestones: [100, 150])")
        flag = flags.get(str(key))
        if flag is not None and value is None and flag.default is not None:  # `data:` with nothing after it
            raise ValueError(f"recipe {path}: setting {key!r} has no value; give one ({key}: ...) or delete the line")
        if flag is not None and flag.type is str and value is not None and not isinstance(value, str):
            # YAML reads `data: 2020-01-01` as a date and `data: [a, b]` as a list
            raise ValueError(f"recipe {path}: setting {key!r} is {value!r} (YAML read a {type(value).__name__}); it "
                             f"takes text: quote it ({key}: \"...\")")
        if flag is not None and flag.type in (int, float):
            loaded[key] = ([_number(item, flag.type) for item in value] if isinstance(value, list)
                           else _number(value, flag.type))
    return {str(key): value for key, value in loaded.items()}


def _number(value: Any, kind: type) -> Any:
    """A number written as YAML 1.1 reads it as text (``1e-3``, ``5e4``: without a dot PyYAML keeps a string) as the
    ``kind`` it is, as the command line's flags read it; anything else as it was (the config's checks name it)."""
    if not isinstance(value, str):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if kind is int and number.is_integer() else number


def load_train_config(recipe: str | None = None, **overrides: Any) -> TrainConfig:
    """A ``TrainConfig`` from a recipe, with ``overrides`` (any flag-named setting) applied on top."""
    values: dict[str, Any] = {}
    if recipe:
        path = recipe_path(recipe)
        values.update(read_recipe(path))
    values.update(overrides)
    try:
        return TrainConfig.from_flat(values)
    except ValueError as e:
        raise ValueError(f"recipe {recipe or '(none)'}: {e}") from None
