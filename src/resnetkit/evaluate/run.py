"""``resnetkit eval``: a model file, a labelled dataset, one protocol, a report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from ..models import load_model
from .metrics import ClassificationMetrics
from .protocols import evaluate_samples
from .report import write_report


def _open_dataset(data: str):
    """The test (or val/) split of ``data``; a tree without split folders is evaluated whole."""
    from .. import data as datasets

    if data == "digits":
        return datasets.load_digits_dataset("test"), "test"
    try:
        return datasets.load_image_dataset(data, split="test"), "test"
    except FileNotFoundError:
        return datasets.load_image_dataset(data, split="train"), "all images (no test/ or val/ folder)"


def label_map(dataset_classes: list[str], model_classes: list[str], *, data: str, model: str) -> torch.Tensor:
    """Dataset label -> model output index, matched by class name (folders sort names their own way)."""
    if not model_classes:
        return torch.arange(len(dataset_classes))
    index = {name: i for i, name in enumerate(model_classes)}
    unknown = [name for name in dataset_classes if name not in index]
    if unknown:
        raise ValueError(f"{data} has classes the model {model} does not know: {unknown[:10]}; the model's "
                         f"classes are {model_classes[:10]}{' ...' if len(model_classes) > 10 else ''}")
    return torch.tensor([index[name] for name in dataset_classes])


def run_evaluation(model_path: str, data: str, *, protocol: str = "center", out_dir: str = "runs/eval",
                   batch_size: int = 64, scales: tuple[int, ...] | None = None,
                   device: str = "cpu") -> ClassificationMetrics:
    model, info = load_model(model_path)
    dataset, split = _open_dataset(data)
    mapping = label_map(list(dataset.class_names), info.class_names, data=data, model=model_path)

    def samples() -> Iterator[tuple[torch.Tensor, int]]:
        for i in range(len(dataset)):
            image, label = dataset[i]
            yield image, int(mapping[label])

    names = info.class_names or [str(i) for i in range(model.num_classes)]
    metrics = evaluate_samples(model, samples(), preprocess=info.preprocess, num_classes=len(names),
                               protocol=protocol, scales=scales, batch_size=batch_size, device=device)
    write_report(Path(out_dir), title=f"{info.model.arch} ({Path(model_path).name}) on {data}, {protocol}",
                 metrics=metrics, class_names=names, config={"model": str(model_path), "data": data,
                                                             "split": split, "protocol": protocol, "scales": scales,
                                                             "preprocess": info.preprocess.to_dict()})
    return metrics
