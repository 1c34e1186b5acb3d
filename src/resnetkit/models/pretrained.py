"""Named weights: one catalog of trained networks, each with its source, digest, preprocessing and card.

A name is ``<arch>_<tag>``: ``resnet20_cifar10`` (a file shipped in ``resnetkit/weights/``),
``resnet50_imagenet1k_v2`` (torchvision's, derived from torchvision's own weight enums so URL, digest,
resize size and accuracy are never copied), ``seresnet50_a1_in1k`` (timm's). ``load_model`` takes a
name wherever it takes a file, so ``predict``, ``eval``, ``export`` and ``serve`` accept it too, and
``create_model("resnet20", pretrained="cifar10")`` returns the trained network.

A shipped network is two files in ``resnetkit/weights/``: ``NAME.safetensors`` (a ``save_model`` file,
which carries its own class names and preprocessing) and ``NAME.json``, its entry:
``{"arch": "resnet56", "tag": "cifar10", "sha256": "...", "card": {"top1": 93.0, "evaluated_on": ...}}``.
An entry counts as available only when its file is there.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..config import ModelInfo, Preprocess
from ..files import file_sha256, is_url, write_text_atomic
from .registry import create_model, list_models
from .resnet import ResNet
from .state_dict import WeightFileError, classifier_classes, load_state_dict_file, load_weights
from .weights import load_model_file, read_model_info, resolve_weight_path, save_model

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _imagenet_classes() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


# Class-name lists by reference: an entry names its list, the names live here once.
CLASS_LISTS: dict[str, Callable[[], list[str]]] = {
    "imagenet1k": _imagenet_classes,
    "cifar10": lambda: list(CIFAR10_CLASSES),
}


@dataclass(frozen=True)
class WeightEntry:
    """One named set of trained weights.

    ``source`` is an http(s)/file URL, or a file name inside ``resnetkit/weights/``. ``sha256`` is the
    full hex digest, or the prefix a publisher puts in its file names (torchvision and timm use 8 hex
    digits, as ``torch.hub`` checks them). ``preprocess``/``classes`` None/"" mean "the file's own"
    (a resnetkit model file stores both); foreign state dicts need them here.
    """

    name: str
    arch: str
    tag: str
    source: str
    sha256: str
    card: Mapping[str, Any] = field(default_factory=dict)
    preprocess: Preprocess | None = None
    classes: str = ""

    @property
    def shipped(self) -> bool:
        return not is_url(self.source)

    @property
    def available(self) -> bool:
        """Shipped: the file is in the package. URL entries: downloadable (cached after the first use)."""
        return not self.shipped or (WEIGHTS_DIR / self.source).is_file()

    def matches(self, digest: str) -> bool:
        return bool(self.sha256) and digest.lower().startswith(self.sha256.lower())

    def class_names(self) -> list[str]:
        return CLASS_LISTS[self.classes]() if self.classes else []

    def local_path(self, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
        """The weight file on this machine: the shipped file (digest checked) or the cached download."""
        if not self.shipped:
            return resolve_weight_path(self.source, cache_dir=cache_dir, sha256=self.sha256)
        path = WEIGHTS_DIR / self.source
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: its file {path} is not installed; reinstall resnetkit, or see "
                                    "`resnetkit models --pretrained` for the networks this install has")
        if not self.matches(file_sha256(path)):
            raise WeightFileError(f"{path}: its SHA-256 does not match the catalog entry {self.name}; the "
                                  "installed file is damaged: reinstall resnetkit")
        return path


_BUILTIN: list[WeightEntry] = []


def register_weights(entry: WeightEntry) -> None:
    """Add an entry to the catalog (for weights of your own; shipped ones are read from ``WEIGHTS_DIR``)."""
    if entry.arch not in list_models():
        raise ValueError(f"weights {entry.name!r}: unknown architecture {entry.arch!r}")
    if entry.classes and entry.classes not in CLASS_LISTS:
        raise ValueError(f"weights {entry.name!r}: unknown class list {entry.classes!r}; known: {sorted(CLASS_LISTS)}")
    if any(e.name == entry.name for e in _BUILTIN):
        raise ValueError(f"weights name {entry.name!r} is already registered")
    _BUILTIN.append(entry)


def _hash_prefix(url: str) -> str:
    """The SHA-256 prefix torch.hub's convention puts in a file name: ``resnet50-11ad3fa6.pth``."""
    match = re.search(r"-([a-f0-9]{8,})\.", url.rsplit("/", 1)[-1])
    return match.group(1) if match else ""


