"""Weight files that hold only tensors: torchvision / timm ``.pth`` checkpoints and bare ``.safetensors`` files.

They are read without running code (``weights_only=True``), unwrapped (``{"state_dict": ...}``, DDP's ``module.``),
and checked against the network they are loaded into (keys, shapes, values) with errors that say what to do.
Our own self-describing model files build on this (models/weights.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..config import ModelConfig
from .resnet import ResNet


class WeightFileError(ValueError):
    """A weight file that cannot be used; the message names the file and says what to do."""

def is_safetensors(path: Path) -> bool:
    """True when the file's first bytes are a safetensors header: an 8-byte little-endian length (less than the
    file) and then the JSON header's ``{``. Read positively, so that no header length is mistaken for a pickle."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size



def check_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such weight file, nor a pretrained name (see `resnetkit models "
                                "--pretrained`)")
    if path.is_dir():
        raise WeightFileError(f"{path}: is a folder, expected a .safetensors or .pth file")
    if not path.is_file():  # a named pipe would block the first read forever
        raise WeightFileError(f"{path}: not a regular file (a pipe, socket or device); give a .safetensors or "
                              ".pth file")


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a torchvision / timm ``.pth`` checkpoint (never runs code).

    Checkpoints that wrap the weights (``{"state_dict": ...}``, ``{"model": ...}``) and DDP's
    ``module.`` prefix are unwrapped.
    """
    path = Path(path)
    check_exists(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise WeightFileError(f"{path}: only {path.stat().st_size} bytes; the file is truncated or empty")
    if path.suffix == ".safetensors" or is_safetensors(path):
        try:
            return _without_wrapper_prefixes(load_file(str(path)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise WeightFileError(f"{path}: not a readable .safetensors file ({e}); it may be truncated: "
                                  "re-download or re-save it") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... depending on damage
        text = str(e)
        pickle_or_zip = head[:2] == b"PK" or head[:1] == b"\x80"  # what torch.save writes: random bytes are neither
        if "Unsupported global" in text or ("Weights only load failed" in text and pickle_or_zip):
            raise WeightFileError(
                f"{path}: refused to load: the file contains pickled Python objects beyond tensors, and "
                "loading it could run arbitrary code. Load it yourself only if you trust its source, then "
                "save its state_dict() (or convert it with save_model())") from e
        raise WeightFileError(f"{path}: not a readable PyTorch weight file ({type(e).__name__}: {text[:200]}); "
                              "it may be truncated or not a weight file: re-download it") from e
    return _unwrap_state_dict(obj, path)


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model_state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items()):
        raise WeightFileError(f"{path}: holds a {type(obj).__name__}, not a state dict of named tensors")
    # A saved view such as zeros(1).expand(1_000_000, 2048) is 4 bytes on disk but would make the network it
    # implies allocate gigabytes; real weights are stored whole.
    views = [f"{k}: {tuple(v.shape)} over {v.untyped_storage().nbytes():,} bytes" for k, v in obj.items()
             if v.numel() * v.element_size() > v.untyped_storage().nbytes()]
    if views:
        raise WeightFileError(f"{path}: {len(views)} tensor(s) claim more values than the file stores (first: "
                              f"{views[:2]}); the file is crafted or damaged: use a file you trust")
    return _without_wrapper_prefixes(obj)


# The top-level modules of our networks (and torchvision's): a prefix shared by every key that is none of these is
# a wrapper's attribute, not part of the network's own names.
OWN_TOP_LEVEL = frozenset({"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "norm", "fc"})


def _without_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's own names, without what wrapped it when it was saved: DistributedDataParallel's "module.",
    torch.compile's "_orig_mod.", a training framework's attribute (a Lightning module's "model.", "net." ...) or an
    ``nn.Sequential``'s "0.". A ResNet's names start with several modules (conv1, layer1, fc ...), so a first name
    every key shares, and which is none of them, is a wrapper's."""
    while state:
        firsts = {k.split(".", 1)[0] for k in state}
        prefix = next(iter(firsts))
        if len(firsts) != 1 or prefix in OWN_TOP_LEVEL or any("." not in k for k in state):
            return state
        state = {k[len(prefix) + 1:]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "state dict") -> None:
    """``load_state_dict(strict=True)`` with errors that say which keys and shapes disagree and what to do. A network
    without a classifier (``num_classes=0``) takes a file's body and leaves its ``fc`` out, as timm does."""
    if "fc.weight" in state_dict and "fc.weight" not in model.state_dict():
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    check_weights_fit(model, state_dict, source=source)
    model.load_state_dict(state_dict, strict=True)


def classifier_classes(state_dict: dict[str, torch.Tensor], *, source: str, features: int | None = None) -> int:
    """How many classes the file's classifier (``fc.weight``, classes x features) has; 0 without one.

    ``features``: the classifier inputs of the network the file is for; a file whose classifier takes another
    number is refused here, before a head of its size is built (a crafted (10**6, 0) one would take gigabytes).
    """
    fc = state_dict.get("fc.weight")
    if fc is None:
        return 0
    if fc.dim() != 2 or (features is not None and fc.shape[1] != features):
        expected = f"(classes, {features})" if features is not None else "(classes, features)"
        raise WeightFileError(f"{source}: fc.weight has shape {tuple(fc.shape)}, where this network's classifier's is "
                              f"{expected}: the file is damaged or for another architecture; use a file you trust")
    return int(fc.shape[0])


