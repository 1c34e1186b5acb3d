"""The model behind the server: a ``Predictor`` (preprocessing, class names, Grad-CAM) and a runner.

The runner is one of the runtimes ``resnetkit export`` / ``bench`` build (``resnetkit.export.runtimes``):
eager PyTorch, ONNX Runtime on an ONNX file, or OpenVINO on the INT8 ONNX file ``resnetkit export
--int8`` writes. Preprocessing always comes from the Predictor, so every runtime sees the same input.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..export.runtimes import Runner, onnx_runner, openvino_runner, parameter_bytes, torch_runner
from ..infer import Prediction, Predictor, label_predictions, load_image
from ..files import file_sha256
from ..models.weights import resolve_weight_path
from ..models.tta import mirror_averaged

logger = logging.getLogger("resnetkit.serve")


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def int8_beside(model_file: str | os.PathLike[str] | None) -> Path | None:
    """Where ``resnetkit export MODEL --int8`` writes the INT8 ONNX file (``X.safetensors`` -> ``X.int8.onnx``)."""
    if model_file is None:
        return None
    from ..export.formats import default_output

    return default_output(model_file, "onnx").with_suffix(".int8.onnx")


def _read_onnx(path: str | os.PathLike[str]) -> Any:
    """The ONNX graph in ``path`` (weights stored beside it are not read); ``ValueError`` naming a damaged file."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, OSError ...: the file is not a whole ONNX model
        raise ValueError(f"{path}: not a readable ONNX file ({type(e).__name__}: {str(e)[:200]}); it may be "
                         "truncated: write it again with `resnetkit export MODEL` (--int8 for the INT8 one)") from None


def is_int8_onnx(path: str | os.PathLike[str]) -> bool:
    return any(node.op_type in ("QuantizeLinear", "QLinearConv") for node in _read_onnx(path).graph.node)


def choose_runtime(requested: str, *, device: torch.device, model_file: str | None,
                   onnx_file: str | None) -> tuple[str, str | None]:
    """The runtime to serve with and the ONNX file it reads (None: export one at startup, or torch).

    ``auto`` is the fastest one available (docs/bench-runtimes.md: OpenVINO on our INT8 file, then
    ONNX Runtime fp32, then eager PyTorch), and PyTorch whenever the model sits on a GPU.
    """
    if onnx_file is not None and _installed("onnx"):
        _read_onnx(onnx_file)  # a damaged --onnx file is named before the server starts, not by its loader
    if requested == "auto":
        if device.type != "cpu" or not _installed("onnx", "onnxruntime"):
            return "torch", None
        int8 = Path(onnx_file) if onnx_file else int8_beside(model_file)
        if int8 is not None and int8.is_file() and _installed("openvino") and is_int8_onnx(int8):
            return "openvino-int8", str(int8)
        return "onnx", onnx_file
    needs = {"onnx": ("onnx", "onnxruntime"), "openvino-int8": ("onnx", "openvino")}.get(requested, ())
    if not _installed(*needs):
        raise ValueError(f"--runtime {requested} needs {' and '.join(needs)}: pip install 'resnetkit[export]'")
    if requested == "openvino-int8":
        path = Path(onnx_file) if onnx_file else int8_beside(model_file)
        if path is None or not path.is_file():
            where = f" (looked for {path})" if path else ""
            raise ValueError(f"--runtime openvino-int8 needs the model's INT8 ONNX file{where}: write it with "
                             "`resnetkit export MODEL --int8 --images CALIBRATION_FOLDER`, or pass --onnx FILE")
        if not is_int8_onnx(path):
            raise ValueError(f"{path}: not an INT8 (quantized) ONNX file; serve it with --runtime onnx")
        return requested, str(path)
    return requested, onnx_file


