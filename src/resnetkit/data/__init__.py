"""Data: CIFAR formats, image folders and tars, the bundled digits, batch augmentation and loaders.

Small images: ``load_data(DataConfig(...))`` gives in-memory uint8 train/val/test sets; iterate them
with ``InMemoryLoader(..., augment=BatchAugment())``. Large images: ``ImageFileDataset`` with a
``paper_train_transform`` / ``eval_transform`` and ``build_file_loader``. See docs/data.md.
"""

from .api import (DataConfig, DataSplits, data_root, first_image_size, load_data, load_image_dataset,
                  open_image_files)
from .augment import BatchAugment, normalize, random_crop_flip
from .cache import cache_dir
from .cifar import download_cifar, load_cifar, read_cifar
from .decode import decode_tree, load_tree_in_memory
from .digits import load_digits_dataset
from .loader import InMemoryLoader
from .memory import InMemoryImageDataset, split_holdout, stratified_split
from .transforms import (FileLoader, ImageFileDataset, build_file_loader, collate_skipping_bad, eval_transform,
                         paper_train_transform, random_resized_crop_transform)
from .tree import ImageTree, index_tree

__all__ = [
    "BatchAugment", "DataConfig", "DataSplits", "FileLoader", "ImageFileDataset", "ImageTree",
    "InMemoryImageDataset", "InMemoryLoader", "build_file_loader", "cache_dir", "collate_skipping_bad", "data_root",
    "decode_tree", "download_cifar", "eval_transform", "first_image_size", "index_tree", "load_cifar", "load_data",
    "load_digits_dataset", "load_image_dataset", "load_tree_in_memory", "normalize", "open_image_files",
    "paper_train_transform", "random_crop_flip", "random_resized_crop_transform", "read_cifar", "split_holdout",
    "stratified_split",
]
