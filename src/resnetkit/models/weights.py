"""Model files: our own ``.safetensors`` format, and torchvision / timm ``.pth`` state dicts.

Our format is one safetensors file whose metadata holds a JSON ``ModelInfo`` (architecture and options,
class names, preprocessing), so a file alone rebuilds and uses the model. No pickle is ever written;
foreign ``.pth`` files are read with ``weights_only=True`` so they cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import ModelConfig, ModelInfo
from ..config import cache_dir as default_cache_dir
from ..files import atomic_path, file_url_path, is_url
from .registry import build_model, default_preprocess
from .resnet import ResNet
from .widths import PRUNED_KEY, set_inner_widths

METADATA_KEY = "resnetkit"
FORMAT_VERSION = 1


class WeightFileError(ValueError):
    """A weight file that cannot be used; the message names the file and says what to do."""


def save_model(model: ResNet, path: str | os.PathLike[str], *, class_names: list[str] | None = None,
               info: ModelInfo | None = None) -> Path:
    """Write ``model`` and everything needed to use it to one ``.safetensors`` file, atomically.

    The file is written beside ``path`` and renamed over it, so a crash never leaves half a file.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give save_model() a file name such as {path / 'model.safetensors'}")
    if info is None:
        info = ModelInfo(model=model.config, class_names=list(class_names or []),
                         preprocess=default_preprocess(model.config.arch))
    elif class_names is not None:
        info.class_names = list(class_names)
    info.model = model.config
    if info.class_names and len(info.class_names) != model.num_classes:
        raise ValueError(f"{len(info.class_names)} class names for a {model.num_classes}-class model")
    meta = {METADATA_KEY: json.dumps({"format_version": FORMAT_VERSION, **info.to_dict()})}
    # safetensors refuses shared or non-contiguous storage; clone each tensor into its own block.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The ``ModelInfo`` stored in a resnetkit model file, without loading its tensors."""
    path = Path(path)
    _check_exists(path)
    meta = _safetensors_metadata(path)
    if METADATA_KEY not in meta:
        raise WeightFileError(f"{path}: a safetensors file without resnetkit metadata; load its tensors into a "
                              "model you build yourself with load_state_dict_file(), or re-save it with save_model()")
    try:
        data = json.loads(meta[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: nested thousands of levels deep
        raise WeightFileError(f"{path}: its resnetkit metadata is not valid JSON ({e}); the file is damaged or was "
                              "not written by save_model(): re-download or re-save it") from e
    if not isinstance(data, dict):
        raise WeightFileError(f"{path}: its resnetkit metadata is a JSON {type(data).__name__}, not an object; the "
                              "file was not written by save_model(): re-download or re-save it")
    version = data.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise WeightFileError(f"{path}: model file format {version}, this resnetkit reads {FORMAT_VERSION}")
    try:
        return ModelInfo.from_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError) as e:  # a field of the wrong type or value
        raise WeightFileError(f"{path}: its resnetkit metadata does not describe a usable model ({e}); the file "
                              "is damaged or was not written by save_model(): re-download or re-save it") from e


def load_model(source: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
               ) -> tuple[ResNet, ModelInfo]:
    """The model a user names, in eval mode, with its info: a resnetkit ``.safetensors`` file, its URL, a
    catalog name (``resnet20_cifar10``, ``resnet50_imagenet1k_v2``; see ``resnetkit models --pretrained``), or timm's
    weights on the Hugging Face Hub (``hf-hub:timm/resnet50d.ra4_e3600_r224_in1k``).

    This is the one resolver behind every command that takes a model: predict, eval, export and serve.
    """
    from .pretrained import get_weights, load_entry

    text = os.fspath(source)
    if text.startswith("hf-hub:"):  # timm's weights on the Hugging Face Hub (models/hf_hub.py)
        from .hf_hub import load_hf_hub

        return load_hf_hub(text, map_location=map_location)
    if is_url(text):
        return load_model_file(resolve_weight_path(text), map_location=map_location)
    if not os.path.exists(text):
        entry = get_weights(text)
        if entry is not None:
            return load_entry(entry, map_location=map_location)
    return load_model_file(text, map_location=map_location)


def load_model_file(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
                    ) -> tuple[ResNet, ModelInfo]:
    """Rebuild the model stored in a resnetkit ``.safetensors`` file; returns it (in eval mode) and its info.

    The network the metadata describes is first built on the ``meta`` device (no memory) and its tensor
    shapes compared with the file's header; only a file whose tensors fit its metadata is materialised,
    so a crafted file claiming a huge network fails at once instead of exhausting memory.
    """
    path = Path(path)
    check_self_describing(path)
    info = read_model_info(path)
    shapes = header_shapes(path)
    # First two blocks per stage (milliseconds even for 1,000 layers), then the whole network, both on meta.
    for max_blocks in (2, None):
        try:
            with torch.device("meta"):
                model = build_model(info.model, max_blocks=max_blocks)
                if info.extra.get(PRUNED_KEY):
                    set_inner_widths(model, info.extra[PRUNED_KEY])  # a pruned file: rebuild the narrower blocks
        except (ValueError, TypeError, KeyError, RuntimeError) as e:  # unknown arch, impossible sizes ...
            raise WeightFileError(f"{path}: its metadata describes a network that cannot be built ({e}); the file "
                                  "is damaged or was not written by save_model(): use a file you trust") from e
        _check_header_shapes(model, shapes, path=path, config=info.model, subset=max_blocks is not None)
    if info.class_names and len(info.class_names) != model.num_classes:
        raise WeightFileError(f"{path}: its metadata lists {len(info.class_names)} class names for a "
                              f"{model.num_classes}-class network; the file is damaged: re-download or re-save it")
    model = model.to_empty(device="cpu")
    load_weights(model, load_state_dict_file(path), source=str(path))
    return model.to(map_location).eval(), info


def header_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in a ``.safetensors`` file, read from its header alone."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightFileError(f"{path}: not a readable .safetensors file ({e}); it may be truncated: "
                              "re-download or re-save it") from e


