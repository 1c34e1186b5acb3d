"""``Predictor``: a model plus its own preprocessing and class names, returning labelled top-k."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import ModelInfo, Preprocess
from ..config.fields import check_count
from ..config.tasks import check_min_confidence
from ..device import resolve_device
from ..models import list_models, load_model, load_state_dict_file
from ..models.pretrained import close_model_names, find_weights, get_weights, identify_weights, load_entry, with_preprocess
from ..models.hf_hub import is_hf_hub_name, load_hf_hub_as
from ..models.resnet import ResNet
from ..models.tta import TTA_MODES, flip_averaged_log_probs
from ..models.state_dict import model_for_state_dict
from ..models.weights import resolve_weight_path
from .cam import cam_to_image, grad_cam
from ..data.classes import read_class_names, resolve_class
from ..data.image import to_pil
from .images import ImageInput, ImageLoadError, describe, is_url, load_pixels
from .transforms import eval_transform

DEFAULT_BATCH_SIZE = 32
log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """The top-k classes of one image, best first; or, when the image could not be used, ``error``."""

    source: str
    labels: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None
    # The top-1 probability is below the predictor's ``min_confidence``: the labels are a guess, not an answer.
    uncertain: bool = False
    # The upright RGB image that was classified, kept only on request (``keep_images=True``).
    image: Image.Image | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        return self.labels[0] if self.labels else None

    @property
    def probability(self) -> float | None:
        return self.probabilities[0] if self.probabilities else None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "labels": list(self.labels), "indices": list(self.indices),
                "probabilities": list(self.probabilities), "uncertain": self.uncertain, "error": self.error}


@dataclass
class GradCam:
    """A Grad-CAM heat-map at the original image's size, for one class."""

    source: str
    index: int
    label: str
    probability: float
    heatmap: np.ndarray  # (height, width) float32 in [0, 1]


