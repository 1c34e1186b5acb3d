"""From a ``TrainConfig``'s data fields to the train and validation loaders the trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import Preprocess, TrainConfig
from ..data import BatchAugment, InMemoryImageDataset, InMemoryLoader, load_digits_dataset, split_holdout
from .distributed import DistInfo

SMALL_IMAGE_AUGMENTS = ("pad-crop-flip", "pad-crop", "flip", "none")


@dataclass
class TrainData:
    train: Any  # a loader with __iter__, __len__ and set_epoch
    val: Any | None
    num_classes: int
    class_names: list[str]
    preprocess: Preprocess
    description: str
    val_description: str


def _split(config: TrainConfig) -> tuple[InMemoryImageDataset, InMemoryImageDataset | None, str, str]:
    """The training set and the held-out set, with a description of each."""
    if config.data == "digits":
        train, test = load_digits_dataset("train"), load_digits_dataset("test")
        if config.val_split:
            train, val = split_holdout(train, config.val_split, seed=config.seed)
            return train, val, "digits (train)", f"{len(val)} held-out digits training images"
        return train, test, "digits (train)", f"the {len(test)} digits test images"
    from ..data import load_image_dataset

    dataset = load_image_dataset(config.data)
    if config.val_split:
        train, val = split_holdout(dataset, config.val_split, seed=config.seed)
        return train, val, config.data, f"{len(val)} held-out training images (stratified, seed {config.seed})"
    return dataset, None, config.data, ""


def _augment(config: TrainConfig) -> BatchAugment | None:
    if config.augment not in SMALL_IMAGE_AUGMENTS:
        raise ValueError(f"augment={config.augment!r} is for large images; in-memory data takes one of "
                         f"{SMALL_IMAGE_AUGMENTS}")
    if config.augment == "none":
        return None
    return BatchAugment(padding=0 if config.augment == "flip" else 4, flip=config.augment != "pad-crop")


def build_train_data(config: TrainConfig, *, dist: DistInfo, device: torch.device) -> TrainData:
    train, val, description, val_description = _split(config)
    mean, std = train.mean_std()
    height, width = train.image_size
    preprocess = Preprocess(input_size=height, resize_size=height, mean=mean, std=std)  # type: ignore[arg-type]
    if dist.enabled and config.batch_size % dist.world_size:
        raise ValueError(f"batch_size={config.batch_size} must divide evenly over {dist.world_size} processes")
    common = {"mean": mean, "std": std, "device": device, "channels_last": config.channels_last}
    train_loader = InMemoryLoader(train, batch_size=config.batch_size // dist.world_size, shuffle=True,
                                  drop_last=True, seed=config.seed, rank=dist.rank, world_size=dist.world_size,
                                  augment=_augment(config), **common)
    val_loader = InMemoryLoader(val, batch_size=256, shuffle=False, **common) if val is not None else None
    return TrainData(train=train_loader, val=val_loader, num_classes=train.num_classes,
                     class_names=list(train.class_names), preprocess=preprocess, description=description,
                     val_description=val_description)
