"""TFLite / LiteRT export: fp32 through ``litert-torch``, int8 through ``ai-edge-quantizer``, run by LiteRT.

Google's maintained path from PyTorch: ``litert_torch.convert`` lowers the ``torch.export`` graph to a
``.tflite`` flatbuffer (no TensorFlow install needed); ``ai_edge_quantizer`` quantizes that file
statically (int8 weights and activations, ``static_wi8_ai8``) from activation ranges it measures on the
calibration images, the same images ``--int8`` uses for ONNX. The result is loaded back with the LiteRT
interpreter (``ai_edge_litert``) and checked against eager PyTorch like every other format.

The flatbuffer has a fixed batch of 1 (the edge-device case); the runner feeds larger batches image by
image. Preprocessing and class names travel in the ``PATH.json`` sidecar (TFLite metadata would need the
``tflite-support`` package). These packages are the optional ``tflite`` extra; the core install never
imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import ModelInfo
from ..files import atomic_path
from .formats import write_sidecar
from .runtimes import Runner

INSTALL_HINT = "pip install 'resnetkit[tflite]' (litert-torch, ai-edge-litert, ai-edge-quantizer)"


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:  # a ValueError: the CLI prints it as one line
        raise ValueError(f"TFLite export needs the {module} package, which is not installed: {INSTALL_HINT}")


def export_tflite_fp32(model: nn.Module, info: ModelInfo, path: Path) -> Path:
    """Convert ``model`` with litert-torch to a batch-1 fp32 ``.tflite`` file, with ``PATH.json`` beside it."""
    _require("litert_torch")
    import litert_torch

    size = info.preprocess.input_size
    example = torch.zeros(1, info.model.in_chans, size, size)
    converted = litert_torch.convert(model.eval().float(), (example,))
    with atomic_path(path) as tmp:  # a failed or killed export leaves an earlier file as it was
        tmp.unlink()  # written anew by the exporter, as a path it creates
        converted.export(str(tmp))
    write_sidecar(path, info, format="tflite")
    return path


def quantize_tflite_int8(fp32_path: Path, output: Path, calibration: torch.Tensor, info: ModelInfo) -> Path:
    """Static int8 quantization of a ``.tflite`` file with ai-edge-quantizer, calibrated on ``calibration``."""
    _require("ai_edge_quantizer")
    from ai_edge_quantizer import quantizer, recipe

    signature, input_name = _signature(fp32_path)
    tool = quantizer.Quantizer(str(fp32_path), recipe.static_wi8_ai8())
    samples = [{input_name: image[None].numpy().astype(np.float32)} for image in calibration.float()]
    ranges = tool.calibrate({signature: samples})
    quantized = tool.quantize(ranges)
    with atomic_path(output) as tmp:  # the quantizer refuses an existing file: it writes a new one, renamed over
        tmp.unlink()
        quantized.export_model(str(tmp))
    write_sidecar(output, info, format="tflite-int8", calibration_images=len(calibration))
    return output


def _signature(path: Path) -> tuple[str, str]:
    """The model's (only) signature key and its input's name."""
    _require("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(path)).get_signature_list()
    key = next(iter(signatures))
    return key, signatures[key]["inputs"][0]


def tflite_runner(path: str | os.PathLike[str], *, name: str = "tflite", threads: int | None = None) -> Runner:
    """The LiteRT interpreter (its XNNPACK CPU delegate) on a batch-1 ``.tflite`` file, image by image."""
    _require("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    # A fully int8 model takes and gives int8 tensors: quantize the image and dequantize the logits with the
    # (scale, zero point) the file records; float models record scale 0.
    in_scale, in_zero = source["quantization"]
    out_scale, out_zero = target["quantization"]
    in_range = np.iinfo(source["dtype"]) if in_scale else None

    def run(batch: np.ndarray) -> np.ndarray:
        outputs = []
        for image in batch:
            if in_range is not None:
                image = np.clip(np.round(image / in_scale + in_zero), in_range.min, in_range.max)
            interpreter.set_tensor(source["index"], image[None].astype(source["dtype"]))
            interpreter.invoke()
            logits = interpreter.get_tensor(target["index"])[0].astype(np.float32)
            outputs.append((logits - out_zero) * out_scale if out_scale else logits)
        return np.stack(outputs)

    return Runner(name, run, Path(path).stat().st_size)


def export_tflite(model: nn.Module, info: ModelInfo, output: str | os.PathLike[str], *,
                  calibration: torch.Tensor | None = None, parity_inputs: torch.Tensor | None = None,
                  min_top1_agreement: float = 0.9):  # -> ExportResult (imported late: exporter imports models)
    """Write a ``.tflite`` file (int8 when ``calibration`` images are given) and check it in LiteRT.

    fp32 must match eager PyTorch as every format does (relative diff <= 1e-4, same top-1); int8 is
    checked on top-1 agreement over the calibration images, as ``export_int8`` does for ONNX.
    """
    from .exporter import PARITY_SAMPLES, ExportResult, _checked
    from .parity import check_parity

    output = Path(output)
    model = model.eval().float()
    if calibration is None:
        if parity_inputs is None:
            size = info.preprocess.input_size
            parity_inputs = torch.randn(PARITY_SAMPLES, info.model.in_chans, size, size,
                                        generator=torch.Generator().manual_seed(0))
        export_tflite_fp32(model, info, output)
        parity = _checked(output, lambda: check_parity(model, tflite_runner(output), parity_inputs))
        return ExportResult(output, output.with_name(output.name + ".json"), "tflite", parity)
    fp32 = export_tflite_fp32(model, info, output.with_name(output.name + ".fp32.tflite"))
    _checked(fp32, lambda: check_parity(model, tflite_runner(fp32), calibration[:PARITY_SAMPLES]))
    quantize_tflite_int8(fp32, output, calibration, info)
    for leftover in (fp32, fp32.with_name(fp32.name + ".json")):
        leftover.unlink(missing_ok=True)
    parity = _checked(output, lambda: check_parity(model, tflite_runner(output, name="tflite-int8"), calibration,
                                                   rtol=float("inf"), min_top1_agreement=min_top1_agreement))
    return ExportResult(output, output.with_name(output.name + ".json"), "tflite-int8", parity)