class Predictor:
    """Classify images with a model and the preprocessing and class names stored with its weights.

    >>> predictor = Predictor.from_file("cifar10-resnet20.safetensors")
    >>> predictor.predict(["cat.jpg", "dog.png"], top_k=3)[0].label
    'cat'
    """

    def __init__(self, model: ResNet, info: ModelInfo, *, device: str | torch.device | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, tta: str = "none", min_confidence: float = 0.0) -> None:
        if tta not in TTA_MODES:
            raise ValueError(f"tta={tta!r} is not one of {', '.join(TTA_MODES)}")
        check_min_confidence(min_confidence)
        if info.model.in_chans != 3:
            raise ValueError(f"the model takes {info.model.in_chans}-channel input; Predictor feeds RGB images")
        if info.class_names and len(info.class_names) != model.num_classes:
            raise ValueError(f"{len(info.class_names)} class names for a {model.num_classes}-class model")
        check_batch_size(batch_size)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.info = info
        self.batch_size = batch_size
        self.tta = tta  # "flip": each image's softmax averaged with its mirror's, as resnetkit eval's flip protocol
        self.min_confidence = min_confidence
        self.transform = eval_transform(info.preprocess)
        # Models saved without names still get readable labels: their class indices.
        self.class_names = list(info.class_names) or [str(i) for i in range(model.num_classes)]

    @property
    def preprocess(self) -> Preprocess:
        return self.info.preprocess

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> Predictor:
        """A predictor for a resnetkit ``.safetensors`` model file, its URL, or a pretrained name."""
        model, info = load_model(path)
        return cls(model, info, **kwargs)

    @classmethod
    def from_name(cls, name: str, *, weights: str | os.PathLike[str],
                  class_names: str | os.PathLike[str] | Sequence[str] | None = None,
                  preprocess: Preprocess | None = None, device: str | torch.device | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, **options: Any) -> Predictor:
        """A registered architecture with a torchvision / timm / resnetkit state dict (path, URL or catalog name).

        ``class_names`` is a file (one name per line, or JSON) or a list. The number of classes is read
        from the weights' classifier; ``options`` (``variant``, ``shortcut`` ...) go to ``create_model``.
        A file the catalog knows (same SHA-256) brings its own preprocessing and class names; for another
        file ``preprocess`` defaults to the architecture's (ImageNet 256/224 bilinear, CIFAR 32).
        """
        entry = get_weights(os.fspath(weights))
        if entry is not None:
            if entry.arch != name:
                raise ValueError(f"weights {entry.name} are for {entry.arch}, not {name}")
            model, info = load_entry(entry)
        elif is_hf_hub_name(os.fspath(weights)):  # the repository's preprocessing and class names come with it
            model, info = load_hf_hub_as(name, os.fspath(weights))
        else:
            path = resolve_weight_path(os.fspath(weights))
            model = model_for_state_dict(name, load_state_dict_file(path), source=str(path), **options)
            info = ModelInfo(model=model.config, preprocess=model.spec.preprocess)
            entry = identify_weights(path, arch=name)
            if entry is not None:
                info.preprocess, info.class_names = entry.preprocess or info.preprocess, entry.class_names()
                info.extra["weights"] = entry.name
            elif preprocess is None:
                p = info.preprocess
                log.warning("%s: weights the catalog does not know; using %s's default preprocessing (resize %d, "
                            "crop %d, %s); if they were trained otherwise, give --resize-size/--input-size/"
                            "--interpolation", path, name, p.resize_size, p.input_size, p.interpolation)
        names: list[str] = []
        origin = "the list"
        if isinstance(class_names, (str, os.PathLike)):
            names, origin = read_class_names(class_names), os.fspath(class_names)
        elif class_names is not None:
            names = list(class_names)
        if names and len(names) != model.num_classes:
            raise ValueError(f"{len(names)} class names (from {origin}) for weights with {model.num_classes} "
                             f"classes ({weights})")
        info.class_names = names or info.class_names
        info.preprocess = preprocess or info.preprocess
        return cls(model, info, device=device, batch_size=batch_size)

    def predict(self, images: ImageInput | Sequence[ImageInput], *, top_k: int = 5, batch_size: int | None = None,
                names: Sequence[str] | None = None) -> list[Prediction]:
        """Top-k predictions for each image, in input order; unusable images get ``error`` set.

        ``images`` is one image or a sequence: paths, URLs, encoded bytes, PIL images, HWC arrays,
        CHW tensors; a 4-D tensor (NCHW) or array (NHWC) is a batch. ``names`` label the results
        (default: the path, URL or a placeholder).
        """
        return list(self.iter_predict(images, top_k=top_k, batch_size=batch_size, names=names))

    def iter_predict(self, images: ImageInput | Sequence[ImageInput], *, top_k: int = 5,
                     batch_size: int | None = None, names: Sequence[str] | None = None,
                     keep_images: bool = False) -> Iterator[Prediction]:
        """Like ``predict``, yielding as each batch finishes; ``keep_images`` sets ``Prediction.image``."""
        if top_k < 1:
            raise ValueError(f"top_k={top_k} must be >= 1")
        check_batch_size(batch_size)
        items = _as_list(images)
        if names is not None and len(names) != len(items):
            raise ValueError(f"{len(names)} names for {len(items)} images")
        labels = names or [describe(item, i) for i, item in enumerate(items)]
        size = self.batch_size if batch_size is None else batch_size
        for start in range(0, len(items), size):
            yield from self._predict_batch(items[start:start + size], labels[start:start + size], top_k, keep_images)

    def _predict_batch(self, items: list[Any], labels: Sequence[str], top_k: int,
                       keep_images: bool) -> list[Prediction]:
        predictions, tensors, ready = [], [], []
        for item, label in zip(items, labels):
            prediction = Prediction(source=label)
            try:
                pixels = load_pixels(item, name=label)
                tensors.append(self.transform(pixels))
                ready.append(prediction)
                if keep_images:
                    prediction.image = to_pil(pixels)
            except ImageLoadError as e:
                prediction.error = str(e)
            except Exception as e:  # anything else one odd image throws must not sink the batch
                prediction.error = f"{label}: could not be preprocessed ({type(e).__name__}: {e})"
            predictions.append(prediction)
        if tensors:
            batch = torch.stack(tensors).to(self.device)
            with torch.inference_mode():
                logits = flip_averaged_log_probs(self.model, batch) if self.tta == "flip" else self.model(batch)
            label_predictions(ready, logits, class_names=self.class_names, top_k=top_k,
                              min_confidence=self.min_confidence)
        return predictions

    def class_index(self, target: int | str) -> int:
        """The index of a class given by name or index."""
        return resolve_class(target, self.class_names, len(self.class_names))

    def grad_cam(self, images: ImageInput | Sequence[ImageInput], *, target: int | str | None = None,
                 names: Sequence[str] | None = None, max_side: int | None = None) -> list[GradCam]:
        """Grad-CAM heat-maps at each image's own size, for ``target`` (name or index) or the predicted class.

        With ``max_side``, a larger image's heat-map is at its size scaled down to fit ``max_side`` (aspect
        kept; the model still sees the full image): resize the image to the heat-map's shape to overlay it.

        Raises ``ImageLoadError`` for an unusable image; use ``iter_predict`` first to sort those out.
        """
        items = _as_list(images)
        if names is not None and len(names) != len(items):  # zip would drop the images without a name
            raise ValueError(f"{len(names)} names for {len(items)} images")
        labels = names or [describe(item, i) for i, item in enumerate(items)]
        pictures = [load_pixels(item, name=label) for item, label in zip(items, labels)]
        if not pictures:
            return []
        batch = torch.stack([self.transform(p) for p in pictures]).to(self.device)
        targets = None if target is None else [self.class_index(target)] * len(pictures)
        maps, logits = grad_cam(self.model, batch, targets)
        probabilities = logits.float().softmax(dim=1)
        chosen = logits.argmax(1).tolist() if targets is None else targets
        return [GradCam(source=label, index=c, label=self.class_names[c], probability=float(probabilities[i, c]),
                        heatmap=cam_to_image(maps[i], picture.shape[2], picture.shape[1], self.preprocess,
                                             max_side=max_side))
                for i, (label, picture, c) in enumerate(zip(labels, pictures, chosen))]



