"""``export_model``: write an artifact, load it back, and prove it computes what the model computes."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ExportConfig, ModelInfo
from ..files import prepare_output_dir
from ..models import ResNet, default_info, load_model
from .formats import FORMATS, SUFFIXES, artifact_runner, default_output, write_artifact, write_sidecar
from .parity import ParityError, ParityReport, check_parity

PARITY_SAMPLES = 14  # two batches of 7 and fourteen of 1: enough to catch layout bugs, quick on a CPU


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sidecar: Path
    format: str
    parity: ParityReport

    def summary(self) -> str:
        size = self.path.stat().st_size / 1e6
        return f"wrote {self.path} ({size:.2f} MB, {self.format}) and {self.sidecar}\n{self.parity.summary()}"


def export_model(model: ResNet | str | os.PathLike[str], *, fmt: str = "onnx",
                 output: str | os.PathLike[str] | None = None, info: ModelInfo | None = None,
                 parity_inputs: torch.Tensor | None = None) -> ExportResult:
    """Export a model (or a resnetkit ``.safetensors`` file) and run the parity check on the result.

    ``parity_inputs`` are preprocessed images ``(N, C, H, W)``; without them, random normal inputs of
    the model's input size stand in (they exercise the same arithmetic, not real activation ranges).
    Raises ``ParityError`` when the artifact disagrees with eager PyTorch.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    if isinstance(model, (str, os.PathLike)):
        if output is None:
            output = default_output(model, fmt)
        model, info = load_model(model)
    if info is None:
        info = default_info(model)
    if output is None:
        raise ValueError("export_model(model object) needs output=PATH")
    path = write_artifact(model, info, Path(output), fmt)
    if parity_inputs is None:
        size = info.preprocess.input_size
        parity_inputs = torch.randn(PARITY_SAMPLES, info.model.in_chans, size, size,
                                    generator=torch.Generator().manual_seed(0))
    parity = _checked(path, lambda: check_parity(model, artifact_runner(path, fmt), parity_inputs))
    return ExportResult(path, path.with_name(path.name + ".json"), fmt, parity)


def _checked(path: Path, check: Callable[[], ParityReport]) -> ParityReport:
    """Run a parity check; on failure remove the artifact (and its sidecar) so nobody ships it by mistake."""
    try:
        return check()
    except ParityError as e:
        for leftover in (path, path.with_name(path.name + ".json")):
            leftover.unlink(missing_ok=True)
        raise ParityError(f"{e} ({path} was removed)") from e


def export_int8(model: ResNet | str | os.PathLike[str], calibration: torch.Tensor, *,
                output: str | os.PathLike[str] | None = None, info: ModelInfo | None = None,
                min_top1_agreement: float = 0.9) -> ExportResult:
    """Export ONNX (parity-checked), quantize it to INT8 on ``calibration`` images, check it again.

    INT8 cannot match fp32 to 1e-4, so the second check is on top-1 agreement with eager PyTorch over
    the calibration images (the diff is reported). Random-weight models have near-tied logits and
    may agree less; pass real images and a trained model, or lower ``min_top1_agreement``.
    """
    from .quantize import quantize_onnx_int8
    from .runtimes import onnx_runner

    if isinstance(model, (str, os.PathLike)):
        if output is None:
            output = default_output(model, "onnx").with_suffix(".int8.onnx")
        model, info = load_model(model)
    if output is None:
        raise ValueError("export_int8(model object) needs output=PATH")
    output = Path(output)
    fp32 = export_model(model, fmt="onnx", output=output.with_name(output.name + ".fp32.onnx"), info=info,
                        parity_inputs=calibration[:PARITY_SAMPLES])
    quantize_onnx_int8(fp32.path, output, calibration)
    fp32.path.unlink()
    fp32.sidecar.unlink()
    # The sidecar says what the file holds, as the metadata inside it does (and the TFLite INT8 sidecar).
    sidecar = write_sidecar(output, info or default_info(model), format="onnx-int8", quantization="int8-static-qdq",
                            calibration_images=len(calibration))
    parity = _checked(output, lambda: check_parity(model, onnx_runner(output, name="onnx-int8"), calibration,
                                                   rtol=float("inf"), min_top1_agreement=min_top1_agreement))
    return ExportResult(output, sidecar, "onnx-int8", parity)