def _check_header_shapes(model: nn.Module, shapes: dict[str, tuple[int, ...]], *, path: Path,
                         config: ModelConfig, subset: bool = False) -> None:
    """Refuse a file whose tensors are not the ones its metadata's network has; ``subset``: ``model`` is a
    shortened network, so only its own tensors are compared."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if expected == shapes or (subset and all(shapes.get(k) == v for k, v in expected.items())):
        return
    missing = [k for k in expected if k not in shapes]
    mismatched = [f"{k}: file {shapes[k]} vs metadata {v}" for k, v in expected.items() if k in shapes and shapes[k] != v]
    details = []
    if mismatched:
        details.append(f"{len(mismatched)} shape(s) differ ({'; '.join(mismatched[:3])})")
    if missing:
        details.append(f"{len(missing)} tensor(s) the metadata implies are absent (first: {missing[:3]})")
    unexpected = [] if subset else [k for k in shapes if k not in expected]
    if unexpected:
        details.append(f"{len(unexpected)} tensor(s) the metadata does not know (first: {unexpected[:3]})")
    raise WeightFileError(
        f"{path}: refused before building the network: its metadata describes {config.arch} (width {config.width}) "
        f"but the file's {len(shapes):,} tensors do not fit it: " + ", ".join(details)
        + ". The file is damaged or was not written by save_model(); use a file you trust")


def is_safetensors(path: Path) -> bool:
    """True when the file's first bytes are a safetensors header: an 8-byte little-endian length (less than the
    file) and then the JSON header's ``{``. Read positively, so that no header length is mistaken for a pickle."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file; ``WeightFileError`` naming the damage when its header is unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightFileError(f"{path}: not a readable .safetensors file ({e}); it may be truncated (a download "
                              "that stopped part-way) or not a weight file at all: re-download or re-save it") from e


def has_resnetkit_metadata(path: Path) -> bool:
    """True for a safetensors file carrying resnetkit's metadata (valid or not: reading it says what is wrong)."""
    if not is_safetensors(path):
        return False
    try:
        return METADATA_KEY in _safetensors_metadata(path)
    except WeightFileError:
        return False


