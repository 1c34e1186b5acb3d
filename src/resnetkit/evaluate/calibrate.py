"""``resnetkit calibrate``: temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

One number T divides the logits, so the softmax says how often the model is right without changing what it
predicts (top-1 is the same). T is the one that minimises the negative log-likelihood of labelled images the model
did not train on; it is fitted on part of them and measured on the rest (``check_fraction``), so the reported
calibration error is not measured on the images that chose T.

T is written into the weights: the classifier's weight and bias are divided by it (``fc(x) / T``), so every consumer
of the model file (predict, serve, eval, export to ONNX or TFLite, Grad-CAM) gets the calibrated probabilities
with no code of its own; the model card (``ModelInfo.extra``) records T and what it was fitted on.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import CalibrateConfig, ModelInfo
from ..data import stratified_split
from ..device import resolve_device
from ..files import prepare_output_dir
from ..models import load_model, save_model
from ..models.weights import has_resnetkit_metadata, resolve_weight_path
from .metrics import ClassificationMetrics
from .protocols import protocol_log_probs
from .run import label_map, labelled_samples, open_dataset

LOG_INVERSE_T_RANGE = (-5.0, 5.0)  # 1/T from e^-5 to e^5: T from 0.0067 to 148, far past any model measured
SEARCH_STEPS = 50  # golden-section steps: the range of 10 shrinks by 0.618 each, to about 3e-10


def nll(log_probs: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """The mean negative log-likelihood of ``labels`` under ``softmax(log_probs / temperature)``."""
    return torch.nn.functional.cross_entropy(log_probs.double() / temperature, labels).item()


def fit_temperature(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The T minimising ``nll``, by golden-section search on log(1/T). The NLL is convex in 1/T (a log-sum-exp minus
    a linear term), so an inner minimum is the only one; when the images are all right (or all wrong) with a
    margin, the NLL keeps falling towards the end of the range and there is no T to fit: refused. ``log_probs`` may
    be logits or log-softmax (a constant per row does not change the softmax); rows must be finite."""
    if labels.numel() == 0:
        raise ValueError("no images to fit the temperature on")
    log_probs = log_probs.double()
    low, high = LOG_INVERSE_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2

    def loss(log_inverse: float) -> float:
        return nll(log_probs, labels, math.exp(-log_inverse))

    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(SEARCH_STEPS):
        if loss_a <= loss_b:  # the minimum is left of b
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    found = (low + high) / 2
    best = loss(found)
    # An inner minimum is below both ends of the range; all right with a margin, the NLL falls (to 0 in float64)
    # towards one end instead, and a NaN compares below nothing.
    if not all(best < loss(end) for end in LOG_INVERSE_T_RANGE):
        right = (log_probs.argmax(1) == labels).float().mean().item()
        raise ValueError(f"no temperature fits these {labels.numel()} images: the likelihood keeps rising as T goes to "
                         f"{'0' if found > 0 else 'infinity'} ({100 * right:.1f}% of them are predicted right); "
                         "calibrate on more images, ones the model did not train on")
    return math.exp(-found)


@torch.no_grad()
def apply_temperature(model: torch.nn.Module, temperature: float) -> None:
    """Divide the model's logits by ``temperature`` for good: its classifier's weight and bias, in place."""
    head = getattr(model, "fc", None)
    if not isinstance(head, torch.nn.Linear):
        raise ValueError("the model has no classifier (fc) to calibrate: a feature extractor's outputs are not "
                         "class scores")
    head.weight.div_(temperature)
    if head.bias is not None:
        head.bias.div_(temperature)


@dataclass
class CalibrationResult:
    """T, how many images fitted and measured it, and the check images' numbers before and after."""

    temperature: float
    fit_images: int
    check_images: int
    before: dict[str, float] = field(default_factory=dict)  # top1, nll, ece on the check images; empty without
    after: dict[str, float] = field(default_factory=dict)
    skipped_non_finite: int = 0  # images whose outputs were NaN or infinite: left out of the fit and the check
    images: str = ""  # which images: "5000 images held out of the training split (--val-split 5000, seed 0)", ...
    model_path: Path | None = None

    @property
    def worse(self) -> bool:
        """Whether the check images' likelihood got worse with T: the fit does not carry over to other images."""
        return bool(self.after) and self.after["nll"] > self.before["nll"]

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "fit_images": self.fit_images, "check_images": self.check_images,
                "before": self.before, "after": self.after, "skipped_non_finite": self.skipped_non_finite}


