"""Augmentation and normalisation of whole batches, on the batch's own device.

The CIFAR recipe of the paper (section 4.2): pad 4 pixels on each side, take a random 32x32 crop,
flip horizontally with probability 1/2. Done per sample in Python this costs more CPU than a
ResNet-20 training step; here it is one gather over the whole batch: each output pixel reads
``padded[n, c, dy[n] + i, dx[n] + j]`` (or the mirrored column when sample n is flipped), so crop
and flip cost a single indexing operation and no per-sample loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, *, padding: int = 4, flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by ``padding``, crop back to the input size at a random offset, randomly mirror.

    ``images`` is (N, C, H, W) of any dtype (uint8 is cheapest). The result has the same shape and
    dtype and channels-last memory layout (the gather produces it for free); call ``.contiguous()``
    for NCHW memory. Offsets and flips come from ``generator``, which must live on ``images.device``.
    """
    if images.dim() != 4:
        raise ValueError(f"expected a (N, C, H, W) batch, got shape {tuple(images.shape)}")
    n, channels, height, width = images.shape
    device = images.device
    # Pad in (N, H, W, C) order so that each gathered pixel is C contiguous values: one index_select
    # of N*H*W rows is several times faster than indexing N*C*H*W single values.
    pixels = F.pad(images.permute(0, 2, 3, 1), (0, 0, padding, padding, padding, padding)).contiguous()
    padded_h, padded_w = height + 2 * padding, width + 2 * padding
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=device, generator=generator)
    cols = torch.arange(width, device=device).expand(n, width)
    if flip:
        mirrored = torch.rand(n, 1, device=device, generator=generator) < 0.5
        cols = torch.where(mirrored, width - 1 - cols, cols)
    rows = dy + torch.arange(height, device=device)
    cols = dx + cols
    first_row = torch.arange(n, device=device)[:, None, None] * (padded_h * padded_w)
    flat = (first_row + rows[:, :, None] * padded_w + cols[:, None, :]).flatten()
    out = pixels.view(-1, channels).index_select(0, flat).view(n, height, width, channels)
    return out.permute(0, 3, 1, 2)


def normalize(images: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor, *,
              dtype: torch.dtype = torch.float32, channels_last: bool = False) -> torch.Tensor:
    """uint8 (0..255) or float (0..1) batch -> ``(x - mean) / std`` in ``dtype``.

    ``mean`` and ``std`` are per channel in [0, 1] units, as in ``resnetkit.config.Preprocess`` (or
    tensors already on the batch's device, which saves a host-to-device copy per batch).
    With ``channels_last`` the result uses ``torch.channels_last`` memory (faster convolutions with
    bf16/fp16 and on most GPUs); otherwise it is contiguous NCHW.
    """
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    # (x / scale - mean) / std as one fused x * a + b, so the batch is read once after conversion.
    gain = 1.0 / (std_t * scale)
    bias = -mean_t / std_t
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.addcmul(bias, images.to(dtype=torch.float32, memory_format=fmt), gain)
    return out if dtype == torch.float32 else out.to(dtype)


@dataclass(frozen=True)
class BatchAugment:
    """The paper's CIFAR augmentation as a callable on batches: ``augment(images, generator)``.

    ``padding=0, flip=False`` is the identity. Use ``flip=False`` for data whose meaning changes
    when mirrored (digits, text).
    """

    padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise ValueError(f"padding={self.padding} must be >= 0")

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.padding == 0 and not self.flip:
            return images
        return random_crop_flip(images, padding=self.padding, flip=self.flip, generator=generator)
