"""What a data source string names, decided once: ``resolve_source("cifar10")`` -> a ``DataSource``.

A source is a name (``"digits"``, ``"cifar10"``, ``"cifar100"``) or a path: CIFAR batches (the official
folder or archive, or a folder holding one), an image tree (a folder or tar of ``<class>/<image>``,
optionally under ``train/`` and ``test/`` or ``val/``), or a CSV listing images with their labels. Loading (``api.load_data``), training's choice of
augmentation and loader, ``resnetkit eval`` and export all ask the resolved object rather than
classifying the string again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .cifar import CIFAR_NAMES, detect_format
from .labels_csv import is_labels_csv
from .tree import TAR_SUFFIXES, is_compressed, is_tar_path, tree_splits

DIGITS, CIFAR_NAME, CIFAR_FILES, IMAGE_FOLDER, IMAGE_TAR = ("digits", "cifar-name", "cifar-archive", "image-folder",
                                                            "image-tar")
IMAGE_CSV = "image-csv"  # images listed with their labels in a CSV file (data/labels_csv.py)
KINDS = (DIGITS, CIFAR_NAME, CIFAR_FILES, IMAGE_FOLDER, IMAGE_TAR, IMAGE_CSV)


@dataclass(frozen=True)
class DataSource:
    """A resolved data source: its ``kind`` (one of ``KINDS``), the ``text`` it was given as, and its ``path``
    (None for names). ``splits`` and ``file_by_file`` answer what the others used to work out for themselves."""

    text: str
    kind: str
    path: Path | None = None

    @property
    def is_image_tree(self) -> bool:
        """Read by ``tree.index_tree``: a folder or tar of class folders, or a labels CSV."""
        return self.kind in (IMAGE_FOLDER, IMAGE_TAR, IMAGE_CSV)

    @cached_property
    def file_by_file(self) -> bool:
        """Whether images can be read one at a time, at random (a folder or an uncompressed tar of images).

        Everything else (names, CIFAR batches, compressed tars) is decoded into memory instead.
        """
        return self.kind in (IMAGE_FOLDER, IMAGE_CSV) or (self.kind == IMAGE_TAR and not is_compressed(self.path))

    @cached_property
    def splits(self) -> tuple[str, ...]:
        """Which of ``("train", "test")`` the source holds; a tree without split folders is all ``"train"``.

        For a tree this lists its files (for a compressed tar, one pass over the archive), so it is
        computed when first asked for.
        """
        if self.is_image_tree:
            return tree_splits(self.path)
        return ("train", "test")

    @property
    def evaluation_split(self) -> str:
        """What evaluation reads: the test split (a tree's ``test/`` or ``val/``), else the whole training split."""
        return "test" if "test" in self.splits else "train"


def is_cifar_source(path: Path) -> bool:
    """Whether ``path`` holds CIFAR batches (a batches folder or archive, or a folder with one inside)."""
    return detect_format(path) is not None or (path.is_dir() and any(
        detect_format(child) is not None for child in path.iterdir() if child.is_dir()))


def resolve_source(source: str | os.PathLike[str] | DataSource) -> DataSource:
    """Classify a source once; raises FileNotFoundError / ValueError saying what a source may be."""
    if isinstance(source, DataSource):
        return source
    text = os.fspath(source)
    if text == "digits":
        return DataSource(text, DIGITS)
    if text in CIFAR_NAMES:
        return DataSource(text, CIFAR_NAME)
    path = Path(text).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data source {text!r} is neither a dataset name ('digits', 'cifar10', 'cifar100') "
                                "nor an existing folder or archive")
    if not path.is_dir() and not path.is_file():  # a pipe or device would block the first read forever
        raise ValueError(f"data source {text!r} is not a regular file or folder (a pipe, socket or device); give a "
                         "folder or tar of <class>/<image>, or a dataset name")
    if is_labels_csv(path):
        return DataSource(text, IMAGE_CSV, path)
    if is_cifar_source(path):
        return DataSource(text, CIFAR_FILES, path)
    if path.is_dir():
        return DataSource(text, IMAGE_FOLDER, path)
    if is_tar_path(path):
        return DataSource(text, IMAGE_TAR, path)
    raise ValueError(f"data source {text!r} is a file but not an archive of images ({', '.join(TAR_SUFFIXES)}), "
                     "a labels CSV (.csv) or CIFAR batches; give a folder or tar of <class>/<image>, a CSV of "
                     "image,label rows, or a dataset name")