def _measured(log_probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    metrics = ClassificationMetrics(num_classes)
    metrics.update(log_probs, labels)
    return {"top1": metrics.top1, "nll": metrics.loss, "ece": metrics.expected_calibration_error}


def _check_out(out: Path, model: str) -> None:
    """The output must be a new ``.safetensors`` file, or an earlier resnetkit model file other than the model's
    (hard links, a shipped network's file and a download's cached copy included), in a folder that can be created: checked before the images
    are run, not after. Any other existing file (an image, a weight file, notes) is never replaced."""
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give a file name such as {out / 'calibrated.safetensors'}")
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {out}: the calibrated model is a .safetensors model file; give a name such as "
                         f"{out.with_suffix('.safetensors')}")
    if out.exists():
        if not has_resnetkit_metadata(out):
            raise ValueError(f"--out {out}: exists and is not a resnetkit model file, so it is never replaced; give "
                             "another file name")
        source = resolve_weight_path(model)  # a shipped or downloaded catalog network's, a URL's cached file too
        if source.exists() and os.path.samefile(out, source):
            raise ValueError(f"--out {out}: is the model being calibrated; write the calibrated model to another "
                             "file")
    prepare_output_dir(out.parent, flag="the folder of --out")


def _check_split(labels: torch.Tensor, check_fraction: float, *, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(fit, check) image indices: the check share stratified by class and seeded, or None without one."""
    if not check_fraction:
        return torch.arange(len(labels)), None
    checked = round(check_fraction * len(labels))
    try:
        if checked < 1:
            raise ValueError(f"{len(labels)} image(s) hold no check share of {check_fraction:g}")
        return stratified_split(labels, checked, seed=seed)
    except ValueError as e:
        raise ValueError(f"--check-fraction {check_fraction:g} of {len(labels)} images: {e}. Give more images, "
                         "or --check-fraction 0 to fit on all of them and measure nothing") from None


def run_calibration(config: CalibrateConfig) -> CalibrationResult:
    """What ``resnetkit calibrate`` does: the model's centre-crop outputs on the images, T fitted on all but the
    check share, measured on the check share, and the model written to ``config.out`` with T in its weights."""
    out = Path(config.out)
    _check_out(out, config.model)
    model, info = load_model(config.model)
    if not isinstance(getattr(model, "fc", None), torch.nn.Linear):
        raise ValueError(f"{config.model}: has no classifier (fc) to calibrate; a feature extractor's outputs are "
                         "not class scores")
    earlier = info.extra.get("temperature", 1.0)  # a model calibrated before carries it in its weights
    if isinstance(earlier, bool) or not isinstance(earlier, (int, float)) or not (
            math.isfinite(earlier) and earlier > 0):
        raise ValueError(f"{config.model}: its card records temperature {str(earlier)[:40]!r}; calibrate the "
                         "uncalibrated model")
    val_split, seed = info.held_out_split(config.val_split, config.seed)
    try:
        dataset, class_names, split = open_dataset(config.data, val_split=val_split, seed=seed,
                                                   cifar100_labels=config.cifar100_labels)
    except ValueError as error:
        if config.val_split is not None or not val_split:
            raise
        raise ValueError(f"{error} (the {val_split} is recorded in {config.model}: the images its training held "
                         f"out; give --val-split 0 to use {config.data}'s test split or all its images)") from None
    mapping = label_map(list(class_names), info.class_names, data=config.data, model=config.model,
                        outputs=model.num_classes)
    outputs, answers = [], []
    for log_probs, labels in protocol_log_probs(model, labelled_samples(dataset, mapping, workers=config.workers),
                                                preprocess=info.preprocess, batch_size=config.batch_size,
                                                device=resolve_device(config.device)):
        outputs.append(log_probs.double())
        answers.append(labels)
    if not outputs:
        raise ValueError(f"{config.data}: no readable images to calibrate on")
    log_probs, labels = torch.cat(outputs), torch.cat(answers)
    del outputs
    finite = torch.isfinite(log_probs).all(1)
    log_probs, labels = log_probs[finite], labels[finite]
    fit, check = _check_split(labels, config.check_fraction, seed=seed)
    temperature = fit_temperature(log_probs[fit], labels[fit])
    result = CalibrationResult(temperature, fit_images=len(fit), check_images=0 if check is None else len(check),
                               skipped_non_finite=int((~finite).sum()), images=split)
    if check is not None:
        result.before = _measured(log_probs[check], labels[check], model.num_classes)
        result.after = _measured(log_probs[check] / temperature, labels[check], model.num_classes)
    apply_temperature(model, temperature)
    card = {**info.extra, "temperature": temperature * earlier,
            "calibration": {"data": config.data, "split": split, "val_split": val_split, "seed": seed,
                            **result.to_dict()}}
    result.model_path = save_model(model.cpu(), out, info=ModelInfo(model=info.model, class_names=info.class_names,
                                                                   preprocess=info.preprocess, extra=card))
    return result
