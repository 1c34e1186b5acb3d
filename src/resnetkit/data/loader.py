"""A batch loader over an in-memory dataset: shuffled per epoch, sharded for DDP, augmented on device.

No worker processes and no per-sample Python: each batch is one index gather from the uint8 image
tensor (kept on the training device), one batch augmentation and one normalisation. Shuffling is a
pure function of ``(seed, epoch)`` and augmentation of ``(seed, epoch, rank)``, so a resumed run
that calls ``set_epoch`` sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from .augment import normalize
from .memory import InMemoryImageDataset

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from several integers (seed, epoch, rank, stream)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class InMemoryLoader:
    """Iterate ``(images, labels)`` batches of an ``InMemoryImageDataset``.

    - ``shuffle``: a new permutation every epoch, identical on every rank (seeded by ``seed, epoch``).
    - ``rank``/``world_size``: each rank takes every ``world_size``-th index of the permutation, so
      shards are disjoint. With ``drop_last=False`` the permutation is padded by wrapping around so all
      ranks get the same number of batches (as ``DistributedSampler`` does; a few samples then count
      twice in an evaluation); with ``drop_last=True`` the tail is dropped instead, and so is a last
      incomplete batch.
    - ``augment``: called as ``augment(uint8_batch, generator)`` on ``device`` (e.g. ``BatchAugment()``).
    - ``mean``/``std``: normalise to ``dtype`` (float32 by default); ``None`` yields the uint8 batch.
    - ``channels_last``: output in ``torch.channels_last`` memory format.

    Iterating starts epoch ``self.epoch`` and then advances it; call ``set_epoch`` to choose it (resume).
    """

    def __init__(self, dataset: InMemoryImageDataset, *, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 augment: Augment | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False, device: torch.device | str = "cpu") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std to normalise, or neither to get uint8 batches")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.augment = augment
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        self._mean_std = None
        if mean is not None and std is not None:
            self._mean_std = (torch.tensor(mean, dtype=torch.float32, device=device),
                              torch.tensor(std, dtype=torch.float32, device=device))
        self.dtype = dtype
        self.channels_last = channels_last
        self.device = torch.device(device)
        # Moved once: per-batch gathers then happen where the model runs.
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def samples_per_rank(self) -> int:
        n = len(self.dataset)
        return n // self.world_size if self.drop_last else math.ceil(n / self.world_size)

    def __len__(self) -> int:
        per_rank = self.samples_per_rank
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for ``epoch``, in iteration order (on CPU)."""
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)))
        else:
            order = torch.arange(n)
        total = self.samples_per_rank * self.world_size
        if total > n:
            order = torch.cat([order, order[: total - n]])
        return order[:total][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        order = self.indices(epoch).to(self.device)
        generator = None
        if self.augment is not None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(derive_seed(self.seed, epoch, self.rank, 1))
        for batch_index in range(len(self)):
            index = order[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]
            images = self.images.index_select(0, index)
            if self.augment is not None:
                images = self.augment(images, generator)
            if self._mean_std is not None:
                images = normalize(images, *self._mean_std, dtype=self.dtype, channels_last=self.channels_last)
            elif self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            else:
                images = images.contiguous()
            yield images, self.labels.index_select(0, index)
