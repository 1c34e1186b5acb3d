"""The bundled demo data: the 8x8 handwritten digits, shipped in the package, no download needed.

1,797 grey 8x8 images with 17 grey levels (``digits.npz``, 45 KB: the copy scikit-learn ships as
``load_digits``, from the UCI "Optical Recognition of Handwritten Digits" test set by E. Alpaydin and
C. Kaynak, CC BY 4.0), here scaled to uint8, upsampled (bilinear) to 16x16 and repeated over 3
channels so every CIFAR network (``resnet20`` ...) takes them unchanged. The train/test split is fixed
(seed ``DIGITS_SPLIT_SEED``, 360 test images stratified by class), so a test accuracy means the same
thing everywhere. Do not flip digits when augmenting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .memory import InMemoryImageDataset, check_fits_in_memory, stratified_split

DIGITS_FILE = Path(__file__).with_name("digits.npz")
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 360
DIGITS_CLASS_NAMES = [str(d) for d in range(10)]


def load_digits_dataset(split: str = "train", *, size: int = 16) -> InMemoryImageDataset:
    """The ``"train"`` (1,437 images) or ``"test"`` (360 images) split of the digits, as (N, 3, size, size) uint8."""
    if split not in ("train", "test"):
        raise ValueError(f"digits split {split!r} must be 'train' or 'test'")
    with np.load(DIGITS_FILE, allow_pickle=False) as bundled:
        grey, target = bundled["images"], bundled["labels"]  # (1797, 8, 8) in 0..16, (1797,) in 0..9
    check_fits_in_memory(4 * len(grey), (size, size), source="digits")  # resized in float32: 4 bytes a value
    pixels = torch.as_tensor(grey, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    if size != 8:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    images = pixels.round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.as_tensor(target, dtype=torch.int64)
    train_index, test_index = stratified_split(labels, DIGITS_TEST_SIZE, seed=DIGITS_SPLIT_SEED)
    index = train_index if split == "train" else test_index
    return InMemoryImageDataset(images[index].clone(), labels[index].clone(), list(DIGITS_CLASS_NAMES),
                                source=f"digits:{split}")