@functools.cache
def _torchvision_entries() -> tuple[WeightEntry, ...]:
    """torchvision's ImageNet weights for every architecture both libraries name alike (same layout and keys)."""
    from torchvision.models import get_model_weights, list_models as torchvision_models

    entries = []
    shared = sorted(set(list_models()) & set(torchvision_models()))
    for arch in shared:
        for weights in get_model_weights(arch):
            transform = weights.transforms()  # ImageClassification: the resize/crop/interpolation they were measured with
            metrics = weights.meta["_metrics"]["ImageNet-1K"]
            preprocess = Preprocess(input_size=transform.crop_size[0], resize_size=transform.resize_size[0],
                                    mean=tuple(transform.mean), std=tuple(transform.std),  # type: ignore[arg-type]
                                    interpolation=transform.interpolation.value)
            tag = weights.name.lower()
            card = {"source": "torchvision", "dataset": "ImageNet-1K", "top1": metrics["acc@1"],
                    "top5": metrics["acc@5"], "evaluated_on": "ImageNet-1K validation (50,000 images)",
                    "recipe": weights.meta.get("recipe", ""), "num_params": weights.meta.get("num_params")}
            entries.append(WeightEntry(f"{arch}_{tag}", arch, tag, weights.url, _hash_prefix(weights.url), card,
                                       preprocess, "imagenet1k"))
    return tuple(entries)


# timm's ImageNet weights published with a hash in the file name (the ones on the Hugging Face hub alone have none
# to check a download against), in timm's order, so its default comes first. Each is evaluated as timm's own eval
# transform does: bicubic, the shorter side resized to floor(input / crop fraction), then the centre crop (the
# "ResNet strikes back" ones, A1-A3: crop fraction 0.95, 224 -> 235). Their accuracy is in timm's results tables,
# which are not installed with timm: the cards leave it out rather than quote a number nobody here checked.
_RSB = "https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-rsb-weights"
_TIMM = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights"
_GLUON = "https://github.com/rwightman/pytorch-pretrained-gluonresnet/releases/download/v0.1"
_TIMM_RECIPES = {"a1": "ResNet strikes back, A1 (arXiv:2110.00476)", "a2": "ResNet strikes back, A2 (arXiv:2110.00476)",
                 "a3": "ResNet strikes back, A3 (arXiv:2110.00476)", "ra2": "timm's RandAugment recipe RA2",
                 "bt": "timm's Bag-of-Tricks recipe", "gluon": "GluonCV (MXNet), ported by timm"}
TIMM_WEIGHTS = (  # (arch, tag, URL, input size, resize size)
    ("resnet50", "a1_in1k", f"{_RSB}/resnet50_a1_0-14fe96d1.pth", 224, 235),
    ("seresnet50", "a1_in1k", f"{_RSB}/seresnet50_a1_0-ffa00869.pth", 224, 235),
    ("resnet18d", "ra2_in1k", f"{_TIMM}/resnet18d_ra2-48a79e06.pth", 224, 256),
    ("resnet26d", "bt_in1k", f"{_TIMM}/resnet26d-69e92c46.pth", 224, 256),
    ("resnet34d", "ra2_in1k", f"{_TIMM}/resnet34d_ra2-f8dcfcaf.pth", 224, 256),
    ("resnet50d", "ra2_in1k", f"{_TIMM}/resnet50d_ra2-464e36ba.pth", 224, 256),
    ("resnet50d", "a1_in1k", f"{_RSB}/resnet50d_a1_0-e20cff14.pth", 224, 235),
    ("resnet50d", "a2_in1k", f"{_RSB}/resnet50d_a2_0-a3adc64d.pth", 224, 235),
    ("resnet50d", "a3_in1k", f"{_RSB}/resnet50d_a3_0-403fdfad.pth", 160, 168),  # trained at 160
    ("resnet50d", "gluon_in1k", f"{_GLUON}/gluon_resnet50_v1d-818a1b1b.pth", 224, 256),
    ("resnet101d", "ra2_in1k", f"{_TIMM}/resnet101d_ra2-2803ffab.pth", 256, 269),
    ("resnet101d", "gluon_in1k", f"{_GLUON}/gluon_resnet101_v1d-0f9c8644.pth", 224, 256),
    ("resnet152d", "ra2_in1k", f"{_TIMM}/resnet152d_ra2-5cac0439.pth", 256, 269),
    ("resnet152d", "gluon_in1k", f"{_GLUON}/gluon_resnet152_v1d-bd354e12.pth", 224, 256),
    ("resnet200d", "ra2_in1k", f"{_TIMM}/resnet200d_ra2-bdba9bf9.pth", 256, 269),
)
for _arch, _tag, _url, _input, _resize in TIMM_WEIGHTS:
    register_weights(WeightEntry(
        f"{_arch}_{_tag}", _arch, _tag, _url, _hash_prefix(_url),
        {"source": "timm", "dataset": "ImageNet-1K", "recipe": _TIMM_RECIPES[_tag.split("_")[0]]},
        Preprocess(input_size=_input, resize_size=_resize, interpolation="bicubic"), "imagenet1k"))


