"""timm's weights on the Hugging Face Hub, by timm's own spelling: ``hf-hub:timm/resnet50d.ra4_e3600_r224_in1k``.

timm publishes each set of weights as a repository holding ``config.json`` (the architecture and the evaluation
preprocessing, ``pretrained_cfg``) and ``model.safetensors`` (or ``pytorch_model.bin``). Both are downloaded once
into the weight cache (``resolve_weight_path``) from ``$HF_ENDPOINT`` (default https://huggingface.co, the
variable huggingface_hub reads), the network is the registered one of the same name (timm's state-dict keys are
resnetkit's), and the preprocessing is timm's: bicubic or as given, the shorter side resized to
floor(input / crop fraction), the centre crop. The Hub names no digest in its URLs: the files are checked as
every weight file is (shapes against the network before anything is allocated), not against a known hash.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..config import ModelInfo, Preprocess, check_class_names
from ..files import is_url
from .registry import list_models
from .resnet import ResNet
from .state_dict import WeightFileError, load_state_dict_file, model_for_state_dict
from .weights import resolve_weight_path

PREFIX = "hf-hub:"
REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")  # the Hub's own rule
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order of preference
MAX_CONFIG_BYTES = 1 << 20  # timm's configs are 1-2 kB


def is_hf_hub_name(text: str) -> bool:
    return text.startswith(PREFIX)


def hub_url(repo: str, file: str) -> str:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    if not is_url(endpoint):
        raise ValueError(f"HF_ENDPOINT={endpoint!r} is not a URL; give one such as https://huggingface.co (or unset "
                         "it)")
    return f"{endpoint}/{repo}/resolve/main/{file}"


def _repo(name: str) -> str:
    repo = name[len(PREFIX):] if is_hf_hub_name(name) else name
    if not REPO.fullmatch(repo):
        raise ValueError(f"{name}: not a Hugging Face repository name; give hf-hub:OWNER/NAME, e.g. "
                         "hf-hub:timm/resnet50d.ra4_e3600_r224_in1k (the main revision; no @revision)")
    return repo


def load_hf_hub(name: str, *, map_location: str | torch.device = "cpu",
                expected_arch: str | None = None) -> tuple[ResNet, ModelInfo]:
    """The network ``hf-hub:OWNER/REPO`` holds, in eval mode, with timm's preprocessing and its class names (the
    config's ``label_names``, else ImageNet's for 1,000 classes); refused before its weights are fetched when it is
    not ``expected_arch``."""
    config = _read_config(_repo(name))
    arch = _architecture(config, name)
    if expected_arch is not None:
        _check_architecture(arch, expected_arch, name)
    cfg = config.get("pretrained_cfg")
    preprocess = _preprocess({} if cfg is None else cfg, name)
    path = hub_weight_file(name)
    args = config.get("model_args")
    in_chans = args.get("in_chans", 3) if isinstance(args, dict) else 3
    try:
        model = model_for_state_dict(arch, load_state_dict_file(path), source=f"{path} ({name})", in_chans=in_chans)
    except (ValueError, TypeError) as error:
        if isinstance(error, WeightFileError):
            raise
        raise WeightFileError(f"{name}: its config.json's model_args do not describe a network ({error})") from None
    info = ModelInfo(model=model.config, preprocess=preprocess,
                     class_names=_class_names(config, model.num_classes, name), extra={"weights": name})
    return model.to(map_location).eval(), info


def load_hf_hub_as(arch: str, name: str) -> tuple[ResNet, ModelInfo]:
    """``ARCH --weights hf-hub:...``: the repository's network with its preprocessing and class names, which must be
    ``arch`` (the repository names its own)."""
    return load_hf_hub(name, expected_arch=arch)


def check_hub_architecture(arch: str, name: str) -> None:
    _check_architecture(_architecture(_read_config(_repo(name)), name), arch, name)


def _check_architecture(held: str, arch: str, name: str) -> None:
    if held != arch:
        raise ValueError(f"{name} holds {held}, not {arch}: give {name} as the model, without an architecture name")


def _architecture(config: dict[str, Any], name: str) -> str:
    arch = config.get("architecture")
    if not isinstance(arch, str) or arch not in list_models():
        raise ValueError(f"{name} holds timm's {str(arch)[:80]!r}, which resnetkit does not build; resnetkit builds "
                         "timm's resnet*, resnet*d, seresnet*, resnext*, wide_resnet* (see `resnetkit models`)")
    return arch


def hub_weight_file(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The repository's weight file, downloaded once: model.safetensors, else pytorch_model.bin (older repositories
    have only that)."""
    repo, failures = _repo(name), []
    for file in WEIGHT_FILES:
        try:
            return resolve_weight_path(hub_url(repo, file), cache_dir=cache_dir)
        except WeightFileError as error:
            failures.append(str(error))
    raise WeightFileError(f"{name}: no weight file could be downloaded ({'; '.join(failures)})")


