"""Decode an indexed image tree once into an in-memory uint8 dataset (cached on disk).

Decoding uses torchvision's libjpeg/libpng/libwebp decoders (``torchvision.io.decode_image``) in
a thread pool over chunks of images: the decoders release the GIL, so threads scale without the
cost of shipping bytes and pixels between processes. Images whose size differs from the target are
resized (shorter side) and centre-cropped. An image that cannot be decoded (truncated, corrupt, not
an image at all) is reported by path and skipped; it never stops the run.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF

try:  # torchvision's decoders are ~3x faster than PIL on small JPEGs; PIL remains the fallback.
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # pragma: no cover - a future torchvision without image decoding
    decode_image = None
# torchvision 0.29 deprecates its decoders in favour of TorchCodec and warns on every call; the
# decoders still work and TorchCodec is not a dependency, so silence exactly that message.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

from .cache import cache_path, load_cached, save_cached
from .memory import InMemoryImageDataset
from .tree import ImageTree, index_tree, report_skipped

logger = logging.getLogger(__name__)
CHUNK = 512


def decode_rgb(data: bytes) -> torch.Tensor:
    """Encoded bytes -> (3, H, W) uint8; raises ValueError naming the cause when they are not a whole image."""
    if not data:
        raise ValueError("empty file")
    torchvision_error: Exception | str = "not available"
    if decode_image is not None:
        try:
            # EXIF orientation applied, as predict does (infer.images): a phone photo stored on its side is
            # trained on, evaluated and predicted upright alike.
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                                 apply_exif_orientation=True)
            return image[0] if image.dim() == 4 else image  # an animated GIF: its first frame
        except RuntimeError as error:
            torchvision_error = error
    # Formats or corner cases the torchvision build cannot decode: PIL, which also detects truncation.
    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray((ImageOps.exif_transpose(image) or image).convert("RGB"))
    except Exception as error:  # noqa: BLE001 - PIL raises many types for bad data
        detail = re.sub(r"^\S+, \S+:\d+, ", "", str(torchvision_error).strip())  # drop the C++ file:line prefix
        raise ValueError(f"{type(error).__name__}: {error} (torchvision: {detail})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def fit_to_size(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (C, H, W) or (N, C, H, W) so the shorter side fits ``size`` (H, W), then centre-crop."""
    height, width = image.shape[-2:]
    if (height, width) == tuple(size):
        return image
    scale = max(size[0] / height, size[1] / width)
    resized = TF.resize(image, [max(size[0], round(height * scale)), max(size[1], round(width * scale))],
                        antialias=True)
    return TF.center_crop(resized, list(size))


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def decode_tree(tree: ImageTree, *, image_size: int | None = None, workers: int | None = None) -> InMemoryImageDataset:
    """Decode every image of ``tree`` into one (N, 3, H, W) uint8 tensor, skipping (and reporting) bad files.

    ``image_size`` fixes a square output size; without it the first decodable image's size is used
    and images of another size are resized to it (with a warning saying how many).
    """
    workers = workers or default_workers()
    n = len(tree)
    target: tuple[int, int] | None = (image_size, image_size) if image_size else None
    images: torch.Tensor | None = None
    ok = torch.zeros(n, dtype=torch.bool)
    failures: dict[int, str] = {}
    resized: Counter[tuple[int, int]] = Counter()

    def decode_chunk(chunk: list[tuple[int, bytes]]) -> tuple[dict[int, str], Counter[tuple[int, int]]]:
        chunk_failures: dict[int, str] = {}
        chunk_resized: Counter[tuple[int, int]] = Counter()
        for index, data in chunk:
            try:
                pixels = decode_rgb(data)
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
    pending: list[tuple[int, bytes]] = []
    if target is None:
        # Fix the size from the first decodable image, in the order the tree is read.
        for index, data in stream:
            pending.append((index, data))
            try:
                target = tuple(decode_rgb(data).shape[1:])  # type: ignore[assignment]
                break
            except ValueError:
                continue
        if target is None:
            target = (1, 1)  # nothing decodable at all; reported below
    images = torch.zeros((n, 3, *target), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = []
        for item in stream:
            pending.append(item)
            if len(pending) >= CHUNK:
                futures.append(pool.submit(decode_chunk, pending))
                pending = []
        futures.append(pool.submit(decode_chunk, pending))
        for future in futures:
            chunk_failures, chunk_resized = future.result()
            failures.update(chunk_failures)
            resized.update(chunk_resized)

    where = (lambda i: f"{tree.source}:{tree.paths[i]}") if tree.is_tar else (lambda i: tree.paths[i])
    skipped = list(tree.skipped) + [(where(i), reason) for i, reason in sorted(failures.items())]
    report_skipped(skipped, source=tree.source)
    if resized:
        logger.warning("%s: resized %d image(s) of other sizes (%s) to %s", tree.source, sum(resized.values()),
                       ", ".join(f"{h}x{w}" for h, w in list(resized)[:5]), target)
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
