"""From a ``TrainConfig``'s data fields to the train and validation loaders the trainer consumes.

Small images (CIFAR, digits, small image trees) live in memory as uint8 and are augmented a batch at a
time (``augment``: pad-crop-flip, pad-crop, flip, none). Large images (``augment``: scale, rrc) are
decoded per sample by DataLoader workers with torchvision transforms v2. ``augment: auto`` picks by
the data (``resolve_augment``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Subset

from ..config import IMAGENET_PREPROCESS, MAX_IMAGE_SIDE, Preprocess, TrainConfig
from ..config.model import check_mean_std
from ..data import (DIGITS, IMAGE_TAR, BatchAugment, ImageFileDataset, InMemoryLoader, build_file_loader,
                    common_image_size, eval_transform, load_data, paper_train_transform, random_resized_crop_transform,
                    resolve_source, stratified_split)
from ..data.augment_extra import BatchPipeline, ExtraAugment, with_worker_transforms
from .distributed import DistInfo

SMALL_IMAGE_AUGMENTS = ("pad-crop-flip", "pad-crop", "flip", "none")
LARGE_IMAGE_AUGMENTS = ("scale", "rrc")
SMALL_IMAGE_MAX_SIDE = 64  # "auto": trees of images up to this size are decoded into memory


def resolve_augment(config: TrainConfig) -> str:
    """What ``augment: auto`` stands for: ``pad-crop`` for the digits (never mirrored), ``pad-crop-flip`` for
    CIFAR and trees of small images (up to 64 pixels a side, judged by the most common size among the first 32
    images: decoded into memory, augmented batch-wise), ``rrc`` for trees of larger photos (RandomResizedCrop in
    loader workers)."""
    if config.augment.policy != "auto":
        return config.augment.policy
    source = resolve_source(config.data.source)
    if source.kind == DIGITS:
        return "pad-crop"
    size = common_image_size(source)
    return "rrc" if size is not None and max(size) > SMALL_IMAGE_MAX_SIDE else "pad-crop-flip"


@dataclass
class TrainData:
    train: Any  # a loader with __iter__, __len__ and set_epoch
    val: Any | None
    num_classes: int
    class_names: list[str]
    preprocess: Preprocess
    description: str
    val_description: str


def _batch_augment(config: TrainConfig, mean: tuple[float, ...]) -> BatchAugment | BatchPipeline | None:
    policy = config.augment.policy
    base = None if policy == "none" else BatchAugment(padding=0 if policy == "flip" else 4, flip=policy != "pad-crop")
    extra = ExtraAugment.from_config(config)
    if not extra.enabled:
        return base
    return BatchPipeline(extra, base=base, fill=[255 * m for m in mean])


def _check_batch(config: TrainConfig, dist: DistInfo) -> int:
    if config.optim.batch_size % dist.world_size:
        raise ValueError(f"batch_size={config.optim.batch_size} must divide evenly over {dist.world_size} processes")
    return config.optim.batch_size // dist.world_size


def _normalization(config: TrainConfig) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The mean/std a fine-tuned model must keep (its pretrained weights expect them), or None: the data's own."""
    mean, std = config.data.mean, config.data.std
    if not mean and not std:
        return None
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean={mean} std={std}: give three values each (RGB, images in 0..1), "
                         "or neither to normalise with the data's own statistics")
    check_mean_std(tuple(mean), tuple(std))  # the rule every model file's preprocessing follows
    return tuple(mean), tuple(std)


def small_image_data(config: TrainConfig, *, dist: DistInfo, device: torch.device) -> TrainData:
    if not dist.is_main:
        dist.barrier()  # the main process downloads (and decodes into the cache) first, the others then read
    try:
        splits = load_data(config.data)
    finally:
        if dist.is_main:
            dist.barrier()  # also on failure: the others then fail on their own, not at a timeout
    train = splits.train
    if splits.val is not None:
        val = splits.val
        val_description = f"{len(val)} held-out training images (stratified, seed {config.data.seed})"
    elif splits.test is not None:
        if config.schedule.name == "plateau":
            raise ValueError("schedule='plateau' lowers the lr by the validation accuracy; without --val-split that "
                             f"would be the test split of {config.data.source}, which must not steer training: add "
                             "--val-split N")
        val, val_description = splits.test, f"the {len(splits.test)} test images"
    else:
        val, val_description = None, ""
    mean, std = _normalization(config) or train.mean_std()
    if min(std) <= 0:  # the data's own statistics: a channel with one value everywhere cannot be normalised
        raise ValueError(f"the training images of {config.data.source} have a channel with the same value everywhere "
                         "(std 0): give the normalisation with --mean R G B --std R G B")
    size = train.image_size[0]
    preprocess = Preprocess(input_size=size, resize_size=size, mean=mean, std=std)  # type: ignore[arg-type]
    common = {"mean": mean, "std": std, "device": device, "channels_last": config.run.channels_last}
    train_loader = InMemoryLoader(train, batch_size=_check_batch(config, dist), shuffle=True, drop_last=True,
                                  seed=config.run.seed, rank=dist.rank, world_size=dist.world_size,
                                  augment=_batch_augment(config, tuple(mean)), **common)
    val_loader = InMemoryLoader(val, batch_size=256, shuffle=False, **common) if val is not None else None
    return TrainData(train=train_loader, val=val_loader, num_classes=train.num_classes,
                     class_names=list(splits.class_names), preprocess=preprocess,
                     description=f"{config.data.source} ({len(train)} training images)",
                     val_description=val_description)


