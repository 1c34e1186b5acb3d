"""Classification metrics accumulated over batches: top-k accuracy, per-class recall, precision and F1, the confusion
matrix and its most confused pairs, calibration (ECE and a reliability diagram's bins) and the highest-loss samples
(fastai's ``ClassificationInterpretation``: ``top_losses``, ``most_confused``)."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import torch

from ..models.tta import flip_averaged_log_probs

CALIBRATION_BINS = 15  # equal-width confidence bins, as Guo et al. 2017 ("On Calibration of Modern Neural Networks")


@dataclass(frozen=True)
class Sample:
    """One evaluated image as the model saw it: its place in the evaluation order (0 = first image measured), its
    label, the predicted class, the probabilities of both and its loss (-log p(label))."""

    position: int
    label: int
    predicted: int
    prob_predicted: float
    prob_label: float
    loss: float


@dataclass
class ClassificationMetrics:
    """Accumulates logits (or log-probabilities) and labels batch by batch; cheap enough to run every evaluation.
    ``keep_worst``: also keep that many highest-loss samples (``top_losses``); memory stays that many rows."""

    num_classes: int
    keep_worst: int = 0
    confusion: torch.Tensor = field(init=False)
    top5_correct: int = 0
    loss_sum: float = 0.0
    count: int = 0
    bin_counts: torch.Tensor = field(init=False)
    bin_confidence: torch.Tensor = field(init=False)  # summed confidence (top-1 probability) per bin
    bin_correct: torch.Tensor = field(init=False)
    unanswered: torch.Tensor = field(init=False)  # per label: images whose outputs were not finite (NaN, inf)
    _worst: list[tuple[float, int, Sample]] = field(init=False, default_factory=list)  # a min-heap on the loss

    def __post_init__(self) -> None:
        if isinstance(self.keep_worst, bool) or not isinstance(self.keep_worst, int) or self.keep_worst < 0:
            raise ValueError(f"keep_worst={self.keep_worst!r} must be a whole number >= 0 (highest-loss samples kept)")
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        self.bin_counts = torch.zeros(CALIBRATION_BINS, dtype=torch.long)
        self.bin_confidence = torch.zeros(CALIBRATION_BINS, dtype=torch.float64)
        self.bin_correct = torch.zeros(CALIBRATION_BINS, dtype=torch.long)
        self.unanswered = torch.zeros(self.num_classes, dtype=torch.long)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
        log_probs = logits.log_softmax(1)  # unchanged when given log-probabilities already (the averaged views)
        losses = -log_probs.gather(1, labels[:, None])[:, 0]
        self.loss_sum += losses.double().sum().item()
        probs = log_probs.exp()
        confidence, pred = probs.max(1)
        # A row with a NaN or infinity has no answer: it counts as wrong (in top-1, top-5 and its class's recall),
        # and stays out of the confusion matrix, the calibration and the top losses (its loss is NaN, which says
        # that something broke); max() would otherwise call it class 0.
        finite = torch.isfinite(log_probs).all(1)
        self.unanswered += torch.bincount(labels[~finite], minlength=self.num_classes)
        self.confusion += torch.bincount(labels[finite] * self.num_classes + pred[finite],
                                         minlength=self.num_classes ** 2).view(self.num_classes, self.num_classes)
        k = min(5, logits.shape[1])
        self.top5_correct += ((logits.topk(k, 1).indices == labels[:, None]).any(1) & finite).sum().item()
        # A confidence of exactly 1 belongs to the last bin, (14/15, 1].
        bins = (confidence[finite] * CALIBRATION_BINS).ceil().long().clamp(1, CALIBRATION_BINS) - 1
        self.bin_counts += torch.bincount(bins, minlength=CALIBRATION_BINS)
        self.bin_confidence += torch.bincount(bins, weights=confidence[finite].double(), minlength=CALIBRATION_BINS)
        self.bin_correct += torch.bincount(bins, weights=(pred == labels)[finite].double(),
                                           minlength=CALIBRATION_BINS).long()
        if self.keep_worst:
            self._keep_worst(losses.masked_fill(~finite, -math.inf), labels, pred, probs)
        self.count += labels.numel()

    def _keep_worst(self, losses: torch.Tensor, labels: torch.Tensor, pred: torch.Tensor, probs: torch.Tensor) -> None:
        # The batch's highest losses first, equal ones in batch order (a stable sort: topk picks among ties at
        # random); no more than keep_worst of them can enter the heap.
        order = torch.sort(losses, descending=True, stable=True).indices[:self.keep_worst].tolist()
        for i in (i for i in order if losses[i] > -math.inf):
            # Ties keep the earlier image (the position breaks them: a larger negative position ranks lower).
            key = (losses[i].item(), -(self.count + i))
            if len(self._worst) == self.keep_worst and key <= self._worst[0][:2]:
                continue
            sample = Sample(self.count + i, int(labels[i]), int(pred[i]), probs[i, pred[i]].item(),
                            probs[i, labels[i]].item(), losses[i].item())
            entry = (*key, sample)
            if len(self._worst) < self.keep_worst:
                heapq.heappush(self._worst, entry)
            else:
                heapq.heapreplace(self._worst, entry)

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
        """Each class's recall: the share of its images predicted as it."""
        totals = self.images_per_class().clamp(min=1)
        return (self.confusion.diag() / totals).tolist()

    def images_per_class(self) -> torch.Tensor:
        """How many images of each class were measured (those without a finite answer included)."""
        return self.confusion.sum(1) + self.unanswered

    def precision(self) -> list[float]:
        """Each class's precision: the share of the images predicted as it that are it (0 when none was)."""
        return (self.confusion.diag() / self.confusion.sum(0).clamp(min=1)).tolist()

    def f1(self) -> list[float]:
        """Each class's F1, the harmonic mean of its precision and recall (0 when both are)."""
        return [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(self.precision(), self.per_class_accuracy())]

    @property
    def macro_f1(self) -> float:
        """The mean F1 over the classes that have images here (sklearn's ``f1_score(average="macro")`` over them)."""
        present = [f for f, n in zip(self.f1(), self.images_per_class().tolist()) if n]
        return sum(present) / max(1, len(present))

    def confused_pairs(self, *, limit: int = 10) -> list[tuple[int, int, int]]:
        """The off-diagonal cells of the confusion matrix with the most images, as ``(actual, predicted, count)``
        class indices, most first (ties in class order)."""
        off = self.confusion.clone()
        off.fill_diagonal_(0)
        counts, cells = torch.sort(off.flatten(), descending=True, stable=True)
        n = self.num_classes
        return [(c // n, c % n, k) for k, c in zip(counts[:limit].tolist(), cells[:limit].tolist()) if k > 0]

    def most_confused(self, class_names: list[str] | None = None, *, limit: int = 10) -> list[tuple[str, str, int]]:
        """``confused_pairs`` with class names: ``(actual, predicted, count)``, most first (fastai's
        ``most_confused``)."""
        names = class_names or [str(i) for i in range(self.num_classes)]
        return [(names[a], names[p], k) for a, p, k in self.confused_pairs(limit=limit)]

    def calibration(self) -> list[dict[str, float]]:
        """The reliability diagram's bins that hold images: confidence range, images, mean confidence, accuracy."""
        rows = []
        for b in range(CALIBRATION_BINS):
            n = int(self.bin_counts[b])
            if n:
                rows.append({"low": b / CALIBRATION_BINS, "high": (b + 1) / CALIBRATION_BINS, "images": n,
                             "confidence": self.bin_confidence[b].item() / n, "accuracy": int(self.bin_correct[b]) / n})
        return rows

    @property
    def expected_calibration_error(self) -> float:
        """ECE (Guo et al. 2017): the image-weighted mean gap between confidence and accuracy over 15 bins; 0 for a
        model whose top-1 probability is as often right as it says. Over the images with a finite answer: NaN when
        none had one (a broken model is not perfectly calibrated)."""
        answered = int(self.bin_counts.sum())
        if not answered:
            return math.nan if self.count else 0.0
        return sum(row["images"] * abs(row["accuracy"] - row["confidence"]) for row in self.calibration()) / answered

    def top_losses(self) -> list[Sample]:
        """The ``keep_worst`` highest-loss samples seen, worst first (fastai's ``top_losses``)."""
        return [sample for _, _, sample in sorted(self._worst, key=lambda entry: entry[:2], reverse=True)]

    def summary(self, class_names: list[str] | None = None) -> dict[str, object]:
        names = class_names or [str(i) for i in range(self.num_classes)]
        return {
            "top1": self.top1, "top5": self.top5, "loss": self.loss, "images": self.count,
            "non_finite": int(self.unanswered.sum()),
            "per_class": dict(zip(names, self.per_class_accuracy())),
            "precision": dict(zip(names, self.precision())), "f1": dict(zip(names, self.f1())),
            "macro_f1": self.macro_f1,
            "most_confused": [{"actual": a, "predicted": p, "images": n} for a, p, n in self.most_confused(names)],
            "ece": None if math.isnan(ece := self.expected_calibration_error) else ece,
            "calibration": self.calibration(),
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