def model_for_state_dict(arch: str, state_dict: dict[str, torch.Tensor], *, source: str,
                         **options: Any) -> ResNet:
    """``create_model(arch, **options)`` holding ``state_dict``; ``num_classes`` from its classifier unless given
    (0, a network without classifier, when the state dict has none: a headless checkpoint).

    The network is built on the ``meta`` device (no memory) and compared with the tensors before it is
    materialised, so weights that do not fit it are refused before anything is allocated.
    """
    from .registry import create_model

    if "num_classes" not in options:
        options["num_classes"] = classifier_classes(state_dict, source=source)
    with torch.device("meta"):
        model = create_model(arch, **options)
    check_weights_fit(model, state_dict, source=source)
    model = model.to_empty(device="cpu")
    model.load_state_dict(state_dict, strict=True)
    return model


def check_weights_fit(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "state dict") -> None:
    """``WeightFileError`` saying which keys, shapes or values of ``state_dict`` do not fit ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in own.items()
                  if k in state_dict and state_dict[k].shape != v.shape]
    problems = []
    if mismatched:
        shown = ", ".join(f"{k}: file {a} vs model {b}" for k, a, b in mismatched[:5])
        problems.append(f"shape mismatch for {len(mismatched)} tensor(s) ({shown})")
        fc = state_dict.get("fc.weight")
        if fc is not None and "fc.weight" in own and fc.dim() == 2 and own["fc.weight"].dim() == 2:
            file_classes, features = fc.shape
            if file_classes != own["fc.weight"].shape[0]:
                problems.append(
                    f"the file's classifier has {file_classes} classes but the model has "
                    f"{own['fc.weight'].shape[0]}: build the model with num_classes={file_classes}, load, then "
                    "call model.reset_classifier(N) to fine-tune on N classes")
            elif features != own["fc.weight"].shape[1]:
                problems.append(f"the file's classifier takes {features} features but the model's takes "
                                f"{own['fc.weight'].shape[1]}: the weights are for another architecture or width")
    if missing:
        problems.append(f"{len(missing)} key(s) missing from the file (first: {missing[:5]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) in the file (first: {unexpected[:5]})")
    if missing or unexpected:
        config = getattr(model, "config", None)
        if isinstance(config, ModelConfig):
            problems.append(f"check the architecture options: the model is {config.arch} variant={config.variant} "
                            f"shortcut={config.shortcut} width={config.width}")
        from .registry import architectures_fitting

        fitting = architectures_fitting({k: tuple(v.shape) for k, v in state_dict.items()
                                         if isinstance(k, str) and isinstance(v, torch.Tensor)})
        if fitting:
            problems.append(f"the file's tensors fit {' or '.join(fitting[:3])}: give that architecture")
        nested = _prefixes_holding(own, state_dict)
        if nested:
            problems.append(
                f"the file holds this network's tensors under {' and '.join(repr(p) for p in nested[:3])}: take one "
                f"network's keys without the prefix (state = {{k.removeprefix({nested[0]!r}): v for k, v in "
                f"state.items() if k.startswith({nested[0]!r})}}) and save that as the weight file")
    if not problems:
        problems = _bad_values(own, state_dict)
    if problems:
        raise WeightFileError(f"{source}: cannot load into the model: " + "; ".join(problems))


def _prefixes_holding(own: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor]) -> list[str]:
    """The prefixes under which ``state_dict`` holds every tensor of ``own`` with its shape (MoCo's "encoder_q." and
    "encoder_k.", a detector's "backbone.body."): a file of several networks, or of one inside a larger model."""
    first = next(iter(own), None)
    if first is None:
        return []
    candidates = {k[:-len(first)] for k in state_dict if isinstance(k, str) and k.endswith("." + first)}
    return sorted(p for p in candidates if all(isinstance(state_dict.get(p + k), torch.Tensor)
                                               and state_dict[p + k].shape == v.shape for k, v in own.items()))


def _checkable(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in a type torch compares and tests for NaN (the float8 types implement neither; they load into the
    network's float32 as any float does)."""
    return tensor.float() if tensor.dtype.itemsize == 1 else tensor


def _bad_values(own: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Tensors that would load without an error but make a useless model: integers where the model has floats
    (they would be cast, to zeros for a crafted file), NaN or infinity (every prediction would be NaN)."""
    wrong_type = [f"{k}: {state_dict[k].dtype}" for k, v in own.items()
                  if v.is_floating_point() and not state_dict[k].is_floating_point()]
    if wrong_type:
        return [f"{len(wrong_type)} tensor(s) hold integers where the network has real numbers (first: "
                f"{wrong_type[:3]}); the file is damaged or holds something else: use a file you trust"]
    not_finite = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(_checkable(v)).all()]
    if not_finite:
        return [f"{len(not_finite)} tensor(s) hold NaN or infinite values (first: {not_finite[:3]}); the weights "
                "come from a run that diverged or the file is damaged: use an earlier checkpoint or retrain"]
    negative = [k for k, v in state_dict.items() if k.endswith("running_var") and v.is_floating_point()
                and bool((_checkable(v) < 0).any())]
    if negative:
        return [f"{len(negative)} BatchNorm variance(s) are negative (first: {negative[:3]}), which no training "
                "writes: every prediction would be NaN; the file is damaged or crafted: use a file you trust"]
    return []