def large_image_data(config: TrainConfig, *, dist: DistInfo) -> TrainData:
    size = config.data.image_size or IMAGENET_PREPROCESS.input_size
    mean_std = _normalization(config)
    # The evaluation resize keeps ImageNet's 256/224, within the one cap on image sides (>= size, so it still crops).
    preprocess = Preprocess(input_size=size, resize_size=min(round(size * 256 / 224), MAX_IMAGE_SIDE),
                            **({"mean": mean_std[0], "std": mean_std[1]} if mean_std else {}))
    policy, lighting = config.augment.policy, config.augment.lighting
    train_tf = (paper_train_transform(preprocess, min_size=round(size * 256 / 224), max_size=round(size * 480 / 224),
                                      lighting=lighting)
                if policy == "scale" else random_resized_crop_transform(preprocess, lighting=lighting))
    source = resolve_source(config.data.source)
    if not source.file_by_file:
        what = "a compressed tar: decompress it once (e.g. gunzip)" if source.kind == IMAGE_TAR else "not images"
        raise ValueError(f"augment={policy!r} reads images one by one from a folder or an uncompressed tar; "
                         f"{config.data.source} is {what}, or use a small-image augment "
                         f"({', '.join(SMALL_IMAGE_AUGMENTS)})")
    extra = ExtraAugment.from_config(config)
    if extra.enabled:
        train_tf = with_worker_transforms(extra, train_tf, input_size=size)
    train = ImageFileDataset(source.path, split="train", transform=train_tf)
    val, val_description = None, ""
    if "test" in source.splits:
        val = ImageFileDataset(source.path, split="test", transform=eval_transform(preprocess))
        val_description = f"the {len(val)} images of the validation folder"
    if val is not None and not config.data.val_split and val.class_names != train.class_names:
        # Labels are indices into each split's own sorted folder names: relabelled by name, or refused.
        val = val.with_class_names(list(train.class_names), where=f"{config.data.source}: its validation folder")
    if config.data.val_split:
        keep, held = stratified_split(torch.tensor(train.tree.labels), config.data.val_split, seed=config.data.seed)
        held_out = ImageFileDataset(source.path, split="train", transform=eval_transform(preprocess))
        val, train = Subset(held_out, held.tolist()), Subset(train, keep.tolist())
        val_description = f"{len(held)} held-out training images (stratified, seed {config.data.seed})"
    train_loader = build_file_loader(train, batch_size=_check_batch(config, dist), num_workers=config.run.workers,
                                     shuffle=True, drop_last=True, seed=config.run.seed, rank=dist.rank,
                                     world_size=dist.world_size)
    val_loader = (build_file_loader(val, batch_size=64, num_workers=config.run.workers, shuffle=False)
                  if val is not None else None)
    class_names = list(train.dataset.class_names if isinstance(train, Subset) else train.class_names)
    return TrainData(train=train_loader, val=val_loader, num_classes=len(class_names), class_names=class_names,
                     preprocess=preprocess, description=f"{config.data.source} ({len(train)} training images)",
                     val_description=val_description)


def build_train_data(config: TrainConfig, *, dist: DistInfo, device: torch.device) -> TrainData:
    config = config.with_flat(augment=resolve_augment(config))
    policy = config.augment.policy
    if config.augment.lighting and policy not in LARGE_IMAGE_AUGMENTS:
        raise ValueError(f"lighting={config.augment.lighting} (PCA colour noise) goes with the large-image augments "
                         f"{LARGE_IMAGE_AUGMENTS}, not augment={policy!r}; drop --lighting or change --augment")
    if policy in LARGE_IMAGE_AUGMENTS:
        data = large_image_data(config, dist=dist)
    elif policy not in SMALL_IMAGE_AUGMENTS:
        raise ValueError(f"augment={policy!r} is not one of {SMALL_IMAGE_AUGMENTS + LARGE_IMAGE_AUGMENTS}")
    else:
        data = small_image_data(config, dist=dist, device=device)
    if data.num_classes < 2:  # one class: every prediction right, a model that learnt nothing reported at 100%
        raise ValueError(f"{config.data.source}: {data.num_classes} class(es) ({', '.join(data.class_names) or 'none'}); "
                         "a classifier needs at least 2 classes of images (class folders root/<class>/<image>, or "
                         "the labels of a CSV)")
    return data
