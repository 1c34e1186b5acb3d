"""An on-disk cache of decoded datasets, keyed by the content they came from.

Decoding 50,000 JPEGs takes seconds to minutes; loading the decoded uint8 tensor takes a fraction
of a second. For an archive (or any single file) the key hashes its bytes (a fraction of a second for
the 77 MB CIFAR-10 JPEG tar), so a copy of the archive in another folder finds its cache and any
change of content gets a new one. For a folder, where reading every file would cost about as much as
decoding it, the key hashes every file's relative path, size and modification time. The decoding
options are part of the key. Writes go to a temporary file renamed into place (atomic on POSIX), and
a file that cannot be read back is ignored, removed and rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ..config import cache_dir
from ..files import atomic_path, file_sha256, walk_files
from .labels_csv import csv_fingerprint, is_labels_csv
from .memory import InMemoryImageDataset

logger = logging.getLogger(__name__)
CACHE_FORMAT = 4  # 2: images decoded with their EXIF orientation applied; 3: the undecodable files' positions;
# 4: the one decoder (image.decode_rgb): alpha composited on white, 16-bit rounded to 8 bits, palettes via PIL


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, version: tuple[int, ...]) -> str:
    """SHA-256 of a file, read once per ``version`` (inode, size, mtime, ctime): the train and test splits of
    one archive share it. Any write to the file changes its ctime, which no user can set back."""
    return file_sha256(path)


def source_fingerprint(source: str | os.PathLike[str]) -> list[Any]:
    """What identifies a source's content: a file's SHA-256; a folder's path and its files' paths, sizes, mtimes."""
    path = Path(source).resolve()
    if is_labels_csv(path):  # the listing and the files it names, which live outside it
        return ["csv", str(path), csv_fingerprint(path)]
    if path.is_file():
        stat = path.stat()
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        return ["sha256", _file_sha256(str(path), version)]
    entries: list[Any] = [str(path)]
    for full in walk_files(path):
        try:
            stat = os.stat(full)
        except OSError:
            continue
        entries.append([os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns])
    return entries


def cache_key(source: str | os.PathLike[str], options: dict[str, Any]) -> str:
    payload = json.dumps({"format": CACHE_FORMAT, "source": source_fingerprint(source), "options": options},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def cache_path(source: str | os.PathLike[str], options: dict[str, Any]) -> Path:
    stem = Path(source).name.split(".")[0] or "dataset"
    return cache_dir() / "decoded" / f"{stem}-{cache_key(source, options)}.pt"


def save_cached(path: Path, dataset: InMemoryImageDataset) -> None:
    """Write atomically: a reader sees the old file, no file, or the complete new one."""
    payload = {"format": CACHE_FORMAT, "images": dataset.images.contiguous(), "labels": dataset.labels,
               "class_names": list(dataset.class_names), "source": dataset.source,
               "skipped": [list(item) for item in dataset.skipped], "dropped": [list(d) for d in dataset.dropped]}
    with atomic_path(path) as tmp, open(tmp, "wb") as file:  # a full disk: atomic_path names the file
        torch.save(payload, file)


def load_cached(path: Path) -> InMemoryImageDataset | None:
    """The cached dataset, or None if absent; an unreadable or malformed file is reported, removed and ignored."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != CACHE_FORMAT:
            raise ValueError(f"cache format {payload.get('format')!r}, expected {CACHE_FORMAT}")
        return InMemoryImageDataset(payload["images"], payload["labels"], list(payload["class_names"]),
                                    source=payload["source"], skipped=[tuple(s) for s in payload["skipped"]],
                                    dropped=[(int(i), int(label)) for i, label in payload["dropped"]])
    except Exception as error:  # noqa: BLE001 - any failure means "rebuild", never "crash"
        warnings.warn(f"ignoring unreadable cache file {path} ({type(error).__name__}: {error}); rebuilding it",
                      stacklevel=2)
        path.unlink(missing_ok=True)
        return None
