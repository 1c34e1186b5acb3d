"""``resnetkit eval``: a model file, a labelled dataset, one protocol, a report."""

from __future__ import annotations

import json
import warnings

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..config import EvalConfig, ModelInfo
from ..data.preprocess import default_scales, thumbnail
from ..data.source import DataSource, resolve_source
from ..device import resolve_device
from ..files import prepare_output_dir
from ..models import load_model
from .metrics import ClassificationMetrics
from .protocols import evaluate_samples
from .report import THUMBNAIL_SIDE, TOP_LOSSES_SHOWN, WorstImage, write_report


def open_dataset(data: str | DataSource, *, val_split: int = 0, seed: int = 0, cifar100_labels: str = "fine"):
    """``(dataset, class names, which images)`` to evaluate.

    With ``val_split``: the images ``resnetkit train --val-split N --seed S`` held out of ``data``'s
    training split (the same stratified, seeded choice). Otherwise the test (or val/) split; a tree
    without split folders is evaluated whole. Image trees are read file by file, each image at its own
    size (the protocol resizes and crops it once); dataset names, CIFAR batches and compressed tars are
    decoded in memory.
    """
    from .. import data as datasets

    source = datasets.resolve_source(data)
    data = source.text
    if val_split:
        described = f"{val_split} images held out of the training split (--val-split {val_split}, seed {seed})"
        if source.file_by_file:
            files = datasets.ImageFileDataset(source.path, split="train")
            _, held = datasets.stratified_split(torch.tensor(files.tree.labels), val_split, seed=seed)
            return Subset(files, held.tolist()), files.class_names, described
        held_out = datasets.load_data(datasets.DataConfig(source=data, val_split=val_split, seed=seed,
                                                          cifar100_labels=cifar100_labels)).val
        return held_out, held_out.class_names, described
    split = source.evaluation_split
    if source.file_by_file:
        dataset = datasets.ImageFileDataset(source.path, split=split)
    else:
        dataset = datasets.load_image_dataset(source, split=split, cifar100_labels=cifar100_labels)
    return dataset, dataset.class_names, split if split == "test" else "all images (no test/ or val/ folder)"


def _first(batch: list):
    return batch[0]


def _inner(dataset: Dataset, index: int) -> tuple[Dataset, int]:
    """The dataset that holds image ``index`` of ``dataset`` (a Subset's parent) and its index there."""
    return (dataset.dataset, int(dataset.indices[index])) if isinstance(dataset, Subset) else (dataset, index)


def sample_name(dataset: Dataset, index: int) -> str:
    """How the report names image ``index`` of an evaluated dataset: its file (a tar's member as TAR:MEMBER), or
    ``#k``, its place in the set that was decoded in memory (CIFAR batches, the digits, compressed tars; with
    ``--val-split``, the k-th held-out image)."""
    from ..data import ImageFileDataset

    files, inner = _inner(dataset, index)
    if isinstance(files, ImageFileDataset):
        tree = files.tree
        return f"{tree.source}:{tree.paths[inner]}" if tree.is_tar else str(tree.paths[inner])
    return f"#{inner}"


def worst_images(dataset: Dataset, order: list[int], metrics: ClassificationMetrics) -> list[WorstImage]:
    """``metrics.top_losses()`` with each image's name, and a thumbnail (its longer side at most ``THUMBNAIL_SIDE``
    pixels) for the ones the report's figure shows, read again from ``dataset``: ``order[k]`` is the dataset index of
    the k-th image measured."""
    worst = []
    for rank, sample in enumerate(metrics.top_losses()):
        index = order[sample.position]
        item = dataset[index] if rank < TOP_LOSSES_SHOWN else None
        image = None if item is None else thumbnail(item[0], THUMBNAIL_SIDE)  # None: the file changed since
        worst.append(WorstImage(sample_name(dataset, index), sample, image))
    return worst


def labelled_samples(dataset: Dataset, mapping: torch.Tensor, *, workers: int,
                     order: list[int] | None = None) -> Iterator[tuple[torch.Tensor, int]]:
    """``(image, model's label)`` for each image of ``dataset`` that decodes, in order; decoding runs in ``workers``
    loader processes for files read one by one. An unreadable file comes back as None from the dataset (logged by
    path) and is skipped; ``order`` collects the dataset index of each image given."""
    from ..data import ImageFileDataset

    reads_files = isinstance(_inner(dataset, 0)[0], ImageFileDataset) if len(dataset) else False
    loader = DataLoader(dataset, batch_size=1, collate_fn=_first, num_workers=workers if reads_files else 0)
    for index, sample in enumerate(loader):
        if sample is not None:
            image, label = sample
            if order is not None:
                order.append(index)
            yield image, int(mapping[label])


def label_map(dataset_classes: list[str], model_classes: list[str], *, data: str, model: str,
              outputs: int) -> torch.Tensor:
    """Dataset label -> model output index, matched by class name (folders sort names their own way); a model
    without class names takes the data's labels as its output indices, so it needs as many ``outputs``."""
    if not model_classes:
        if len(dataset_classes) > outputs:
            raise ValueError(f"{data} has {len(dataset_classes)} classes but the model {model} has {outputs} outputs "
                             "and no class names to match them by: evaluate it on data of its own classes")
        return torch.arange(len(dataset_classes))
    index = {name: i for i, name in enumerate(model_classes)}
    unknown = [name for name in dataset_classes if name not in index]
    if unknown:
        raise ValueError(f"{data} has classes the model {model} does not know: {unknown[:10]}; the model's "
                         f"classes are {model_classes[:10]}{' ...' if len(model_classes) > 10 else ''}. Evaluate "
                         "it on data with the classes it was trained on (CIFAR-100 superclasses: --cifar100-labels "
                         "coarse)")
    return torch.tensor([index[name] for name in dataset_classes])


