"""``resnetkit show-batch`` (fastai's ``show_batch``): the first batch of a run drawn as a grid of images with their
labels, to check the data and its augmentation before paying for the training.

The batch is the one the training loop of a single-process run gets first: the same start (``start_run``), data,
loader, epoch seeding (``begin_epoch``) and augmentation (the automatic policies included), then MixUp/CutMix as the
training step applies them, so a mixed image is shown with its two classes and their weights. Under torchrun each
rank gets its own share of the batch and its own random draws, which this does not show. ``split="val"``: the
first validation batch, through the evaluation preprocessing.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch

from ..config import ShowBatchOptions, TrainConfig
from ..device import resolve_device
from ..evaluate.report import pyplot_or_none
from ..files import prepare_output_dir, save_figure_atomic
from .distributed import DistInfo
from .loop import begin_epoch, mix_transform
from .run import check_outside_data, start_run, training_data


def first_batch(config: TrainConfig, options: ShowBatchOptions | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(pixels, targets, class names)`` of the first ``options.count`` images of the run's first batch: pixels as
    (N, 3, H, W) floats in [0, 1] (the normalisation undone), targets as labels (N,), or as (N, classes) weights
    when the run mixes images. The batch of a single-process run, on the run's device (a GPU draws other random
    crops than a CPU); the caller's random state is left as it was."""
    options = options or ShowBatchOptions()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("show-batch runs in one process: start it with resnetkit, not torchrun")
    device = resolve_device(config.run.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        config = start_run(config)
        data = training_data(config, dist=DistInfo(), device=device)
        loader = data.train if options.split == "train" else data.val
        if loader is None:
            raise ValueError(f"{config.data.source}: no validation images to show: --val-split N holds N training "
                             "images out, or give data with a val/ or test/ folder")
        if options.split == "train":
            begin_epoch(loader, seed=config.run.seed, epoch=0, rank=0)
        batch = next(iter(loader), None)
        if batch is None:
            raise ValueError(f"{config.data.source}: the {options.split} split gives no batch of "
                             f"{config.optim.batch_size} images; use a smaller --batch-size or more images")
        images, labels = batch[0].to(device), batch[1].to(device)
        targets = labels
        mix = mix_transform(config, data.num_classes) if options.split == "train" else None
        if mix is not None:  # as the training step mixes: on the device, after the batch is there
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
    prepare_output_dir(out_dir, flag="--out-dir")  # a file in its place: said before the data is read
    pixels, targets, names = first_batch(config, options)
    if len(pixels) < options.count:
        warnings.warn(f"drew {len(pixels)} of the {options.count} images asked for: the first batch holds "
                      f"{len(pixels)} (--batch-size)", stacklevel=2)
    which = "first training batch" if options.split == "train" else "first validation batch"
    title = f"{config.model.arch} run on {Path(config.data.source).name or config.data.source}: {which}, " \
            f"{len(pixels)} images of {tuple(pixels.shape[-2:])} pixels as the network gets them"
    name = "batch.png" if options.split == "train" else "val_batch.png"
    return write_batch_figure(pixels, targets, names, out_dir / name, title=title)
