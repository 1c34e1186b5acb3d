"""Runners: one callable interface over eager PyTorch, ONNX Runtime, OpenVINO and saved artifacts.

A runner takes a float32 ``(N, C, H, W)`` numpy batch and returns float32 logits, so parity checks,
accuracy reports and benchmarks treat every runtime the same way. ONNX Runtime and OpenVINO are
optional dependencies, imported only when a runner for them is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

DEFAULT_THREADS: int | None = None  # None: each runtime's own default (all cores); benchmarks pass a number


@dataclass
class Runner:
    """``run(batch) -> logits`` plus what reports need: a name and the artifact's size in bytes."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    size_bytes: int
    details: dict[str, object] = field(default_factory=dict)

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().cpu().numpy()
        return self.run(np.ascontiguousarray(batch, dtype=np.float32))


def _require(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ValueError(f"this runtime needs the {module!r} package: pip install {extra}")


def parameter_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def torch_runner(model: nn.Module, *, dtype: torch.dtype = torch.float32, name: str | None = None,
                 threads: int | None = DEFAULT_THREADS) -> Runner:
    """Eager PyTorch on CPU, optionally cast to fp16/bf16 (weights and activations; logits back to fp32)."""
    model = model.eval()
    if dtype != torch.float32:
        import copy

        model = copy.deepcopy(model).to(dtype)
    if threads:
        torch.set_num_threads(threads)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch).to(dtype)).float().numpy()

    label = {torch.float32: "torch", torch.bfloat16: "torch-bf16", torch.float16: "torch-fp16"}.get(dtype, str(dtype))
    return Runner(name or label, run, parameter_bytes(model))


def onnxruntime_session_options(*, threads: int | None = DEFAULT_THREADS, spinning: bool = True) -> object:
    """Session options for a CPU that others share: a fixed thread count and full graph optimisation.

    ``spinning=False`` stops idle worker threads from busy-waiting, which matters when several sessions
    live in one process (a benchmark) or other jobs share the cores.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def onnx_runner(path: str | os.PathLike[str], *, name: str = "onnx", threads: int | None = DEFAULT_THREADS,
                spinning: bool = True) -> Runner:
    """ONNX Runtime's CPU execution provider on an ``.onnx`` file."""
    _require("onnxruntime", "onnxruntime")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), onnxruntime_session_options(threads=threads, spinning=spinning),
                                   providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: batch})[0]

    return Runner(name, run, Path(path).stat().st_size, {"session": session})


def openvino_runner(path: str | os.PathLike[str], *, name: str = "openvino", threads: int | None = DEFAULT_THREADS,
                    precision: str | None = None, batch_size: int | None = None) -> Runner:
    """OpenVINO's CPU plugin on an ``.onnx`` (fp32 or QDQ INT8) or ``.xml`` model.

    OpenVINO compiles for one input shape; a fixed ``batch_size`` lets it plan memory once, otherwise a
    batch of a new size is compiled on first use. ``precision`` is the inference precision hint
    ("f32", "bf16"); INT8 comes from the QuantizeLinear/DequantizeLinear pairs in the model itself.
    """
    _require("openvino", "openvino")
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled: dict[tuple[int, ...], object] = {}

    def request_for(shape: tuple[int, ...]) -> object:
        if shape not in compiled:
            reshaped = model.clone()
            reshaped.reshape({reshaped.inputs[0].any_name: list(shape)})
            compiled[shape] = core.compile_model(reshaped, "CPU", config).create_infer_request()
        return compiled[shape]

    def run(batch: np.ndarray) -> np.ndarray:
        request = request_for(batch.shape)
        request.infer({0: batch})  # type: ignore[attr-defined]
        return np.array(request.get_output_tensor(0).data, copy=True)  # type: ignore[attr-defined]

    size = sum(p.stat().st_size for p in {Path(path), Path(path).with_suffix(".bin")} if p.exists())
    if batch_size:
        request_for((batch_size, *[d.get_length() for d in model.inputs[0].get_partial_shape()[1:]]))
    return Runner(name, run, size)
