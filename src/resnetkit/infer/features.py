"""Feature extraction: what ``resnetkit features MODEL DATA --out FILE`` runs.

Every image goes through the model file's own preprocessing (the ``Predictor``'s transform), then the
network up to the pooled features before the classifier (``forward_head(pre_logits=True)``), or up to
one stage's feature map (``stage``, optionally average-pooled). The result is written with the file
list and the labels (from class folders) so the rows can be matched to the images:

- ``.safetensors``: tensors ``features`` and ``labels``, metadata ``files``, ``class_names`` (JSON);
- ``.npy``: the features, with a ``.json`` of the same name beside it (``feats.npy``: ``feats.json``) holding
  files, labels and class names.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..data.api import load_image_dataset
from ..data.labels_csv import is_labels_csv
from ..data.source import CIFAR_FILES, CIFAR_NAME, DIGITS, DataSource, resolve_source
from ..data.tree import index_tree, is_tar_path, tree_splits
from ..files import prepare_output_dir, write_text_atomic
from ..models.weights import has_resnetkit_metadata
from .images import ImageLoadError, expand_inputs, load_image
from .predictor import Predictor, check_batch_size

log = logging.getLogger(__name__)
FORMATS = (".npy", ".safetensors")
MEMORY_FRACTION = 0.5  # refuse an output larger than this share of the machine's memory


@dataclass
class FeatureSet:
    features: np.ndarray  # (N, D) pooled, or (N, C, H, W) a stage's maps; float32
    files: list[str]
    labels: list[int]  # index into class_names; -1 for images outside class folders
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) images that could not be used

    def metadata(self) -> dict[str, Any]:
        return {"files": self.files, "labels": self.labels, "class_names": self.class_names,
                "shape": list(self.features.shape), "skipped": [list(s) for s in self.skipped]}


def list_images(data: str, *, split: str = "train") -> tuple[list[Any], list[str], list[int], list[str]]:
    """``(sources, names, labels, class_names)``: a dataset (``digits``, ``cifar10``, CIFAR's batches), a tree
    ``root/<class>/<image>`` (folder or tar) or a labels CSV gives labels; a loose folder, file or glob gives label
    -1. Sources are paths, or lazy readers of tar members and decoded images (named ``DATA#k``)."""
    path = Path(data)
    named = _decoded_in_memory(data)
    if named is not None:  # the digits, CIFAR by name or as its batches: decoded as train and eval decode them
        dataset = load_image_dataset(named, split=split)
        items = [_DatasetImage(dataset.images, i) for i in range(len(dataset))]
        return items, [f"{data}#{i}" for i in range(len(dataset))], dataset.labels.tolist(), list(dataset.class_names)
    if path.exists() and (path.is_dir() or is_tar_path(path) or is_labels_csv(path)):
        try:
            tree = index_tree(path, split=split)
        except ValueError:  # a folder of images not in class folders: unlabelled
            if path.is_file():  # a damaged tar, or one without class folders: nothing to fall back on
                raise
            tree = None
        else:
            if tree is None:
                splits = ", ".join(tree_splits(path, all_names=True)) or "none"
                raise ValueError(f"--split {split}: {data} has no such split (it has: {splits}; a tree without "
                                 "train/, val/ or test/ folders is all train)")
        if tree is not None and len(tree):
            names = [f"{data}:{p}" if tree.is_tar else p for p in tree.paths]
            sources = list(range(len(tree))) if tree.is_tar else list(tree.paths)
            return [_TarMember(tree, i) for i in sources] if tree.is_tar else sources, names, list(tree.labels), \
                list(tree.class_names)
    files = expand_inputs([data])
    if not files:
        raise ValueError(f"no images found in {data}")
    return list(files), list(files), [-1] * len(files), []


def _decoded_in_memory(data: str) -> DataSource | None:
    """The source ``data`` names when it is a dataset rather than image files (``digits``, ``cifar10``, CIFAR's
    batches), else None (folders, tars, CSVs, files and globs are listed as files)."""
    try:
        source = resolve_source(data)
    except (OSError, ValueError):
        return None
    return source if source.kind in (DIGITS, CIFAR_NAME, CIFAR_FILES) else None


@dataclass
class _DatasetImage:
    images: torch.Tensor
    index: int

    def read(self) -> torch.Tensor:
        return self.images[self.index]


@dataclass
class _TarMember:
    tree: Any
    index: int

    def read(self) -> bytes:
        return self.tree.read_bytes(self.index)


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def extract_features(predictor: Predictor, data: str, *, stage: int | None = None, pool: bool = True,
                     split: str = "train", batch_size: int = 64, progress: bool | None = None) -> FeatureSet:
    """Features of every image in ``data`` (see ``list_images``), in order; unusable images are skipped."""
    model = predictor.model
    stages = len(model.stage_names)
    if stage is not None and not 1 <= stage <= stages:
        raise ValueError(f"stage={stage}: {model.config.arch} has stages 1..{stages}")
    check_batch_size(batch_size)
    sources, names, labels, class_names = list_images(data, split=split)
    if progress is None:
        progress = sys.stderr.isatty() and len(sources) > batch_size
    kept, chunks, skipped = [], [], []
    limit = _memory_limit()
    with tqdm(total=len(sources), unit="img", file=sys.stderr, disable=not progress, desc="features") as bar:
        for batch in _batches(list(range(len(sources))), batch_size):
            tensors, ok = [], []
            for i in batch:
                try:
                    source = sources[i].read() if isinstance(sources[i], (_TarMember, _DatasetImage)) else sources[i]
                    tensors.append(predictor.transform(load_image(source, name=names[i])))
                    ok.append(i)
                except ImageLoadError as e:
                    skipped.append((names[i], str(e)))
            bar.update(len(batch))
            if not tensors:
                continue
            with torch.inference_mode():
                out = _forward(model, torch.stack(tensors).to(predictor.device), stage=stage, pool=pool)
            chunks.append(out.float().cpu().numpy())
            kept += ok
            if len(chunks) == 1 and chunks[0][0].nbytes * len(sources) > limit:
                raise ValueError(f"the features of {len(sources)} images would take "
                                 f"{chunks[0][0].nbytes * len(sources) / 2**30:.1f} GiB, more than this machine "
                                 f"can hold; pool them (--pool), choose a later --stage, or give fewer images")
    for name, why in skipped[:10]:  # the decoder's message names the file already
        log.warning("skipped %s", why if why.startswith(str(name)) else f"{name}: {why}")
    if not kept:
        raise ValueError(f"none of the {len(sources)} images in {data} could be read")
    features = np.concatenate(chunks)
    return FeatureSet(features=features, files=[names[i] for i in kept], labels=[labels[i] for i in kept],
                      class_names=class_names, skipped=skipped)


def _forward(model: Any, batch: torch.Tensor, *, stage: int | None, pool: bool) -> torch.Tensor:
    if stage is None:
        return model.forward_head(model.forward_features(batch), pre_logits=True)
    maps = model.forward_stages(batch)[stage - 1]
    return maps.mean(dim=(2, 3)) if pool else maps


def _memory_limit() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * MEMORY_FRACTION
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def check_features_out(out: str | os.PathLike[str]) -> Path:
    """Refuse an output path ``write_features`` could not write, before any image is read: a wrong extension,
    a folder, or a folder that cannot be created or written (created here if missing). ``ValueError`` names it."""
    out = Path(out)
    if out.suffix not in FORMATS:
        raise ValueError(f"--out {out}: the output must end in {' or '.join(FORMATS)}")
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give a file name ending in {' or '.join(FORMATS)}")
    prepare_output_dir(out.parent, flag="the folder of --out")
    if out.exists() and not os.access(out, os.W_OK):
        raise ValueError(f"--out {out}: the file exists and is not writable; give another file name")
    if out.suffix == ".safetensors" and out.is_file() and has_resnetkit_metadata(out):
        raise ValueError(f"--out {out}: is a resnetkit model file, which the features would replace; give another "
                         "file name")
    for path in (out, out.with_suffix(".json")) if out.suffix == ".npy" else (out,):
        if path.is_file() and not _is_features_file(path):  # a weight file, someone's array or a run's JSON
            raise ValueError(f"--out {out}: {path} exists and is not a features file written by resnetkit features, "
                             "so it is never replaced; give another file name")
    return out


def _is_features_file(path: Path) -> bool:
    """What ``write_features`` writes: a ``.safetensors`` of ``features`` and ``labels``, or a ``.npy`` with a
    ``.json`` beside it that starts with the list of files (read from its first bytes: it can be long)."""
    from safetensors import SafetensorError, safe_open

    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="np") as f:
                return set(f.keys()) == {"features", "labels"}
        with open(path.with_suffix(".json"), "rb") as f:
            return f.read(len(SIDECAR_START)) == SIDECAR_START
    except (OSError, SafetensorError):
        return False


SIDECAR_START = b'{\n "files": ['  # json.dumps(FeatureSet.metadata(), indent=1), whose first key is the files


def write_features(features: FeatureSet, out: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``features`` as ``.safetensors`` or ``.npy`` (+ ``.json``); returns the path written."""
    out = check_features_out(out)
    meta = {**features.metadata(), **(extra or {})}
    if out.suffix == ".npy":
        np.save(out, features.features)
        write_text_atomic(out.with_suffix(".json"), json.dumps(meta, indent=1))
        return out
    from safetensors.numpy import save_file

    save_file({"features": np.ascontiguousarray(features.features), "labels": np.asarray(features.labels, np.int64)},
              str(out), metadata={key: json.dumps(value) for key, value in meta.items()})
    return out
