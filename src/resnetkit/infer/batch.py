"""Predict over many inputs (files, folders, globs, URLs) with a progress bar, writing annotated
images and Grad-CAM overlays on request: what ``resnetkit predict`` runs."""

from __future__ import annotations

import os
import sys
import urllib.parse
from pathlib import Path

from tqdm import tqdm

from .annotate import draw_label, label_text
from .cam import overlay
from .images import expand_inputs, is_url
from .predictor import Prediction, Predictor


def predict_inputs(predictor: Predictor, inputs: list[str], *, top_k: int = 5, batch_size: int | None = None,
                   annotate_dir: str | os.PathLike[str] | None = None, cam_dir: str | os.PathLike[str] | None = None,
                   cam_class: int | str | None = None, progress: bool | None = None) -> list[Prediction]:
    """Predictions for every image the inputs name, in order; unusable ones carry ``error``.

    ``annotate_dir`` receives each image with its top label drawn on it; ``cam_dir`` a Grad-CAM
    overlay for the predicted class (or ``cam_class``). ``progress`` shows a bar on stderr (default:
    when stderr is a terminal and there is more than one batch).
    """
    sources = expand_inputs(inputs)
    if not sources:
        raise ValueError(f"no images found in {' '.join(inputs)}")
    cam_target = None if cam_class is None else predictor.class_index(cam_class)  # fail before any work
    size = batch_size or predictor.batch_size
    writer = _OutputNames()
    if progress is None:
        progress = len(sources) > size and sys.stderr.isatty()
    keep = annotate_dir is not None or cam_dir is not None
    results: list[Prediction] = []
    batch: list[Prediction] = []
    with tqdm(total=len(sources), unit="img", file=sys.stderr, disable=not progress) as bar:
        for prediction in predictor.iter_predict(sources, top_k=top_k, batch_size=size, keep_images=keep):
            results.append(prediction)
            batch.append(prediction)
            bar.update(1)
            if len(batch) == size:
                _write_outputs(predictor, batch, writer, annotate_dir, cam_dir, cam_target)
                batch = []
        _write_outputs(predictor, batch, writer, annotate_dir, cam_dir, cam_target)
    return results


def _write_outputs(predictor: Predictor, batch: list[Prediction], writer: _OutputNames,
                   annotate_dir: str | os.PathLike[str] | None, cam_dir: str | os.PathLike[str] | None,
                   cam_target: int | None) -> None:
    usable = [p for p in batch if p.ok and p.image is not None]
    if not usable:
        return
    names = [writer.name_for(p.source) for p in usable]
    if annotate_dir is not None:
        Path(annotate_dir).mkdir(parents=True, exist_ok=True)
        for prediction, name in zip(usable, names):
            draw_label(prediction.image, label_text(prediction.label, prediction.probability)).save(
                Path(annotate_dir) / name)
    if cam_dir is not None:
        Path(cam_dir).mkdir(parents=True, exist_ok=True)
        cams = predictor.grad_cam([p.image for p in usable], target=cam_target, names=[p.source for p in usable])
        for prediction, cam, name in zip(usable, cams, names):
            # Blend at full resolution; the label names the class the map explains.
            blended = overlay(prediction.image, cam.heatmap)
            draw_label(blended, f"Grad-CAM: {label_text(cam.label, cam.probability)}").save(Path(cam_dir) / name)
    for prediction in usable:
        prediction.image = None  # written; do not hold every image of a large run in memory


class _OutputNames:
    """``<stem>.png`` per input, with ``-2``, ``-3`` ... when two inputs share a stem."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def name_for(self, source: str) -> str:
        path = urllib.parse.urlparse(source).path if is_url(source) else source
        stem = Path(path).stem or "image"
        name, n = f"{stem}.png", 1
        while name in self.used:
            n += 1
            name = f"{stem}-{n}.png"
        self.used.add(name)
        return name
