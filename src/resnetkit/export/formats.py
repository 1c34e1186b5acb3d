"""Write a model as ONNX, TorchScript or a torch.export ExportedProgram, with its ModelInfo beside it.

Every artifact has a dynamic batch dimension and carries its preprocessing and class names twice:
inside the file (ONNX ``metadata_props``, TorchScript / ExportedProgram ``extra_files``) and in a
``PATH.json`` sidecar that tools which cannot open the artifact can still read.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import EXPORT_FORMATS, ModelInfo
from ..files import atomic_path, write_text_atomic
from .runtimes import Runner, onnx_runner

FORMATS = tuple(f for f in EXPORT_FORMATS if f != "tflite")  # tflite has its own converter (export/tflite.py)
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2", "tflite": ".tflite"}
METADATA_KEY = "resnetkit"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# Opset 17 runs on every onnxruntime since 1.13 and on OpenVINO; nothing in a ResNet needs newer.
ONNX_OPSET = 17
MAX_BATCH = 4096


def default_output(model_path: str | os.PathLike[str], fmt: str) -> Path:
    """Beside a model file; in the current folder for a pretrained name, a URL or an ``hf-hub:`` name."""
    path = Path(model_path)
    name = path.name.split("?")[0].removesuffix(".safetensors") + SUFFIXES[fmt]  # a URL's query is no name
    return path.with_name(name) if path.is_file() else Path(name)


def info_json(info: ModelInfo, **extra: object) -> str:
    data = info.to_dict()
    data["extra"] = {**data["extra"], **extra}
    return json.dumps(data, indent=1)


def write_sidecar(path: Path, info: ModelInfo, **extra: object) -> Path:
    return write_text_atomic(path.with_name(path.name + ".json"), info_json(info, **extra))


def _example(info: ModelInfo, batch: int) -> torch.Tensor:
    size = info.preprocess.input_size
    return torch.randn(batch, info.model.in_chans, size, size)


def export_onnx(model: nn.Module, info: ModelInfo, path: Path) -> Path:
    """The TorchScript-based ONNX exporter with ``dynamic_axes`` on the batch dimension.

    Why not ``dynamo=True``: it needs the extra ``onnxscript`` package, and the classic exporter folds
    BatchNorm into the convolutions in eval mode, which the INT8 quantizer relies on.
    """
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the classic exporter announces its deprecation on every call
        torch.onnx.export(model, (_example(info, 2),), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    proto = onnx.load(str(path))
    set_onnx_metadata(proto, info)
    onnx.save(proto, str(path))
    return path


def set_onnx_metadata(proto: object, info: ModelInfo, **extra: object) -> None:
    props = proto.metadata_props  # type: ignore[attr-defined]
    for prop in [p for p in props if p.key == METADATA_KEY]:
        props.remove(prop)
    entry = props.add()
    entry.key, entry.value = METADATA_KEY, info_json(info, **extra)


def read_onnx_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The ModelInfo stored in an exported ``.onnx`` file's metadata."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelInfo.from_dict(json.loads(prop.value))
    raise ValueError(f"{path}: an ONNX file without resnetkit metadata; was it exported by `resnetkit export`?")


def export_torchscript(model: nn.Module, info: ModelInfo, path: Path) -> Path:
    # Tracing, not scripting: the forward has no data-dependent control flow, and tracing keeps the
    # batch dimension symbolic (the parity check runs batches 1 and 7 to prove it).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (_example(info, 2),))
        torch.jit.save(traced, str(path), _extra_files={"resnetkit.json": info_json(info)})
    return path


def export_program(model: nn.Module, info: ModelInfo, path: Path) -> Path:
    # The example batch is 2, not 1: torch.export specialises sizes 0 and 1 to constants.
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        program = torch.export.export(model, (_example(info, 2),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path), extra_files={"resnetkit.json": info_json(info)})
    return path


def artifact_runner(path: str | os.PathLike[str], fmt: str) -> Runner:
    """Load an exported artifact back from disk, in the runtime a user would deploy it with."""
    path = Path(path)
    if fmt == "onnx":
        return onnx_runner(path)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; still loads
            module = torch.jit.load(str(path))
    elif fmt == "exported-program":
        module = torch.export.load(str(path)).module()
    else:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(batch)).numpy()

    return Runner(fmt, run, path.stat().st_size)


def write_artifact(model: nn.Module, info: ModelInfo, path: Path, fmt: str) -> Path:
    """Write the artifact only (no parity check; ``export_model`` is the checked entry point)."""
    writers = {"onnx": export_onnx, "torchscript": export_torchscript, "exported-program": export_program}
    if fmt not in writers:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    model = model.eval().float()
    with atomic_path(path) as tmp:  # written beside it and renamed: a killed export leaves an earlier file whole
        writers[fmt](model, info, tmp)
    write_sidecar(path, info, format=fmt)
    return path