def load_predictor(model: str, *, weights: str | None = None, class_names: str | None = None,
                   device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE, pretrained: str | None = None,
                   preprocess: dict[str, Any] | None = None, tta: str = "none",
                   min_confidence: float = 0.0) -> Predictor:
    """A predictor from a resnetkit ``.safetensors`` file (path or URL), a pretrained name (``resnet20_cifar10``,
    or ``model="resnet20", pretrained="cifar10"``), or a registered name plus ``weights``.

    ``preprocess`` overrides fields of the preprocessing (``{"resize_size": 232}``) for weights trained
    differently from what the file or catalog says; ``tta="flip"`` averages each image's softmax with its
    mirror's; an answer whose top-1 probability is below ``min_confidence`` is marked ``uncertain``. What
    ``resnetkit predict`` and ``resnetkit serve`` take.
    """
    check_min_confidence(min_confidence)  # before any weights are read or downloaded
    if pretrained is not None:
        if weights is not None:
            raise ValueError("give either --pretrained or --weights, not both")
        model = find_weights(model, pretrained).name
    if model in list_models():
        if weights is None:
            raise ValueError(f"{model} is an architecture name: give its weights with --weights FILE_OR_URL "
                             "(and --classes FILE for the class names), --pretrained TAG, or pass a model file; "
                             "see `resnetkit models --pretrained`")
        predictor = Predictor.from_name(model, weights=weights, class_names=class_names, device=device,
                                        batch_size=batch_size)
    else:
        if weights is not None or class_names is not None:
            raise ValueError(f"{model}: --weights and --classes go with an architecture name (see `resnetkit "
                             "models`); a resnetkit model file (or pretrained name) already holds its weights and "
                             "class names")
        if not is_url(model) and not os.path.exists(model) and get_weights(model) is None and \
                not is_hf_hub_name(model):
            raise FileNotFoundError(f"{model}: neither a model file nor a registered architecture name (see "
                                    "`resnetkit models`) nor a pretrained name (see `resnetkit models --pretrained`)"
                                    f"{close_model_names(model)}")
        predictor = Predictor.from_file(model, device=device, batch_size=batch_size)
    if preprocess or tta != "none" or min_confidence:
        info = with_preprocess(predictor.info, preprocess or {})
        predictor = Predictor(predictor.model, info, device=predictor.device, batch_size=batch_size, tta=tta,
                              min_confidence=min_confidence)
    return predictor


def check_batch_size(batch_size: int | None) -> None:
    """Refuse a batch size that is not a whole number >= 1 (None means the predictor's default)."""
    if batch_size is not None:
        check_count("batch_size", batch_size, minimum=1, meaning="--batch-size: the number of images per batch")


def label_predictions(predictions: Sequence[Prediction], logits: torch.Tensor, *, class_names: Sequence[str],
                      top_k: int, min_confidence: float = 0.0) -> None:
    """Fill each prediction's top-k classes from its row of ``logits`` (N, classes): the one labelling of
    ``Predictor.predict`` and the server. A row that is NaN or infinite becomes the prediction's error; a top-1
    probability below ``min_confidence`` marks the prediction ``uncertain``."""
    probabilities, indices = logits.float().softmax(dim=1).topk(min(top_k, logits.shape[1]), dim=1)
    finite = torch.isfinite(logits).all(dim=1).tolist()
    for prediction, probs, idx, ok in zip(predictions, probabilities.tolist(), indices.tolist(), finite):
        if not ok:  # weights that overflow (finite in the file): an answer of "nan%" is no answer
            prediction.error = (f"{prediction.source}: the model's output is NaN or infinite: its weights "
                                "are damaged or overflow; use a model file you trust")
            continue
        prediction.indices = idx
        prediction.probabilities = probs
        prediction.labels = [class_names[i] for i in idx]
        prediction.uncertain = probs[0] < min_confidence


def _as_list(images: Any) -> list[Any]:
    """One image or many, as a list of single images."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]