def _shipped_entries() -> list[WeightEntry]:
    """Entries for the networks shipped in ``WEIGHTS_DIR``: one ``NAME.json`` beside each ``NAME.safetensors``."""
    entries = []
    cards = sorted(p for p in WEIGHTS_DIR.glob("*.json") if not p.name.startswith(".")) if WEIGHTS_DIR.is_dir() else []
    for card_path in cards:  # a hidden .NAME.json...tmp.json is a card being written
        name = card_path.stem
        try:
            data = json.loads(card_path.read_text())
            _check_card(data)
            entries.append(WeightEntry(name, data["arch"], data["tag"], data.get("file", f"{name}.safetensors"),
                                       data["sha256"], data.get("card", {}),
                                       Preprocess.from_dict(data["preprocess"]) if "preprocess" in data else None,
                                       data.get("classes", "")))
        except Exception as error:  # noqa: BLE001 - one damaged card must not take every other model with it
            warnings.warn(f"{card_path}: a damaged model card ({type(error).__name__}: {error}); {name} is not "
                          "offered: reinstall resnetkit", stacklevel=2)
    return entries


def _check_card(data: Any) -> None:
    """``TypeError`` naming the field of a shipped card that is not what the listing and the loader read."""
    if not isinstance(data, dict):
        raise TypeError(f"the card is a {type(data).__name__}, not an object")
    for key in ("arch", "tag", "sha256", "file", "classes"):
        if key in data and not isinstance(data[key], str):
            raise TypeError(f"{key} is a {type(data[key]).__name__}, not text")
    if "sha256" in data and not re.fullmatch(r"[0-9a-f]{64}", data["sha256"]):
        raise TypeError("sha256 is not 64 hex digits")
    card = data.get("card", {})
    if not isinstance(card, dict):
        raise TypeError(f"card is a {type(card).__name__}, not an object")
    top1 = card.get("top1")
    if top1 is not None and (isinstance(top1, bool) or not isinstance(top1, (int, float)) or not math.isfinite(top1)):
        raise TypeError(f"card.top1 is {str(top1)[:20]!r}, not a number")


def ship_weights(model_file: str | os.PathLike[str], *, tag: str, card: dict[str, Any],
                 directory: str | os.PathLike[str] | None = None, half: bool = True) -> Path:
    """Add a trained model file to the shipped networks as ``<arch>_<tag>``: the tensors stored in fp16 when
    ``half`` (half the bytes; the network is rebuilt in fp32 when loaded, so it computes as before), its class
    names and preprocessing kept, and ``NAME.json`` beside it with the SHA-256 and the model ``card``
    (top-1, recipe, epochs, wall time, machine, command). Returns the weight file's path."""
    model, info = load_model_file(model_file)
    folder = Path(directory) if directory is not None else WEIGHTS_DIR
    name = f"{info.model.arch}_{tag}"
    path = save_model(model.half() if half else model, folder / f"{name}.safetensors", info=info)
    entry = {"arch": info.model.arch, "tag": tag, "sha256": file_sha256(path), "card": card}
    write_text_atomic(folder / f"{name}.json", json.dumps(entry, indent=2) + "\n")
    return path


def list_weights(pattern: str = "*", *, available_only: bool = True) -> list[WeightEntry]:
    """Every catalog entry whose name or architecture matches the shell-style ``pattern`` (shipped ones only when
    their file is installed), shipped first, then by name."""
    import fnmatch

    entries = [*_shipped_entries(), *_BUILTIN, *_torchvision_entries()]
    entries = [e for e in entries if (e.available or not available_only)
               and (fnmatch.fnmatch(e.name, pattern) or fnmatch.fnmatch(e.arch, pattern))]
    return sorted(entries, key=lambda e: (not e.shipped, e.name))


def get_weights(name: str) -> WeightEntry | None:
    """The available entry called ``name`` (a shipped one only when its file is installed), or None."""
    return next((e for e in list_weights() if e.name == name), None)


def close_model_names(name: str) -> str:
    """``"; did you mean ...?"`` with the architecture and pretrained names closest to a mistyped ``name``, or
    "" (also for what looks like a path: a missing file is a missing file)."""
    import difflib

    if os.sep in name or "/" in name or Path(name).suffix:
        return ""
    close = difflib.get_close_matches(name, [*list_models(), *(e.name for e in list_weights())], n=4, cutoff=0.75)
    return f"; did you mean {', '.join(close)}?" if close else ""


def weights_of(arch: str) -> list[WeightEntry]:
    """The available entries of one architecture, in the listing's order (shipped first)."""
    return [e for e in list_weights() if e.arch == arch]


