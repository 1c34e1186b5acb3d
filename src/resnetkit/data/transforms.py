"""Large images (ImageNet-sized): per-sample torchvision v2 pipelines and DataLoader workers.

Large images do not fit in memory decoded, so they are decoded per sample in DataLoader worker
processes. ``paper_train_transform`` is the ImageNet recipe of the paper (section 3.4): the shorter
side resized to a random length in [256, 480], a random 224x224 crop, a horizontal flip and, with
``lighting`` > 0, the "standard color augmentation" it cites (AlexNet's PCA lighting noise,
``PCALighting``); ``random_resized_crop_transform`` is the later
torchvision/timm standard. The evaluation transform is ``preprocess.eval_transform``, the one every
evaluation and prediction path uses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from ..config import IMAGENET_PREPROCESS, Preprocess
from .image import decode_rgb
from .loader import derive_seed
from .preprocess import interpolation_mode
from .tree import ImageTree, index_tree, report_skipped

logger = logging.getLogger(__name__)

# The principal components of ImageNet's RGB pixels (values in [0, 1]), as AlexNet's lighting noise uses them
# (the figures of fb.resnet.torch and the torchvision-era reproductions).
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


class PCALighting:
    """AlexNet's colour augmentation: add ``eigvec @ (alpha * eigval)`` to every pixel, ``alpha ~ N(0, std)``.

    Takes a float image in [0, 1] (after ``ToDtype``, before ``Normalize``); no library ships it.
    """

    def __init__(self, std: float = 0.1, eigval: tuple[float, ...] = IMAGENET_PCA_EIGVAL,
                 eigvec: tuple[tuple[float, ...], ...] = IMAGENET_PCA_EIGVEC) -> None:
        self.std, self.eigval, self.eigvec = std, torch.tensor(eigval), torch.tensor(eigvec)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.std <= 0:
            return image
        alpha = torch.randn(3) * self.std
        return image + (self.eigvec @ (alpha * self.eigval)).to(image.dtype)[:, None, None]


def _to_normalized(preprocess: Preprocess, lighting: float = 0.0) -> list[Any]:
    return [v2.ToDtype(torch.float32, scale=True), *([PCALighting(lighting)] if lighting > 0 else []),
            v2.Normalize(list(preprocess.mean), list(preprocess.std))]


def paper_train_transform(preprocess: Preprocess = IMAGENET_PREPROCESS, *, min_size: int = 256,
                          max_size: int = 480, lighting: float = 0.0) -> v2.Compose:
    """Scale augmentation (shorter side uniform in [min_size, max_size]), random crop, flip, PCA lighting, normalise."""
    if not 0 < min_size <= max_size or min_size < preprocess.input_size:
        raise ValueError(f"need input_size {preprocess.input_size} <= min_size {min_size} <= max_size {max_size}")
    return v2.Compose([
        v2.ToImage(),
        v2.RandomShortestSize(min_size=list(range(min_size, max_size + 1)), interpolation=interpolation_mode(preprocess.interpolation),
                              antialias=True),
        v2.RandomCrop(preprocess.input_size),
        v2.RandomHorizontalFlip(),
        *_to_normalized(preprocess, lighting),
    ])


def random_resized_crop_transform(preprocess: Preprocess = IMAGENET_PREPROCESS, *,
                                  scale: tuple[float, float] = (0.08, 1.0), lighting: float = 0.0) -> v2.Compose:
    """RandomResizedCrop (area ``scale``, aspect 3/4..4/3) to ``input_size``, flip, PCA lighting, normalise."""
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(preprocess.input_size, scale=scale, interpolation=interpolation_mode(preprocess.interpolation),
                             antialias=True),
        v2.RandomHorizontalFlip(),
        *_to_normalized(preprocess, lighting),
    ])


class ImageFileDataset(Dataset):
    """One split of an image folder or (uncompressed) tar, decoded per sample, for DataLoader workers.

    ``dataset[i]`` is ``(transform(image), label)``, or None when the file cannot be decoded; use
    ``collate_skipping_bad`` (``build_file_loader`` does) so such samples are dropped from the batch
    and reported by path instead of stopping the run.
    """

    def __init__(self, source: str | os.PathLike[str], *, split: str = "train",
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        tree = index_tree(source, split=split)
        if tree is None:
            raise FileNotFoundError(f"{source} has no {split!r} split folder")
        if tree.is_tar and not tree.spans:
            tree.read_bytes(0)  # raises the "compressed tar" explanation now, not in a worker
        self.tree: ImageTree = tree
        self.transform = transform
        self.class_names = tree.class_names
        report_skipped(tree.skipped, source=tree.source)

    def __len__(self) -> int:
        return len(self.tree)

    def with_class_names(self, names: list[str], *, where: str) -> ImageFileDataset:
        """This split labelled by ``names`` (a superset of its classes: the training split's), in place."""
        self.tree = self.tree.with_class_names(names, where=where)
        self.class_names = self.tree.class_names
        return self

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        where = self.tree.paths[index]
        try:
            image = decode_rgb(self.tree.read_bytes(index))
        except (OSError, ValueError) as error:
            logger.warning("skipped %s: %s", f"{self.tree.source}:{where}" if self.tree.is_tar else where, error)
            return None
        if self.transform is not None:
            image = self.transform(image)
        return image, self.tree.labels[index]


def collate_skipping_bad(batch: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Default collation of the samples that decoded; undecodable ones (None) were logged by path and are dropped."""
    good = [sample for sample in batch if sample is not None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64)
    return torch.stack([image for image, _ in good]), torch.tensor([label for _, label in good], dtype=torch.int64)


class FileLoader:
    """Batches of an ``ImageFileDataset`` decoded by DataLoader worker processes.

    The order is a seeded permutation per epoch, sharded over ``world_size`` ranks by a
    ``DistributedSampler``; the workers are started afresh each epoch from a generator seeded by
    ``(seed, epoch, rank)``, so their random crops, like the order, are a function of the epoch and a
    resumed run sees the same ones. Each iteration is the next epoch; ``set_epoch(n)`` jumps to epoch n.
    Batches whose every file was unreadable are left out.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, num_workers: int = 4, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False) -> None:
        self.seed, self.rank = seed, rank
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                          drop_last=drop_last)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
                                 collate_fn=collate_skipping_bad, drop_last=drop_last, pin_memory=pin_memory,
                                 persistent_workers=False, generator=torch.Generator())
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(self.epoch)
        self.loader.generator.manual_seed(derive_seed(self.seed, self.epoch, self.rank))
        self.epoch += 1
        for images, labels in self.loader:
            if len(labels):
                yield images, labels


def build_file_loader(dataset: Dataset, *, batch_size: int, num_workers: int = 4, shuffle: bool = True,
                      drop_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                      pin_memory: bool = False) -> FileLoader:
    """A ``FileLoader``: worker processes, seeded per-epoch shuffling, DDP sharding for ``world_size > 1``.

    Each pass is a new epoch (new order, new random crops); ``set_epoch`` sets which (DDP, resuming).
    """
    return FileLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=shuffle, drop_last=drop_last,
                      seed=seed, rank=rank, world_size=world_size, pin_memory=pin_memory)
