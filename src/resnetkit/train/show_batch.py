"""``resnetkit show-batch`` (fastai's ``show_batch``): the first batch of a run drawn as a grid of images with their
labels, to check the data and its augmentation before paying for the training.

The batch is the one the training loop gets first: the same data, loader, epoch seeding and augmentation (the
automatic policies included), then MixUp/CutMix as the training step applies them, so a mixed image is shown with its
two classes and their weights. ``split="val"``: the first validation batch, through the evaluation preprocessing.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..config import ShowBatchOptions, TrainConfig
from ..evaluate.report import pyplot_or_none
from ..files import save_figure_atomic
from .data import resolve_augment
from .distributed import DistInfo
from .loop import mix_transform, seed_epoch_rng
from .run import check_outside_data, training_data


def first_batch(config: TrainConfig, options: ShowBatchOptions | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(pixels, targets, class names)`` of the first ``options.count`` images of the run's first batch: pixels as
    (N, 3, H, W) floats in [0, 1] (the normalisation undone), targets as labels (N,), or as (N, classes) weights
    when the run mixes images."""
    options = options or ShowBatchOptions()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("show-batch runs in one process: start it with resnetkit, not torchrun")
    torch.manual_seed(config.run.seed)  # as run_training, before the data is built
    config = config.with_flat(augment=resolve_augment(config))
    data = training_data(config, dist=DistInfo(), device=torch.device("cpu"))
    loader = data.train if options.split == "train" else data.val
    if loader is None:
        raise ValueError(f"{config.data.source}: no validation images to show: --val-split N holds N training images "
                         "out, or give data with a val/ or test/ folder")
    with torch.random.fork_rng():  # the caller's global RNG is left as it was
        if options.split == "train":
            loader.set_epoch(0)
            seed_epoch_rng(config.run.seed, 0, 0)
        images, labels = next(iter(loader))
        targets = labels
        mix = mix_transform(config, data.num_classes) if options.split == "train" else None
        if mix is not None:
            images, targets = mix(images, labels)
    mean = torch.tensor(data.preprocess.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.preprocess.std).view(1, -1, 1, 1)
    pixels = (images[:options.count].float().cpu() * std + mean).clamp(0, 1).contiguous()
    if pixels.shape[1] == 1:  # grey data drawn as grey
        pixels = pixels.expand(-1, 3, -1, -1).contiguous()
    return pixels, targets[:options.count].cpu(), list(data.class_names)


def caption(target: torch.Tensor, class_names: list[str]) -> str:
    """A label's class name; for mixed targets, the two heaviest classes with their weights."""
    if target.dim() == 0:
        return class_names[int(target)]
    weights, classes = target.float().topk(min(2, target.numel()))
    return " / ".join(f"{class_names[int(c)]} {float(w):.2f}" for w, c in zip(weights, classes) if w > 0)


def write_batch_figure(pixels: torch.Tensor, targets: torch.Tensor, class_names: list[str], path: Path, *,
                       title: str) -> Path:
    """The images in a grid, each with its caption; needs matplotlib."""
    plt = pyplot_or_none()
    if plt is None:
        raise ValueError("show-batch draws with matplotlib: pip install 'resnetkit[plots]'")
    columns = math.ceil(math.sqrt(len(pixels)))
    rows = math.ceil(len(pixels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, target in zip(axes.flat, pixels, targets):
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(caption(target, class_names), fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path


def show_batch(config: TrainConfig, options: ShowBatchOptions | None = None) -> Path:
    """Draw the run's first batch (``options.split``) into ``--out-dir``/batch.png (or val_batch.png)."""
    options = options or ShowBatchOptions()
    out_dir = Path(config.run.out_dir)
    check_outside_data(out_dir, config.data.source)  # the figure would become a training image
    pixels, targets, names = first_batch(config, options)
    which = "first training batch" if options.split == "train" else "first validation batch"
    title = f"{config.model.arch} run on {Path(config.data.source).name or config.data.source}: {which}, " \
            f"{len(pixels)} images of {tuple(pixels.shape[-2:])} pixels as the network gets them"
    name = "batch.png" if options.split == "train" else "val_batch.png"
    return write_batch_figure(pixels, targets, names, out_dir / name, title=title)
