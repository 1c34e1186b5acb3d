"""Datasets held in memory as one uint8 tensor: small images (CIFAR, digits, decoded folders).

An ``InMemoryImageDataset`` is the common currency of the data layer: every small-image source
(CIFAR batches, image folders and tars decoded once, the bundled digits) ends up as ``images``
(N, C, H, W) uint8 plus ``labels`` (N,) int64 and the ``class_names`` they index. Augmentation and
normalisation happen later, on whole batches (see ``augment.py`` and ``loader.py``).
"""

from __future__ import annotations

import os

from dataclasses import dataclass, field

import numpy as np
import torch

from .classes import relabelling


@dataclass
class InMemoryImageDataset:
    """Images as one (N, C, H, W) uint8 tensor, labels as (N,) int64, and the class names labels index.

    ``skipped`` lists ``(path, reason)`` for files that could not be used (unreadable, truncated, not
    an image); ``source`` says where the data came from. ``dropped`` lists ``(position, label)`` of the
    image files that failed to decode, by their position in the source's file list, so that a split
    drawn over that list (``split_holdout``) does not depend on which files decode. Indexing returns
    ``(image_uint8, label)`` so the dataset also works with a plain ``torch.utils.data.DataLoader``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be a (N, C, H, W) uint8 tensor, got {self.images.dtype} "
                             f"of shape {tuple(self.images.shape)}")
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64)
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.class_names):
            raise ValueError(f"labels span [{int(self.labels.min())}, {int(self.labels.max())}] but there are "
                             f"{len(self.class_names)} class names")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices: torch.Tensor | np.ndarray | list[int]) -> InMemoryImageDataset:
        """A new dataset holding only ``indices`` (copied, so the parent can be freed)."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return InMemoryImageDataset(self.images[index].clone(), self.labels[index].clone(), list(self.class_names),
                                    source=self.source, skipped=list(self.skipped))

    def with_class_names(self, names: list[str], *, where: str) -> InMemoryImageDataset:
        """This split labelled by ``names`` (a superset of its classes: the training split's)."""
        index = torch.tensor(relabelling(list(self.class_names), list(names), where=where), dtype=torch.int64)
        return InMemoryImageDataset(self.images, index[self.labels], list(names), source=self.source,
                                    skipped=list(self.skipped))

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.num_classes)

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation in [0, 1] units (what ``Normalize`` expects)."""
        # Exact, from per-channel histograms of the 256 byte values: no float copy of the dataset.
        channels = self.images.shape[1]
        histogram = torch.zeros(channels, 256, dtype=torch.float64)
        for c in range(channels):
            histogram[c] = torch.bincount(self.images[:, c].flatten(), minlength=256).double()
        values = torch.arange(256, dtype=torch.float64)
        count = histogram.sum(dim=1)
        mean = (histogram * values).sum(dim=1) / count
        std = ((histogram * (values - mean[:, None]).square()).sum(dim=1) / count).sqrt()
        return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


def check_fits_in_memory(count: int, size: tuple[int, int], *, source: str) -> None:
    """Refuse, before allocating it, an in-memory dataset over half of this machine's memory."""
    need = count * 3 * size[0] * size[1]
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: nothing to compare with
        return
    if need > total // 2:
        raise ValueError(f"{source}: {count:,} images of {size[1]}x{size[0]} held in memory need {need / 2**30:.1f} "
                         f"GiB, over half of this machine's {total / 2**30:.0f} GiB; use a smaller --image-size, or "
                         "--augment rrc / scale, which read the images file by file")


def stratified_split(labels: torch.Tensor, holdout: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into ``(keep, holdout)`` with ``holdout`` samples, stratified by label.

    Each class gives up a share of the holdout proportional to its size (largest-remainder rounding,
    so the total is exact); which samples go is decided by ``seed`` alone, so the split is the same on
    every machine and every run. Both index tensors come back sorted.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    n = len(labels)
    classes, counts = torch.unique(labels, return_counts=True)
    if not 0 <= holdout <= n - len(classes):  # every class keeps one training image at least
        raise ValueError(f"val_split={holdout} (--val-split): cannot hold out {holdout} of the {n} training images; "
                         f"choose 0 (no validation split) to at most {max(n - len(classes), 0)}, which leaves each "
                         f"of the {len(classes)} classes an image to train on")
    if holdout == 0:
        return torch.arange(n), torch.empty(0, dtype=torch.int64)
    exact = counts.to(torch.float64) * holdout / n
    quota = exact.floor().to(torch.int64)
    remainder = holdout - int(quota.sum())
    if remainder:
        # Largest fractional part first; ties go to the lower class index (stable sort).
        order = torch.sort(exact - quota, descending=True, stable=True).indices
        quota[order[:remainder]] += 1
    emptied = [(cls, count) for cls, count, take in zip(classes.tolist(), counts.tolist(), quota.tolist())
               if take >= count]
    if emptied:
        cls, count = emptied[0]
        raise ValueError(f"val_split={holdout} (--val-split): holding out {holdout} of {n} images, a share of each "
                         f"class, would leave class #{cls} (with {count} image(s)) nothing to train on"
                         f"{f', and {len(emptied) - 1} other class(es)' if len(emptied) > 1 else ''}; lower the "
                         "validation split or add images")
    generator = torch.Generator().manual_seed(seed)
    held = []
    for cls, take in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        held.append(members[torch.randperm(len(members), generator=generator)[:take]])
    held_index = torch.sort(torch.cat(held)).values
    mask = torch.ones(n, dtype=torch.bool)
    mask[held_index] = False
    return torch.nonzero(mask).flatten(), held_index


def split_holdout(dataset: InMemoryImageDataset, holdout: int, *,
                  seed: int) -> tuple[InMemoryImageDataset, InMemoryImageDataset]:
    """``(train, val)``: ``holdout`` images moved from ``dataset`` into a stratified, seeded validation set.

    The split is drawn over the source's whole file list, undecodable files included (``dataset.dropped``),
    and those are then left out of whichever side they fell on: the same images are held out as when the
    files are read one by one (``ImageFileDataset``, ``resnetkit eval --val-split``), where a bad file
    only shows when it is read.
    """
    present = torch.ones(len(dataset) + len(dataset.dropped), dtype=torch.bool)
    labels = torch.empty(len(present), dtype=torch.int64)
    for position, label in dataset.dropped:
        present[position], labels[position] = False, label
    labels[present] = dataset.labels
    row = torch.cumsum(present, 0) - 1  # file position -> row of ``dataset``
    keep, held = stratified_split(labels, holdout, seed=seed)
    keep, held = row[keep[present[keep]]], row[held[present[held]]]
    if holdout and not len(held):
        raise ValueError(f"{dataset.source}: all {holdout} held-out files failed to decode (see the warnings); "
                         "fix or remove them, or hold out more images")
    return dataset.subset(keep), dataset.subset(held)