def check_output(output: str | os.PathLike[str], fmt: str, *, inputs: tuple[str | os.PathLike[str], ...] = ()
                 ) -> Path:
    """Refuse, before any work, an ``--output`` that is not a file name for ``fmt`` (a typo, or another kind of file
    such as the model file itself, is refused rather than overwritten), that is or links to one of ``inputs``,
    or that cannot be written."""
    path, ending = Path(output), "." + SUFFIXES[fmt].rsplit(".", 1)[-1]  # .torchscript.pt -> .pt
    for source in inputs:
        if path.exists() and Path(source).exists() and os.path.samefile(path, source):
            raise ValueError(f"--output {path}: is the input {source} (or a link to it), which the export would "
                             "replace; give another file name")
    if path.is_symlink():
        raise ValueError(f"--output {path}: is a link (to {os.readlink(path)}); the export would replace what it "
                         "points to: give a plain file name")
    if path.is_dir():
        raise ValueError(f"--output {path}: is a folder; give a file name ending in {ending}")
    if path.suffix.lower() != ending:
        raise ValueError(f"--output {path}: {fmt} files end in {ending} (an existing file of another kind is never "
                         f"overwritten); give a name such as {path.with_name(path.stem + ending)}")
    full = SUFFIXES[fmt]
    if full != ending and path.is_file() and not path.name.lower().endswith(full) and not _is_torchscript(path):
        # .pt is also what torch.save writes: an existing checkpoint.pt is not taken for an earlier export
        raise ValueError(f"--output {path}: an existing file not named *{full}, perhaps a training checkpoint, which "
                         f"is never overwritten; give a new file name or one ending in {full}")
    prepare_output_dir(path.parent, flag="the folder of --output")
    return path


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (an earlier export under a name of the user's): a zip holding the program's code/,
    which torch.save's checkpoints do not."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist()[:10_000])
    except (OSError, zipfile.BadZipFile):
        return False


def export_from_file(config: ExportConfig) -> str:
    """What ``resnetkit export`` does: export (optionally INT8) and optionally report variants; returns the text."""
    from .data import load_calibration_images, load_image_folder
    from .evaluate import compare_variants

    model_path, fmt, images, int8 = config.model, config.format, config.images, config.int8
    limit, report = config.limit, [v for v in config.report.split(",") if v] or None
    if int8 and fmt not in ("onnx", "tflite"):  # ExportConfig has checked that --images is given
        raise ValueError(f"INT8 export writes ONNX or TFLite; drop --format {fmt}")
    output = config.output
    if output is None:
        output = default_output(model_path, fmt)
        output = output.with_suffix(".int8" + output.suffix) if int8 else output
    output = check_output(output, fmt, inputs=(model_path,))
    if report:  # checked before the artifact is written, not after
        from .registry import check_runtimes

        check_runtimes(report)
        if images is None:
            raise ValueError("a variant report needs --images FOLDER with labelled images")

    model, info = load_model(model_path)
    labelled, calibration = None, None
    if report:  # accuracy needs labels the model knows
        labelled = load_image_folder(images, info.preprocess, class_names=info.class_names or None, limit=limit)
        calibration = labelled.images
    elif images is not None:  # calibration and parity need images only
        calibration = load_calibration_images(images, info.preprocess, limit=limit)
    parity_inputs = None if calibration is None else calibration[:64]
    if fmt == "tflite":  # LiteRT: its own converter, quantizer and interpreter (the optional tflite extra)
        from .tflite import export_tflite

        result = export_tflite(model, info, output, calibration=calibration if int8 else None,
                               parity_inputs=parity_inputs)
    elif int8:
        result = export_int8(model, calibration, output=output, info=info)
    else:
        result = export_model(model, fmt=fmt, output=output, info=info, parity_inputs=parity_inputs)
    lines = [result.summary()]
    if report:
        if labelled is None:
            raise ValueError("a variant report needs --images FOLDER with labelled images")
        # The INT8 rows quantize with the written file's calibration images, so they measure the model written.
        lines.append(compare_variants(model, labelled, variants=tuple(report), info=info,
                                      calibration=calibration).table())
    return "\n".join(lines)