def check_self_describing(path: Path, *, shown: str | None = None) -> None:
    """Refuse a bare state dict given where a model file is expected: a PyTorch checkpoint (``.pth`` ...: a zip
    archive or a pickle) or a safetensors file without resnetkit's metadata does not say which network it holds."""
    path, shown = Path(path), shown or str(path)
    _check_exists(path)
    if is_safetensors(path) and METADATA_KEY in _safetensors_metadata(path):  # a damaged header is named as such
        return
    with open(path, "rb") as f:
        head = f.read(2)
    pickled = head == b"PK" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))
    if pickled or is_safetensors(path) or path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        raise WeightFileError(
            f"{shown}: a bare state dict, not a resnetkit model file, so it does not say which network it holds: "
            f"give the architecture and this file as its weights (`ARCH --weights {shown}`, e.g. `resnetkit predict "
            f"resnet50 --weights {shown} photo.jpg`; in Python create_model(ARCH), then "
            "resnetkit.models.load_pretrained(model, path)), or convert it once with save_model()")


def _check_exists(path: Path) -> None:
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
    _check_exists(path)
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


def _without_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DistributedDataParallel's "module." and torch.compile's "_orig_mod." wrap the network's own names."""
    for prefix in ("module.", "_orig_mod.", "module."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "state dict") -> None:
    """``load_state_dict(strict=True)`` with errors that say which keys and shapes disagree and what to do."""
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
    if not problems:
        problems = _bad_values(own, state_dict)
    if problems:
        raise WeightFileError(f"{source}: cannot load into the model: " + "; ".join(problems))


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


def resolve_weight_path(path_or_url: str, *, cache_dir: str | os.PathLike[str] | None = None,
                        sha256: str | None = None) -> Path:
    """A local path for a weight file, a URL (downloaded into the cache once) or a pretrained name.

    ``sha256`` (a digest or its leading hex digits) is checked on download; a file that differs is deleted.
    """
    if path_or_url.startswith("hf-hub:"):  # the weight file of timm's repository (models/hf_hub.py)
        from .hf_hub import hub_weight_file

        if sha256:
            raise WeightFileError(f"{path_or_url}: the Hub's URLs name no digest, so sha256={sha256!r} cannot be "
                                  "checked against the download; give the file's URL or path instead")
        return hub_weight_file(path_or_url, cache_dir=cache_dir)
    local = file_url_path(path_or_url)
    if local is not None and os.path.exists(local) and not os.path.isfile(local):  # reading a pipe would wait
        raise WeightFileError(f"{path_or_url}: not a regular file (a folder, pipe or device); give a weight file")
    if is_url(path_or_url):
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        # Keyed by the whole address: two files named model.pth at different URLs are different weights.
        key = hashlib.sha256(path_or_url.encode()).hexdigest()[:16]
        target = cache / "weights" / f"{key}-{Path(path_or_url.split('?')[0]).name}"  # a malformed URL too
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(path_or_url, str(target), hash_prefix=sha256 or None, progress=False)
            except RuntimeError as e:  # torch.hub's digest check
                raise WeightFileError(f"{path_or_url}: the downloaded file's SHA-256 is not the expected {sha256} "
                                      f"({e}); the server sent different weights: do not use them") from e
            except Exception as e:  # urllib raises URLError, HTTPError, OSError, ...
                raise WeightFileError(f"could not download {path_or_url} ({e}); check the address and your "
                                      "connection, or download it yourself and pass the local path") from e
        return target
    if not os.path.exists(path_or_url):
        from .pretrained import get_weights

        entry = get_weights(path_or_url)
        if entry is not None:  # a pretrained name: its shipped file, or its download (digest checked)
            return entry.local_path(cache_dir=cache_dir)
    return Path(path_or_url)


def load_pretrained(model: nn.Module, path_or_url: str, **kwargs: Any) -> nn.Module:
    """Load a torchvision / timm / resnetkit weight file (path or URL) into ``model`` in place."""
    path = resolve_weight_path(path_or_url, **kwargs)
    load_weights(model, load_state_dict_file(path), source=str(path))
    return model
