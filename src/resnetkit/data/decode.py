"""Decode an indexed image tree once into an in-memory uint8 dataset (cached on disk).

Each image goes through the one decoder (``image.decode_rgb``: EXIF, alpha on white, 16-bit, ...) in
a thread pool over chunks of images: its libjpeg/libpng decoders release the GIL, so threads scale
without the cost of shipping bytes and pixels between processes. Images whose size differs from the
target are resized and centre-cropped by ``preprocess.fit_to_size``, the resize and crop of evaluation.
An image that cannot be decoded (truncated, corrupt, not an image at all) is reported by path and
skipped; it never stops the run.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from .cache import cache_path, load_cached, save_cached
from .image import ImageLoadError, decode_rgb
from .memory import InMemoryImageDataset, check_fits_in_memory
from .preprocess import fit_to_size
from .tree import ImageTree, index_tree, report_skipped

__all__ = ["decode_rgb", "decode_tree", "fit_to_size", "load_tree_in_memory"]

logger = logging.getLogger(__name__)
CHUNK = 512  # images per task of the thread pool
CHUNK_BYTES = 32 * 2**20  # ... or fewer, when their encoded bytes reach this (a folder of large files)
# Chunks read ahead of the decoders, per thread: reading stops while this many wait, so the encoded bytes held at
# once stay near CHUNK_BYTES x workers x 2 whatever the size of the data.
AHEAD_PER_WORKER = 2
SIZE_SAMPLE = 32  # decodable images looked at to choose the in-memory size when none is given
ChunkResult = tuple[dict[int, str], Counter[tuple[int, int]]]  # a chunk's failures by index, and resized sizes


def decode_read(data: bytes | ImageLoadError) -> torch.Tensor:
    """``decode_rgb`` of what ``ImageTree.iter_bytes`` yields: bytes, or the error that kept them from being read."""
    if isinstance(data, ImageLoadError):
        raise data
    return decode_rgb(data)


def common_size(stream: Iterator[tuple[int, bytes | ImageLoadError]], *,
                read: list[tuple[int, bytes | ImageLoadError]] | None = None) -> tuple[int, int] | None:
    """``(height, width)`` most common among the first decodable images of ``stream`` (up to ``SIZE_SAMPLE``, the
    first seen on a tie), so that one odd image at the start (a 1x64 strip) does not set the size of the others;
    None when nothing is decodable. Every item taken from ``stream`` is added to ``read`` (a file that failed as
    its reason, not its bytes: a run of large broken files costs no memory)."""
    sizes: Counter[tuple[int, int]] = Counter()
    read = [] if read is None else read
    sampled_bytes = 0
    for index, data in stream:
        try:
            sizes[tuple(decode_read(data).shape[1:])] += 1  # type: ignore[index]
        except ValueError as error:
            read.append((index, ImageLoadError(str(error))))
            continue
        read.append((index, data))
        sampled_bytes += len(data)  # type: ignore[arg-type]
        if sizes.total() >= SIZE_SAMPLE or sampled_bytes >= CHUNK_BYTES:
            break
    return sizes.most_common(1)[0][0] if sizes else None


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def decode_tree(tree: ImageTree, *, image_size: int | None = None, workers: int | None = None) -> InMemoryImageDataset:
    """Decode every image of ``tree`` into one (N, 3, H, W) uint8 tensor, skipping (and reporting) bad files.

    ``image_size`` fixes a square output size; without it the most common size among the first decodable images
    (up to ``SIZE_SAMPLE``) is used and images of another size are resized to it (with a warning saying how many).
    """
    workers = workers or default_workers()
    n = len(tree)
    target: tuple[int, int] | None = (image_size, image_size) if image_size else None
    images: torch.Tensor | None = None
    ok = torch.zeros(n, dtype=torch.bool)
    failures: dict[int, str] = {}
    resized: Counter[tuple[int, int]] = Counter()

    def decode_chunk(chunk: list[tuple[int, bytes | ImageLoadError]]) -> ChunkResult:
        chunk_failures: dict[int, str] = {}
        chunk_resized: Counter[tuple[int, int]] = Counter()
        for index, data in chunk:
            try:
                pixels = decode_read(data)
            except ValueError as error:
                chunk_failures[index] = str(error)
                continue
            if tuple(pixels.shape[1:]) != target:
                chunk_resized[tuple(pixels.shape[1:])] += 1
                pixels = fit_to_size(pixels, target)  # type: ignore[arg-type]
            images[index] = pixels  # type: ignore[index]  # each index is written by one thread only
            ok[index] = True
        return chunk_failures, chunk_resized

    stream = tree.iter_bytes()
    pending: list[tuple[int, bytes | ImageLoadError]] = []
    if target is None:
        target = common_size(stream, read=pending) or (1, 1)  # (1, 1): nothing decodable; reported below
    check_fits_in_memory(n, target, source=str(tree.source))
    images = torch.zeros((n, 3, *target), dtype=torch.uint8)

    def collect(future: Future[ChunkResult]) -> None:
        chunk_failures, chunk_resized = future.result()
        failures.update(chunk_failures)
        resized.update(chunk_resized)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        in_flight: deque[Future[ChunkResult]] = deque()
        pending_bytes = 0
        for item in stream:
            pending.append(item)
            pending_bytes += len(item[1]) if isinstance(item[1], bytes) else 0
            if len(pending) >= CHUNK or pending_bytes >= CHUNK_BYTES:
                in_flight.append(pool.submit(decode_chunk, pending))
                pending, pending_bytes = [], 0
                while len(in_flight) > AHEAD_PER_WORKER * workers:
                    collect(in_flight.popleft())
        in_flight.append(pool.submit(decode_chunk, pending))
        while in_flight:
            collect(in_flight.popleft())

    where = (lambda i: f"{tree.source}:{tree.paths[i]}") if tree.is_tar else (lambda i: tree.paths[i])
    skipped = list(tree.skipped) + [(where(i), reason) for i, reason in sorted(failures.items())]
    report_skipped(skipped, source=tree.source)
    if resized:
        logger.warning("%s: resized %d image(s) of other sizes (width x height: %s) to %dx%d", tree.source,
                       sum(resized.values()), ", ".join(f"{w}x{h}" for h, w in list(resized)[:5]), target[1],
                       target[0])
    if not bool(ok.any()):
        raise ValueError(f"none of the {n} images in {tree.source} could be decoded; see the warning above")
    keep = torch.nonzero(ok).flatten()
    all_ok = len(keep) == n
    return InMemoryImageDataset(images if all_ok else images[keep],
                                torch.tensor(tree.labels)[keep], list(tree.class_names), source=tree.source,
                                skipped=skipped, dropped=[(i, tree.labels[i]) for i in sorted(failures)])


def load_tree_in_memory(source: str | os.PathLike[str], *, split: str = "train", image_size: int | None = None,
                        workers: int | None = None, cache: bool = True) -> InMemoryImageDataset | None:
    """Index and decode one split of an image folder or tar, reusing the on-disk cache when it is current.

    Returns None when the tree has no such split (e.g. ``split="test"`` on a tree without ``test/``).
    """
    path = None
    if cache:
        path = cache_path(source, {"split": split, "image_size": image_size})
        cached = load_cached(path)
        if cached is not None:
            logger.info("loaded %s (%s) from cache %s", source, split, path)
            cached.source = str(source)  # the cache may have been written for a copy elsewhere
            report_skipped(cached.skipped, source=str(source))
            return cached
    tree = index_tree(source, split=split)
    if tree is None:
        return None
    dataset = decode_tree(tree, image_size=image_size, workers=workers)
    if path is not None:
        try:
            save_cached(path, dataset)
        except OSError as error:  # a read-only or full cache disk costs speed, not the run
            logger.warning("could not write cache %s: %s", path, error)
    return dataset
