"""Model files in our own ``.safetensors`` format, and where a weight file comes from (path, URL, catalog name).

Our format is one safetensors file whose metadata holds a JSON ``ModelInfo`` (architecture and options,
class names, preprocessing), so a file alone rebuilds and uses the model. No pickle is ever written.
Files of bare tensors (torchvision / timm ``.pth``) are read and checked in models/state_dict.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from ..config import ModelConfig, ModelInfo
from ..config import cache_dir as default_cache_dir
from ..files import atomic_path, file_url_path, is_url
from .registry import build_model, default_preprocess
from .resnet import ResNet
from .state_dict import WeightFileError, check_exists, is_safetensors, load_state_dict_file, load_weights
from .widths import PRUNED_KEY, inner_widths, set_inner_widths

METADATA_KEY = "resnetkit"
FORMAT_VERSION = 1


def save_model(model: ResNet, path: str | os.PathLike[str], *, class_names: list[str] | None = None,
               info: ModelInfo | None = None) -> Path:
    """Write ``model`` and everything needed to use it to one ``.safetensors`` file, atomically.

    The file is written beside ``path`` and renamed over it, so a crash never leaves half a file. What the metadata
    records is the network as it is: a head replaced by another ``nn.Linear`` (the torchvision way to fine-tune)
    gives its class count, pruned blocks their widths; a network changed in a way the metadata cannot describe is
    refused here rather than written as a file no command could load.
    """
    path = Path(path)
    if not isinstance(model, ResNet):
        inner = getattr(model, "body", None)
        raise ValueError(f"save_model() writes a resnetkit ResNet, not a {type(model).__name__}"
                         + ("; save the network it wraps, before features_only (its body keeps only the stages "
                            "its maps use)" if isinstance(inner, ResNet) else ""))
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give save_model() a file name such as {path / 'model.safetensors'}")
    config = ModelConfig.from_dict({**model.config.to_dict(), "num_classes": model.num_classes})
    if info is None:
        info = ModelInfo(model=config, class_names=list(class_names or []),
                         preprocess=default_preprocess(config.arch))
    elif class_names is not None:
        info.class_names = list(class_names)
    info.model = config
    if info.class_names and len(info.class_names) != model.num_classes:
        raise ValueError(f"{len(info.class_names)} class names for a {model.num_classes}-class model")
    _record_widths(model, info)
    meta = {METADATA_KEY: json.dumps({"format_version": FORMAT_VERSION, **info.to_dict()})}
    # safetensors refuses shared or non-contiguous storage; clone each tensor into its own block.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _record_widths(model: ResNet, info: ModelInfo) -> None:
    """Put pruned blocks' widths in ``info`` (``PRUNED_KEY``), then check that the network the metadata describes has
    ``model``'s tensor shapes: ``ValueError`` naming the first that differ otherwise (a replaced stem, say)."""
    with torch.device("meta"):
        rebuilt = build_model(info.model)
    try:
        widths = inner_widths(model)
        if widths != inner_widths(rebuilt):
            info.extra[PRUNED_KEY] = widths
            set_inner_widths(rebuilt, widths)
    except TypeError:  # grouped convolutions (ResNeXt) are never pruned: nothing to record
        pass
    expected = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if expected != actual:
        differ = [f"{k}: {actual.get(k)} (the metadata's network: {expected.get(k)})"
                  for k in sorted(set(expected) | set(actual)) if expected.get(k) != actual.get(k)]
        raise ValueError(f"the network was changed in a way its config cannot describe ({len(differ)} tensor(s), "
                         f"first: {'; '.join(differ[:2])}); change it with its own options (create_model(..., "
                         "num_classes=, head_hidden=, in_chans=), reset_classifier) so that the file can rebuild it")


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The ``ModelInfo`` stored in a resnetkit model file, without loading its tensors."""
    path = Path(path)
    check_exists(path)
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
    check_exists(path)
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
