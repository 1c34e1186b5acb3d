"""The one registry of runtimes: what each name runs, the file it needs, and how its runner is built.

``resnetkit bench`` (``bench.benchmark``) and the accuracy report of ``resnetkit export --report``
(``evaluate.compare_variants``) both write the files with ``prepare_runtimes`` and open them with
``build_runner``, so a runtime means the same thing in a speed table and in an accuracy table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ModelInfo
from ..models import ResNet, load_model, save_model
from .runtimes import Runner, onnx_runner, openvino_runner, torch_runner


@dataclass(frozen=True)
class Runtime:
    """One way to run a model: its engine, the file it runs, and its precision."""

    help: str
    engine: str  # "torch", "onnx" or "openvino"
    artifact: str  # "model" (the .safetensors file), "onnx", "onnx-int8" (ours) or "onnx-int8-default"
    precision: str | None = None  # torch: the dtype's name; OpenVINO: its inference precision hint


RUNTIMES: dict[str, Runtime] = {
    "torch": Runtime("eager PyTorch fp32", "torch", "model", "float32"),
    "torch-bf16": Runtime("eager PyTorch, weights and activations in bfloat16", "torch", "model", "bfloat16"),
    "torch-fp16": Runtime("eager PyTorch, weights and activations in float16", "torch", "model", "float16"),
    "onnx": Runtime("ONNX Runtime fp32 (all graph optimisations)", "onnx", "onnx"),
    "onnx-int8": Runtime("ONNX Runtime, our INT8: pre-processed graph, per-channel weights, u8 activations, QDQ",
                         "onnx", "onnx-int8"),
    "onnx-int8-default": Runtime("ONNX Runtime, quantize_static with default settings (the hand-done baseline)",
                                 "onnx", "onnx-int8-default"),
    "openvino": Runtime("OpenVINO fp32", "openvino", "onnx", "f32"),
    "openvino-bf16": Runtime("OpenVINO with bf16 inference precision", "openvino", "onnx", "bf16"),
    "openvino-int8": Runtime("OpenVINO running our INT8 QDQ model", "openvino", "onnx-int8"),
}


@dataclass(frozen=True)
class RuntimeSpec:
    """How to build one runtime's runner from files on disk (picklable, for the memory child process).

    A ``name`` that is not in ``RUNTIMES`` runs ``path`` as an ONNX file (a model quantized by hand, say).
    """

    name: str
    path: str  # a model .safetensors for torch runtimes, an .onnx for the others
    threads: int | None  # None: the runtime's own default (all cores)
    # No spinning by default: several sessions share one process in a benchmark, and idle spinning threads
    # of one session would steal the cores from the next.
    spinning: bool = False


def build_runner(spec: RuntimeSpec) -> Runner:
    runtime = RUNTIMES.get(spec.name)
    if runtime is not None and runtime.engine == "torch":
        model, _ = load_model(spec.path)
        return torch_runner(model, dtype=getattr(torch, str(runtime.precision)), threads=spec.threads)
    if runtime is not None and runtime.engine == "openvino":
        return openvino_runner(spec.path, name=spec.name, threads=spec.threads, precision=runtime.precision)
    return onnx_runner(spec.path, name=spec.name, threads=spec.threads, spinning=spec.spinning)


def check_runtimes(runtimes: list[str] | tuple[str, ...]) -> None:
    """``ValueError`` naming the runtimes ``RUNTIMES`` does not know."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}")


def prepare_runtimes(model: ResNet, info: ModelInfo, runtimes: list[str] | tuple[str, ...], workdir: Path, *,
                     calibration: torch.Tensor | None, threads: int | None = 2,
                     spinning: bool = False) -> list[RuntimeSpec]:
    """Write the files each runtime needs (model file, ONNX, INT8 ONNX) into ``workdir``, each once."""
    check_runtimes(runtimes)
    needs_int8 = [r for r in runtimes if RUNTIMES[r].artifact.startswith("onnx-int8")]
    if needs_int8 and calibration is None:
        raise ValueError(f"{', '.join(needs_int8)} need calibration images")
    written: dict[str, Path] = {}
    specs = []
    for name in runtimes:
        path = _write_artifact(RUNTIMES[name].artifact, model, info, Path(workdir), calibration, written)
        specs.append(RuntimeSpec(name, str(path), threads, spinning))
    return specs


def _write_artifact(artifact: str, model: ResNet, info: ModelInfo, workdir: Path, calibration: torch.Tensor | None,
                    written: dict[str, Path]) -> Path:
    if artifact in written:
        return written[artifact]
    from .formats import write_artifact
    from .quantize import _TensorReader, quantize_onnx_int8

    path = workdir / {"model": "model.safetensors", "onnx": "model.onnx", "onnx-int8": "model-int8.onnx",
                      "onnx-int8-default": "model-int8-default.onnx"}[artifact]
    if artifact == "model":
        save_model(model, path, info=info)
    elif artifact == "onnx":
        write_artifact(model, info, path, "onnx")
    else:
        fp32 = _write_artifact("onnx", model, info, workdir, calibration, written)
        if artifact == "onnx-int8":
            quantize_onnx_int8(fp32, path, calibration)
        else:
            from onnxruntime.quantization import quantize_static

            # Exactly what a user does by hand: no pre-processing, every option at its default.
            quantize_static(str(fp32), str(path), _TensorReader(calibration, "input"))
    written[artifact] = path
    return path
