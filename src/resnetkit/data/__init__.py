"""Data: CIFAR formats, image folders and tars, the bundled digits, batch augmentation and loaders.

Small images: ``load_data(DataConfig(...))`` gives in-memory uint8 train/val/test sets; iterate them
with ``InMemoryLoader(..., augment=BatchAugment())``. Large images: ``ImageFileDataset`` with a
``paper_train_transform`` / ``eval_transform`` and ``build_file_loader``. Every image is decoded by
``decode_rgb`` and evaluated through ``eval_transform`` / ``eval_views``; a source string is classified
once by ``resolve_source``. See docs/data.md.
"""

from .api import (DataConfig, DataSplits, common_image_size, data_root, load_data, load_image_dataset,
                  open_image_files)
from .augment import BatchAugment, normalize, random_crop_flip
from .cache import cache_dir
from .cifar import download_cifar, load_cifar, read_cifar
from .decode import decode_tree, load_tree_in_memory
from .digits import load_digits_dataset
from .image import ImageLoadError, decode_rgb, pil_to_rgb
from .loader import InMemoryLoader
from .memory import InMemoryImageDataset, split_holdout, stratified_split
from .preprocess import EvalTransform, center_view, eval_transform, eval_views, fit_to_size, to_model_input
from .source import CIFAR_FILES, CIFAR_NAME, DIGITS, IMAGE_CSV, IMAGE_FOLDER, IMAGE_TAR, DataSource, resolve_source
from .transforms import (FileLoader, ImageFileDataset, build_file_loader, collate_skipping_bad,
                         paper_train_transform, random_resized_crop_transform)
from .tree import ImageTree, index_tree

__all__ = [
    "BatchAugment", "CIFAR_FILES", "CIFAR_NAME", "DIGITS", "DataConfig", "DataSource", "DataSplits", "EvalTransform", "FileLoader", "ImageFileDataset",
    "IMAGE_CSV", "IMAGE_FOLDER", "IMAGE_TAR", "ImageLoadError", "ImageTree", "InMemoryImageDataset", "InMemoryLoader", "build_file_loader", "cache_dir",
    "center_view", "collate_skipping_bad", "data_root", "decode_rgb", "decode_tree", "download_cifar",
    "eval_transform", "eval_views", "common_image_size", "fit_to_size", "index_tree", "load_cifar", "load_data",
    "load_digits_dataset", "load_image_dataset", "load_tree_in_memory", "normalize", "open_image_files",
    "paper_train_transform", "pil_to_rgb", "random_crop_flip", "random_resized_crop_transform", "read_cifar",
    "resolve_source", "split_holdout", "stratified_split", "to_model_input",
]