def _read_config(repo: str) -> dict[str, Any]:
    """The repository's config.json in timm's current layout (older repositories keep the preprocessing and
    ``labels`` at the top level, with no ``pretrained_cfg``: read as timm's ``_parse_model_cfg`` reads them)."""
    path = resolve_weight_path(hub_url(repo, "config.json"))
    if path.stat().st_size > MAX_CONFIG_BYTES:
        size = path.stat().st_size
        path.unlink(missing_ok=True)  # not kept in the cache
        raise WeightFileError(f"hf-hub:{repo}: its config.json of {size:,} bytes is not timm's (a few kB); use a "
                              "repository you trust")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # RecursionError: [[[[... nested deeply
        raise WeightFileError(f"{path} (hf-hub:{repo}/config.json): not JSON ({str(error)[:100]}); delete it to "
                              "download it again") from None
    if not isinstance(config, dict):
        raise WeightFileError(f"{path} (hf-hub:{repo}/config.json): holds a {type(config).__name__}, not timm's "
                              "config object")
    if "pretrained_cfg" not in config:
        legacy = {key: value for key, value in config.items()
                  if key not in ("architecture", "num_features", "model_args")}
        if "labels" in legacy:
            legacy["label_names"] = legacy.pop("labels")
        config = {**{key: config[key] for key in ("architecture", "model_args") if key in config},
                  "pretrained_cfg": legacy}
    return config


def _preprocess(cfg: Any, name: str) -> Preprocess:
    """timm's evaluation transform as a ``Preprocess``: input size, resize floor(input / crop_pct), filter, mean/std."""
    try:
        if not isinstance(cfg, dict):
            raise TypeError(f"pretrained_cfg is a {type(cfg).__name__}, not an object")
        shape = cfg.get("input_size", [3, 224, 224])
        if not isinstance(shape, (list, tuple)) or not shape or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in shape):
            raise TypeError(f"input_size {str(shape)[:40]} is not a list of whole numbers")
        crop = float(cfg.get("crop_pct", 0.875))
        if not 0 < crop <= 1:
            raise ValueError(f"crop_pct {crop}")
        values = {"input_size": shape[-1], "resize_size": math.floor(shape[-1] / crop),
                  "interpolation": cfg.get("interpolation", "bicubic")}
        values.update({k: tuple(cfg[k]) for k in ("mean", "std") if k in cfg})
        preprocess = Preprocess.from_dict(values)
    except (TypeError, ValueError, IndexError, KeyError, OverflowError) as error:
        raise WeightFileError(f"{name}: its config.json's pretrained_cfg cannot be read as a preprocessing "
                              f"({error})") from None
    if cfg.get("crop_mode", "center") != "center":
        warnings.warn(f"{name}: timm evaluates it with crop_mode {str(cfg['crop_mode'])[:40]!r}; resnetkit resizes "
                      "the shorter side and takes the centre crop", stacklevel=3)
    return preprocess


def _class_names(config: dict[str, Any], num_classes: int, name: str) -> list[str]:
    names = config.get("label_names") or (config.get("pretrained_cfg") or {}).get("label_names")
    if isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names):
        return check_class_names(names, f"{name}: its config.json's label_names")
    if num_classes == 1000:
        from .pretrained import CLASS_LISTS

        return CLASS_LISTS["imagenet1k"]()
    return []