def held_out_seed(source: DataSource, info: ModelInfo, *, val_split: int, seed: int | None,
                  warn_if_training_images: bool = True) -> int:
    """The seed of the ``val_split`` images to hold out of ``source``'s training split: ``seed`` as given, else the
    one the model file records (``resnetkit train`` writes it; the split of another seed shares a tenth of its
    images and holds out images the model trained on). Warns, unless told not to, when the images measured may be
    ones the model trained on: with no ``val_split``, every image of a training set (DATA has no test split) while
    the file records a held-out split; with one, a count or seed other than the recorded ones. Evaluating what is
    given (timm's ``validate.py``, torchvision's reference scripts) stays the rule: the data may be a new folder of
    the model's classes."""
    try:
        held_out, recorded_seed = info.held_out_split()
    except (TypeError, ValueError):  # a record that is not a number: no split to point to
        held_out, recorded_seed = 0, 0
    chosen = recorded_seed if seed is None else seed
    if not (warn_if_training_images and held_out):
        return chosen
    data, trained_on = source.text, info.extra.get("trained_on", "not named")
    same = f"--val-split {held_out}{'' if recorded_seed == 0 else f' --seed {recorded_seed}'}"
    if not val_split and source.evaluation_split == "train":
        warnings.warn(f"{data} has no test split, so every image of it is measured; the model file records "
                      f"{held_out} images held out of its training data ({trained_on}): if {data} is that data, "
                      f"most of these images trained the model; give {same} to measure only the held-out ones",
                      stacklevel=2)
    elif val_split and (val_split, chosen) != (held_out, recorded_seed):
        warnings.warn(f"--val-split {val_split} --seed {chosen} holds out other images than the model's training "
                      f"did (the file records {held_out} held out with seed {recorded_seed}, of {trained_on}): if "
                      f"{data} is that data, most of the images measured trained the model; give {same} to measure "
                      "the held-out ones", stacklevel=2)
    return chosen


def check_not_another_report(out_dir: Path) -> None:
    """Refuse to write over another command's report: a training run's (a per-epoch history), a pruning's, a study's
    or any ``report.json`` that is not an evaluation's (which records its ``protocol`` and no history)."""
    report = out_dir / "report.json"
    if not report.is_file():
        return
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        data = None
    history = data.get("history") if isinstance(data, dict) else None
    if history:
        raise ValueError(f"--out-dir {out_dir}: holds a training run's report ({len(history)} epochs in report.json), "
                         f"which the evaluation's report would replace; give another folder, e.g. {out_dir / 'eval'}")
    config = data.get("config") if isinstance(data, dict) else None
    if not (isinstance(config, dict) and "protocol" in config and history == []):
        raise ValueError(f"--out-dir {out_dir}: holds a report.json that is not an evaluation's (a pruning's, a "
                         f"study's or another program's), which the evaluation's report would replace; give another "
                         f"folder, e.g. {out_dir / 'eval'}")


def run_evaluation(config: EvalConfig, *, warn_if_training_images: bool = True) -> ClassificationMetrics:
    """What ``resnetkit eval`` does: ``config.model`` on ``config.data`` with ``config.protocol``; writes the report
    to ``config.out_dir`` and returns the metrics. ``warn_if_training_images``: warn when every image of a training
    set is measured while the model records images held out of it (off where the caller chose the images)."""
    model_path, data, protocol, scales = config.model, config.data, config.protocol, config.scales
    device = resolve_device(config.device)  # a device that is not there is said before any work
    prepare_output_dir(config.out_dir, flag="--out-dir")  # before the evaluation, whose results go there
    check_not_another_report(Path(config.out_dir))
    model, info = load_model(model_path)
    source = resolve_source(data)  # once: an image tree's splits are found by listing it
    seed = held_out_seed(source, info, val_split=config.val_split, seed=config.seed,
                         warn_if_training_images=warn_if_training_images)
    dataset, class_names, split = open_dataset(source, val_split=config.val_split, seed=seed,
                                               cifar100_labels=config.cifar100_labels)
    mapping = label_map(list(class_names), info.class_names, data=data, model=model_path,
                        outputs=model.num_classes)
    order: list[int] = []  # the dataset index of each image measured, in order (unreadable ones are left out)
    samples = labelled_samples(dataset, mapping, workers=config.workers, order=order)
    names = info.class_names or [str(i) for i in range(model.num_classes)]
    metrics = evaluate_samples(model, samples, preprocess=info.preprocess, num_classes=len(names),
                               protocol=protocol, scales=scales, batch_size=config.batch_size,
                               device=device, keep_worst=config.top_losses)
    if metrics.count == 0:
        raise ValueError(f"{data}: none of its {len(dataset)} image(s) could be read (each is named in the log "
                         "above); nothing was measured")
    write_report(Path(config.out_dir), title=f"{info.model.arch} ({Path(model_path).name}) on {data}, {protocol}",
                 metrics=metrics, class_names=names, config={"model": str(model_path), "data": data,
                                                             "split": split, "protocol": protocol,
                                                             "scales": list(scales or default_scales(info.preprocess))
                                                             if protocol == "multiscale" else None,
                                                             "preprocess": info.preprocess.to_dict()},
                 worst=worst_images(dataset, order, metrics))
    return metrics
