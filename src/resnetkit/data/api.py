"""One entry point for small-image data: ``load_data(DataConfig(...))`` -> train / val / test in memory.

A source is a name (``"digits"``, ``"cifar10"``, ``"cifar100"``) or a path: a CIFAR folder or official
archive, or an image tree (folder or tar of ``<class>/<image>``). Every source ends up as
``InMemoryImageDataset`` objects; image trees are decoded once and cached on disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DataConfig
from .cache import cache_dir
from .cifar import locate_cifar, read_cifar
from .decode import common_size, load_tree_in_memory
from .digits import load_digits_dataset
from .memory import InMemoryImageDataset, check_fits_in_memory, split_holdout
from .preprocess import fit_to_size
from .source import CIFAR_FILES, CIFAR_NAME, DIGITS, IMAGE_CSV, DataSource, resolve_source
from .transforms import ImageFileDataset
from .tree import index_tree

SPLITS = ("train", "test")


def data_root() -> Path:
    """Where named datasets are looked for and downloaded: ``$RESNETKIT_DATA``, else ``<cache dir>/datasets``."""
    return Path(os.environ.get("RESNETKIT_DATA") or cache_dir() / "datasets").expanduser()


@dataclass
class DataSplits:
    """What ``load_data`` returns: ``train`` (minus the held-out images), ``val`` (None when
    ``val_split=0``), ``test`` (None when the source has no test split) and the class names they share."""

    train: InMemoryImageDataset
    val: InMemoryImageDataset | None
    test: InMemoryImageDataset | None
    class_names: list[str]
    config: DataConfig


def _resize(dataset: InMemoryImageDataset | None, image_size: int | None) -> InMemoryImageDataset | None:
    if dataset is None or image_size is None or dataset.image_size == (image_size, image_size):
        return dataset
    check_fits_in_memory(len(dataset), (image_size, image_size), source=str(dataset.source))
    dataset.images = fit_to_size(dataset.images, (image_size, image_size)).contiguous()
    return dataset


def _coarse_needs_cifar100(config: DataConfig, classes: int | None = None) -> None:
    if config.cifar100_labels == "coarse" and classes != 20:
        raise ValueError(f"cifar100_labels='coarse' (--cifar100-labels) picks CIFAR-100's 20 superclasses, but "
                         f"{config.source} is not CIFAR-100; drop the option")


def _load_sources(config: DataConfig, splits: tuple[str, ...]) -> dict[str, InMemoryImageDataset | None]:
    source = resolve_source(config.source)
    if source.kind == DIGITS:
        _coarse_needs_cifar100(config)
        return {s: load_digits_dataset(s, size=config.image_size or 16) for s in splits}
    if source.kind in (CIFAR_NAME, CIFAR_FILES):
        path = source.path or locate_cifar(source.text, root=config.root or data_root(), download=config.download)
        both = read_cifar(path, labels=config.cifar100_labels)
        _coarse_needs_cifar100(config, both["train"].num_classes)
        return {s: both[s] for s in splits}
    _coarse_needs_cifar100(config)
    return {s: load_tree_in_memory(source.path, split=s, image_size=config.image_size, workers=config.workers,
                                   cache=config.cache) for s in splits}


def open_image_files(source: str | DataSource, *, split: str = "test") -> ImageFileDataset | None:
    """One split of an image tree read file by file, each image at its own size, undecoded until asked for.

    None when ``source`` cannot be read file by file (a dataset name, CIFAR batches, a compressed tar):
    load those with ``load_image_dataset``. Raises FileNotFoundError when the tree has no such split.
    """
    source = resolve_source(source)
    return ImageFileDataset(source.path, split=split) if source.file_by_file else None


def common_image_size(source: str | DataSource) -> tuple[int, int] | None:
    """``(height, width)`` most common among the first training images of an image tree (``decode.common_size``,
    the size the tree is decoded in memory at); None for dataset names, CIFAR batches or nothing decodable."""
    source = resolve_source(source)
    tree = index_tree(source.path, split="train") if source.is_image_tree else None
    return common_size(tree.iter_bytes()) if tree is not None else None


def load_image_dataset(source: str | DataSource, *, split: str = "train", **options: Any) -> InMemoryImageDataset:
    """One split of a source as an in-memory uint8 dataset; ``options`` are ``DataConfig`` fields.

    >>> test = load_image_dataset("cifar10", split="test", download=True)
    >>> train = load_image_dataset("/data/cifar10-train-jpeg.tar")      # decoded once, then cached
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} must be one of {SPLITS} (use DataConfig.val_split for a validation set)")
    config = DataConfig(source=resolve_source(source).text, **options)
    dataset = _resize(_load_sources(config, (split,))[split], config.image_size)
    if dataset is None:
        raise FileNotFoundError(f"{source} has no {split!r} split (an image tree needs a {split}/ folder for it)")
    return dataset


def load_data(config: DataConfig) -> DataSplits:
    """Train, validation (held out of train, stratified and seeded) and test sets for ``config``."""
    loaded = _load_sources(config, SPLITS)
    train = _resize(loaded["train"], config.image_size)
    test = _resize(loaded["test"], config.image_size)
    if train is None:
        raise FileNotFoundError(f"{config.source} has no training images")
    source = resolve_source(config.source)
    empty = sorted(set(range(len(train.class_names))) - set(train.labels.tolist())) \
        if source.is_image_tree else []  # (a named dataset's classes come from its meta file)
    if empty:  # every file of a class folder skipped: a class never learnt, or a one-class "classifier"
        shown = ", ".join(repr(train.class_names[i]) for i in empty[:5]) + (" ..." if len(empty) > 5 else "")
        if source.kind == IMAGE_CSV:  # a CSV's classes come from its rows of both splits
            raise ValueError(f"{config.source}: {len(empty)} label(s) ({shown}) have no usable training rows (only "
                             "test/val rows, or rows whose images were skipped); add training rows or drop them")
        raise ValueError(f"{config.source}: {len(empty)} class folder(s) ({shown}) have no readable training images "
                         "(their files were skipped: see the warnings above); fix those images or remove the folders")
    if test is not None and test.class_names != train.class_names:  # labels index each split's own sorted classes
        test = test.with_class_names(list(train.class_names), where=f"{config.source}: its test (or val) split")
    val = None
    if config.val_split:
        train, val = split_holdout(train, config.val_split, seed=config.seed)
    return DataSplits(train=train, val=val, test=test, class_names=list(train.class_names), config=config)
