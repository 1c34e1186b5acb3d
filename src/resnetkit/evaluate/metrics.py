"""Classification metrics accumulated over batches: top-k accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..models.tta import flip_averaged_log_probs


@dataclass
class ClassificationMetrics:
    """Accumulates logits/labels batch by batch; cheap enough to run every evaluation."""

    num_classes: int
    confusion: torch.Tensor = field(init=False)
    top5_correct: int = 0
    loss_sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
        self.loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        pred = logits.argmax(1)
        self.confusion += torch.bincount(labels * self.num_classes + pred,
                                         minlength=self.num_classes ** 2).view(self.num_classes, self.num_classes)
        k = min(5, logits.shape[1])
        self.top5_correct += (logits.topk(k, 1).indices == labels[:, None]).any(1).sum().item()
        self.count += labels.numel()

    def merge(self, other: ClassificationMetrics) -> None:
        self.confusion += other.confusion
        self.top5_correct += other.top5_correct
        self.loss_sum += other.loss_sum
        self.count += other.count

    @property
    def top1(self) -> float:
        return self.confusion.diag().sum().item() / max(1, self.count)

    @property
    def top5(self) -> float:
        return self.top5_correct / max(1, self.count)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.count)

    def per_class_accuracy(self) -> list[float]:
        totals = self.confusion.sum(1).clamp(min=1)
        return (self.confusion.diag() / totals).tolist()

    def summary(self, class_names: list[str] | None = None) -> dict[str, object]:
        names = class_names or [str(i) for i in range(self.num_classes)]
        return {
            "top1": self.top1, "top5": self.top5, "loss": self.loss, "images": self.count,
            "per_class": dict(zip(names, self.per_class_accuracy())),
            "confusion": self.confusion.tolist(),
        }


@torch.no_grad()
def evaluate_batches(model: torch.nn.Module, batches, *, num_classes: int, device: torch.device,
                     amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                     flip: bool = False) -> ClassificationMetrics:
    """Run ``model`` over (images, labels) batches and accumulate metrics; with ``flip``, each image's
    softmax is averaged with its mirror's (the ``flip`` protocol of ``resnetkit eval``)."""
    was_training = model.training
    model.eval()
    metrics = ClassificationMetrics(num_classes)
    try:
        for images, labels in batches:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = flip_averaged_log_probs(model, images) if flip else model(images)
            metrics.update(logits, labels)
    finally:
        model.train(was_training)
    return metrics
