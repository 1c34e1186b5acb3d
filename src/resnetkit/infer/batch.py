"""Predict over many inputs (files, folders, globs, URLs) with a progress bar, writing annotated
images and Grad-CAM overlays on request: what ``resnetkit predict`` runs."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from tqdm import tqdm

from ..files import file_url_path, prepare_output_dir
from .annotate import draw_label, label_text
from .cam import MAX_OVERLAY_SIDE, overlay
from .images import expand_inputs, is_url
from .predictor import Prediction, Predictor, check_batch_size


# Images held at full size at once while --annotate / --cam write them (and per Grad-CAM pass, which decodes its own
# copy): a batch of 32 24-megapixel photos held whole would cost 2.3 GB, 4 cost 288 MB.
OUTPUT_CHUNK = 4


def predict_inputs(predictor: Predictor, inputs: list[str], *, top_k: int = 5, batch_size: int | None = None,
                   annotate_dir: str | os.PathLike[str] | None = None, cam_dir: str | os.PathLike[str] | None = None,
                   cam_class: int | str | None = None, progress: bool | None = None) -> list[Prediction]:
    """Predictions for every image the inputs name, in order; unusable ones carry ``error``.

    ``annotate_dir`` receives each image with its top label drawn on it; ``cam_dir`` a Grad-CAM
    overlay for the predicted class (or ``cam_class``). ``progress`` shows a bar on stderr (default:
    when stderr is a terminal and there is more than one batch).
    """
    check_batch_size(batch_size)
    sources = expand_inputs(inputs)
    if not sources:
        raise ValueError(f"no images found in {' '.join(inputs)}")
    cam_target = None if cam_class is None else predictor.class_index(cam_class)  # fail before any work
    output_names = plan_outputs(sources, annotate_dir=annotate_dir, cam_dir=cam_dir)  # likewise
    size = predictor.batch_size if batch_size is None else batch_size
    if progress is None:
        progress = len(sources) > size and sys.stderr.isatty()
    keep = annotate_dir is not None or cam_dir is not None
    if keep:
        size = min(size, OUTPUT_CHUNK)  # the same predictions: the model is in eval mode
    results: list[Prediction] = []
    batch: list[Prediction] = []
    with tqdm(total=len(sources), unit="img", file=sys.stderr, disable=not progress) as bar:
        for prediction in predictor.iter_predict(sources, top_k=top_k, batch_size=size, keep_images=keep):
            results.append(prediction)
            batch.append(prediction)
            bar.update(1)
            if len(batch) == size:
                _write_outputs(predictor, batch, output_names, annotate_dir, cam_dir, cam_target)
                batch = []
        _write_outputs(predictor, batch, output_names, annotate_dir, cam_dir, cam_target)
    return results


def plan_outputs(sources: list[str], *, annotate_dir: str | os.PathLike[str] | None,
                 cam_dir: str | os.PathLike[str] | None) -> dict[str, str]:
    """The output file name of each source, once the output folders are created and it is clear that no output
    replaces an input image or another output; otherwise ``ValueError`` naming the flag."""
    folders = [(flag, Path(folder)) for flag, folder in (("--annotate", annotate_dir), ("--cam", cam_dir))
               if folder is not None]
    if not folders:
        return {}
    if len(folders) == 2 and folders[0][1].resolve() == folders[1][1].resolve():
        raise ValueError(f"--annotate and --cam both name {folders[0][1]}: each would write <image>.png there and "
                         "the Grad-CAM overlays would replace the annotated copies; give two different folders")
    writer = _OutputNames()
    names = {source: writer.name_for(source) for source in sources}
    # A file:// URL is a local file too: its output must not replace it either.
    files = [local for source in sources if (local := _local_path(source)) is not None]
    inputs = {os.path.realpath(source) for source in files}
    # Outputs beside the inputs could replace images of the user's that are not inputs of this run, too.
    input_folders = {os.path.realpath(os.path.dirname(source) or "."): source for source in files}
    for flag, folder in folders:
        if os.path.realpath(folder) in input_folders:
            raise ValueError(f"{flag} {folder}: this folder holds input images (e.g. "
                             f"{input_folders[os.path.realpath(folder)]}), which the outputs could replace; "
                             "give a separate output folder")
        for source, name in names.items():
            if os.path.realpath(folder / name) in inputs:  # e.g. through a link
                raise ValueError(f"{flag} {folder}: writing the output for {source} would replace the input image "
                                 f"{folder / name}; give a separate output folder")
    for flag, folder in folders:
        prepare_output_dir(folder, flag=flag)
    if writer.renamed:
        source, name = writer.renamed[0]
        warnings.warn(f"{len(writer.renamed)} input(s) share a file name with another input; their outputs are "
                      f"numbered, e.g. {source} -> {name}", stacklevel=2)
    return names


def _local_path(source: str) -> str | None:
    """The file a source names on this machine (a path, or a ``file://`` URL's), or None for a download."""
    return file_url_path(source) if is_url(source) else source


def _write_outputs(predictor: Predictor, batch: list[Prediction], names: dict[str, str],
                   annotate_dir: str | os.PathLike[str] | None, cam_dir: str | os.PathLike[str] | None,
                   cam_target: int | None) -> None:
    usable = [p for p in batch if p.ok and p.image is not None]
    if not usable:
        return
    outputs = [names[p.source] for p in usable]
    if annotate_dir is not None:
        for prediction, name in zip(usable, outputs):
            text = label_text(prediction.label, prediction.probability)
            text += " (uncertain)" if prediction.uncertain else ""
            draw_label(prediction.image, text).save(Path(annotate_dir) / name)
    if cam_dir is not None:
        cams = predictor.grad_cam([p.image for p in usable], target=cam_target, names=[p.source for p in usable],
                                  max_side=MAX_OVERLAY_SIDE)
        for prediction, cam, name in zip(usable, cams, outputs):
            # Blended at the image's size up to MAX_OVERLAY_SIDE; the label names the class the map explains.
            blended = overlay(prediction.image, cam.heatmap)
            draw_label(blended, f"Grad-CAM: {label_text(cam.label, cam.probability)}").save(Path(cam_dir) / name)
    for prediction in usable:
        prediction.image = None  # written; do not hold every image of a large run in memory


class _OutputNames:
    """``<stem>.png`` per input, with ``-2``, ``-3`` ... when two inputs share a stem."""

    def __init__(self) -> None:
        self.used: set[str] = set()
        self.renamed: list[tuple[str, str]] = []  # (source, name) given a number

    def name_for(self, source: str) -> str:
        path = source.split("?")[0] if is_url(source) else source  # a URL's last part, without its query
        stem = Path(path).stem or "image"
        name, n = f"{stem}.png", 1
        while name in self.used:
            n += 1
            name = f"{stem}-{n}.png"
        if n > 1:
            self.renamed.append((source, name))
        self.used.add(name)
        return name