@dataclass
class Engine:
    """Preprocess, run and label; ``forward`` is what the batching worker calls."""

    predictor: Predictor
    runner: Runner
    runtime: str
    model_file: str | None = None
    sha256: str | None = None
    # OpenVINO compiles one graph per input shape: batches are padded up to one of these sizes so
    # every shape is compiled during warm-up, never while a request waits. Empty: any size runs as is.
    padded_sizes: tuple[int, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    tta: str = "none"  # "flip": each image's softmax averaged with its mirror's (two runs of the batch)
    min_confidence: float = 0.0  # answers with a lower top-1 probability are marked uncertain

    def preprocess(self, data: bytes, name: str) -> np.ndarray:
        """Encoded image bytes -> the model's input (C, H, W) float32, as ``resnetkit predict`` does it."""
        return self.predictor.transform(load_image(data, name=name)).numpy()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The batch's logits (N, classes); with ``tta="flip"``, the mirror-averaged log-probabilities."""
        logits = self._run(batch)
        if self.tta == "flip":  # the mirrored batch as a second run: every runtime, every padded size, unchanged
            mirrored = self._run(np.ascontiguousarray(batch[..., ::-1]))
            both = (torch.from_numpy(np.asarray(out)) for out in (logits, mirrored))
            return mirror_averaged(*both).numpy()
        return logits

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        size = next((s for s in self.padded_sizes if s >= n), n)
        if size > n:
            batch = np.concatenate([batch, np.zeros((size - n, *batch.shape[1:]), dtype=batch.dtype)])
        return self.runner(batch)[:n]

    def warm_up(self, max_batch: int) -> None:
        """Run every batch size the server will use once (allocations, OpenVINO compiles), and refuse a runner whose
        output is not one score per class (a foreign ONNX file of another class list, which carries no metadata)."""
        size, classes = self.predictor.preprocess.input_size, len(self.predictor.class_names)
        for n in sorted({1, max_batch, *[s for s in self.padded_sizes if s <= max_batch]}):
            out = np.asarray(self.forward(np.zeros((n, self.predictor.info.model.in_chans, size, size),
                                                   dtype=np.float32)))
            if out.shape != (n, classes):
                raise ValueError(f"the {self.runtime} runtime's output for {n} image(s) has shape {tuple(out.shape)}, "
                                 f"not ({n}, {classes}): {self.details.get('onnx_file') or 'its model'} was exported "
                                 f"from another model than the one served ({classes} classes); export it again "
                                 "from this model (`resnetkit export MODEL --format onnx`)")

    def label(self, logits: np.ndarray, *, sources: list[str], top_k: int) -> list[Prediction]:
        """Top-k predictions from logits (N, classes), labelled as ``Predictor.predict`` labels them."""
        predictions = [Prediction(source=s) for s in sources]
        label_predictions(predictions, torch.from_numpy(np.asarray(logits, dtype=np.float32)),
                          class_names=self.predictor.class_names, top_k=top_k, min_confidence=self.min_confidence)
        return predictions

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers."""
        from .. import __version__

        predictor = self.predictor
        info = predictor.info
        return {
            "arch": info.model.arch,
            "config": info.model.to_dict(),
            "num_classes": len(predictor.class_names),
            "class_names": predictor.class_names,
            "preprocess": info.preprocess.to_dict(),
            "parameters": sum(p.numel() for p in predictor.model.parameters()),
            "sha256": self.sha256,
            "file": Path(self.model_file).name if self.model_file else None,
            "runtime": self.runtime,
            "tta": self.tta,
            "min_confidence": self.min_confidence,
            "device": str(predictor.device),
            "resnetkit_version": __version__,
        }


def _torch(predictor: Predictor) -> Runner:
    if predictor.device.type == "cpu":
        return torch_runner(predictor.model)
    model, device = predictor.model, predictor.device  # export's torch_runner is CPU-only

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    return Runner("torch", run, parameter_bytes(model))


def _exported_onnx(predictor: Predictor) -> Runner:
    """Export the model to ONNX (parity-checked against PyTorch) and open it in ONNX Runtime."""
    from ..export import export_model

    with tempfile.TemporaryDirectory(prefix="resnetkit-serve-") as tmp:
        result = export_model(predictor.model, info=predictor.info, output=Path(tmp) / "model.onnx")
        logger.info("exported the model to ONNX for serving; %s", result.parity.summary())
        # Spinning off: between batches the idle threads would take the cores preprocessing needs.
        return onnx_runner(result.path, spinning=False)


def _check_matches(path: str, predictor: Predictor) -> None:
    """Refuse an ONNX file exported from another architecture or class list than the model file."""
    from ..export.formats import read_onnx_info

    try:
        info = read_onnx_info(path)
    except ValueError:
        return  # a foreign ONNX file: the warm-up's shapes are the only check
    ours = predictor.info
    if info.model.to_dict() != ours.model.to_dict() or (info.class_names and info.class_names != ours.class_names):
        raise ValueError(f"{path} was exported from a different model ({info.model.arch}, "
                         f"{len(info.class_names)} classes) than the one served ({ours.model.arch}, "
                         f"{len(ours.class_names)} classes)")


def _file_digest(model_file: str | None) -> str | None:
    """The SHA-256 of the file the model was read from: a path, or the shipped or cached file a catalog name, URL or
    ``hf-hub:`` name stands for (already there: the predictor was loaded from it)."""
    if not model_file:
        return None
    try:
        path = resolve_weight_path(model_file)
    except (OSError, ValueError):
        return None
    return file_sha256(path) if path.is_file() else None


def build_engine(predictor: Predictor, *, runtime: str = "auto", model_file: str | None = None,
                 onnx_file: str | None = None, max_batch: int = 32, tta: str = "none",
                 min_confidence: float = 0.0) -> Engine:
    """The predictor plus the runner of ``runtime`` (resolved from ``auto``), not yet warmed up."""
    name, path = choose_runtime(runtime, device=predictor.device, model_file=model_file, onnx_file=onnx_file)
    padded: tuple[int, ...] = ()
    if name == "torch":
        runner = _torch(predictor)
    elif predictor.device.type != "cpu":
        raise ValueError(f"--runtime {name} runs on the CPU; drop --device {predictor.device} or use --runtime torch")
    elif name == "onnx":
        if path is None:
            runner = _exported_onnx(predictor)
        else:
            _check_matches(path, predictor)
            runner = onnx_runner(path, spinning=False)
    else:
        _check_matches(path or "", predictor)
        runner = openvino_runner(path, name=name)  # type: ignore[arg-type]
        padded = tuple(sorted({*[2 ** i for i in range(max_batch.bit_length()) if 2 ** i < max_batch], max_batch}))
    return Engine(predictor, runner, name, model_file=model_file, sha256=_file_digest(model_file), padded_sizes=padded,
                  details={"onnx_file": path}, tta=tta, min_confidence=min_confidence)