def find_weights(arch: str, tag: str) -> WeightEntry:
    """The entry for ``create_model(arch, pretrained=tag)``, or a ValueError listing what ``arch`` has."""
    entry = get_weights(f"{arch}_{tag}")
    if entry is None or entry.arch != arch:
        tags = [e.tag for e in weights_of(arch)]
        raise ValueError(f"no pretrained weights {tag!r} for {arch}; available: {tags or 'none'} "
                         "(see `resnetkit models --pretrained`)")
    return entry


def default_weights(arch: str) -> WeightEntry:
    """The weights ``create_model(arch, pretrained=True)`` loads: the most accurate of ``arch``'s entries by their
    card's top-1 (torchvision's ``DEFAULT``: its v2 ImageNet weights); entries without a measured top-1 come
    last, and a tie goes to the one listed first (shipped before downloaded). Each top-1 is on its own data: an
    architecture with weights for two datasets (none has today) should be asked for by tag."""
    entries = weights_of(arch)
    if not entries:
        raise ValueError(f"no pretrained weights for {arch} (see `resnetkit models --pretrained`); "
                         "create it without pretrained= and train or fine-tune it")
    # max() returns the first of equal keys: the tie-break is the listing order.
    return max(entries, key=lambda e: (e.card.get("top1") is not None, e.card.get("top1") or 0.0))


def identify_weights(path: str | os.PathLike[str], *, arch: str | None = None) -> WeightEntry | None:
    """The catalog entry a weight file is a copy of (matched by SHA-256), or None for an unknown file."""
    digest = file_sha256(path)
    return next((e for e in list_weights(available_only=False)
                 if e.matches(digest) and (arch is None or e.arch == arch)), None)


def load_entry(entry: WeightEntry, *, map_location: str | torch.device = "cpu",
               cache_dir: str | os.PathLike[str] | None = None) -> tuple[ResNet, ModelInfo]:
    """Build and load a catalog entry's network; its info carries the entry's preprocessing and class names."""
    path = entry.local_path(cache_dir=cache_dir)
    if _is_resnetkit_file(path):
        model, info = load_model_file(path, map_location=map_location)
    else:
        state = load_state_dict_file(path)
        model = create_model(entry.arch, num_classes=classifier_classes(state, source=str(path)) or None)
        load_weights(model, state, source=f"{path} ({entry.name})")
        model = model.to(map_location).eval()
        info = ModelInfo(model=model.config, preprocess=entry.preprocess or model.spec.preprocess)
    if entry.preprocess is not None:
        info.preprocess = entry.preprocess
    if entry.classes:
        info.class_names = entry.class_names()
    info.extra = {**info.extra, "weights": entry.name}
    return model, info


def _is_resnetkit_file(path: Path) -> bool:
    try:
        read_model_info(path)
    except WeightFileError:
        return False
    return True


def pretrained_model(arch: str, tag: str, **options: Any) -> ResNet:
    """What ``create_model(arch, pretrained=tag)`` returns; ``num_classes`` resets the head for fine-tuning, and
    ``drop_rate`` / ``drop_path_rate`` set the regularisers of the fine-tune (they have no weights)."""
    check_trained_options(options, call=f"create_model({arch!r}, pretrained={tag!r})")
    return with_trained_options(load_entry(find_weights(arch, tag))[0], **options)


def check_trained_options(options: Mapping[str, Any], *, call: str) -> None:
    """Trained weights fix the architecture: only ``num_classes``, ``drop_rate`` and ``drop_path_rate`` may be
    given with them."""
    fixed = sorted(set(options) - {"num_classes", "drop_rate", "drop_path_rate"})
    if fixed:
        raise ValueError(f"{call}: the weights fix the architecture; drop {fixed}")


def with_trained_options(model: ResNet, *, num_classes: int | None = None, **dropout: Any) -> ResNet:
    """A trained network with a new ``num_classes``-way head (for fine-tuning) and its dropout settings."""
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    model.set_dropout(**dropout)
    return model


def with_preprocess(info: ModelInfo, overrides: Mapping[str, Any]) -> ModelInfo:
    """``info`` with some ``Preprocess`` fields replaced (``--input-size``, ``--interpolation`` ...).

    An ``input_size`` given alone scales the resize with it, keeping the model's crop fraction (timm's
    ``crop_pct``): a crop larger than the resized image would be padded with black."""
    if not overrides:
        return info
    values = {**info.preprocess.to_dict(), **overrides}
    if "input_size" in overrides and "resize_size" not in overrides and info.preprocess.input_size:
        values["resize_size"] = round(info.preprocess.resize_size * overrides["input_size"] / info.preprocess.input_size)
    return replace(info, preprocess=Preprocess.from_dict(values))
