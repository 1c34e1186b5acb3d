"""Data: CIFAR formats, image folders and tars, the bundled digits, batch augmentation and loaders."""

from .augment import BatchAugment, normalize, random_crop_flip
from .digits import load_digits_dataset
from .loader import InMemoryLoader
from .memory import InMemoryImageDataset, split_holdout, stratified_split

__all__ = [
    "BatchAugment", "InMemoryImageDataset", "InMemoryLoader", "load_digits_dataset", "normalize",
    "random_crop_flip", "split_holdout", "stratified_split",
]
