"""Latency, throughput and peak memory of one model under several runtimes, measured side by side.

Runtimes are timed interleaved (round-robin, a few iterations each per round) so load from other jobs
on a shared machine falls on all of them alike; the table reports the load average before and after.
Peak memory is the growth of the peak resident set size (the kernel's ``VmHWM``, reset just before the
runtime is built) of a fresh child process until it has run the batch three times: native runtimes
allocate outside Python, so ``tracemalloc`` would miss nearly all of it.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ModelInfo, Preprocess
from ..models import ResNet, create_model, default_preprocess, load_model, save_model
from .runtimes import Runner

RUNTIMES = ("torch", "torch-bf16", "torch-fp16", "onnx", "onnx-int8", "onnx-int8-default", "openvino",
            "openvino-bf16", "openvino-int8")
RUNTIME_HELP = {
    "torch": "eager PyTorch fp32",
    "torch-bf16": "eager PyTorch, weights and activations in bfloat16",
    "torch-fp16": "eager PyTorch, weights and activations in float16",
    "onnx": "ONNX Runtime fp32 (all graph optimisations)",
    "onnx-int8": "ONNX Runtime, our INT8: pre-processed graph, per-channel weights, u8 activations, QDQ",
    "onnx-int8-default": "ONNX Runtime, quantize_static with default settings (the hand-done baseline)",
    "openvino": "OpenVINO fp32",
    "openvino-bf16": "OpenVINO with bf16 inference precision",
    "openvino-int8": "OpenVINO running our INT8 QDQ model",
}


def realistic_random_weights(model: ResNet, *, seed: int = 0) -> ResNet:
    """Give random-weight BatchNorms trained-looking statistics, in place.

    Fresh BatchNorms (mean 0, var 1, bias 0) fold into identical all-zero conv biases, which the ONNX
    exporter deduplicates into ``Identity`` nodes, and ``quantize_static`` then leaves those biases
    unquantized: a random model would benchmark a slower INT8 graph than any trained one gets.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.25)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.05)
    return model


@dataclass(frozen=True)
class RuntimeSpec:
    """How to build one runtime's runner from files on disk (picklable, for the memory child process)."""

    name: str
    path: str  # a model .safetensors for torch runtimes, an .onnx for the others
    threads: int


def build_runner(spec: RuntimeSpec) -> Runner:
    from .runtimes import onnx_runner, openvino_runner, torch_runner

    if spec.name.startswith("torch"):
        model, _ = load_model(spec.path)
        dtype = {"torch": torch.float32, "torch-bf16": torch.bfloat16, "torch-fp16": torch.float16}[spec.name]
        return torch_runner(model, dtype=dtype, threads=spec.threads)
    if spec.name.startswith("openvino"):
        precision = {"openvino": "f32", "openvino-bf16": "bf16"}.get(spec.name)
        return openvino_runner(spec.path, name=spec.name, threads=spec.threads, precision=precision)
    # Any other name is an ONNX file for ONNX Runtime. No spinning: several sessions share one process
    # here, and idle spinning threads of one session would steal the cores from the next. Every ONNX
    # Runtime session, the baseline's included, gets the same options.
    return onnx_runner(spec.path, name=spec.name, threads=spec.threads, spinning=False)


def prepare_runtimes(model: ResNet, info: ModelInfo, runtimes: list[str], workdir: Path, *,
                     calibration: torch.Tensor, threads: int = 2) -> list[RuntimeSpec]:
    """Write the files each runtime needs (model file, ONNX, INT8 ONNX) into ``workdir``."""
    from onnxruntime.quantization import quantize_static

    from .formats import write_artifact
    from .quantize import _TensorReader, quantize_onnx_int8

    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}")
    model_file = workdir / "model.safetensors"
    save_model(model, model_file, info=info)
    fp32, int8, int8_default = workdir / "model.onnx", workdir / "model-int8.onnx", workdir / "model-int8-default.onnx"
    specs = []
    for name in runtimes:
        if name.startswith("torch"):
            path = model_file
        else:
            if not fp32.exists():
                write_artifact(model, info, fp32, "onnx")
            path = fp32
            if name in ("onnx-int8", "openvino-int8"):
                if not int8.exists():
                    quantize_onnx_int8(fp32, int8, calibration)
                path = int8
            elif name == "onnx-int8-default":
                if not int8_default.exists():
                    # Exactly what a user does by hand: no pre-processing, every option at its default.
                    quantize_static(str(fp32), str(int8_default), _TensorReader(calibration, "input"))
                path = int8_default
        specs.append(RuntimeSpec(name, str(path), threads))
    return specs


@dataclass(frozen=True)
class BenchRow:
    model: str
    runtime: str
    batch: int
    p50_ms: float
    p90_ms: float
    best_ms: float  # the fastest call: what the runtime does when nothing else competes for the cores
    peak_mb: float | None

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.p50_ms / 1e3)


def time_interleaved(runners: list[Runner], batch: np.ndarray, *, rounds: int, per_round: int,
                     warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each runner, collected round-robin so background load hits all alike."""
    for runner in runners:
        for _ in range(warmup):
            runner(batch)
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    for _ in range(rounds):
        for runner in runners:
            for _ in range(per_round):
                start = time.perf_counter()
                runner(batch)
                times[runner.name].append(time.perf_counter() - start)
    return times


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # the kernel reports kB


def _memory_child(spec: RuntimeSpec, shape: tuple[int, ...],
                  queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        torch.set_num_threads(spec.threads)
        batch = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        # ru_maxrss would include the parent's size at fork time (it survives exec); the kernel's VmHWM
        # belongs to this address space and can be reset to the current RSS, so it measures from here.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_mb("VmRSS")
        runner = build_runner(spec)
        for _ in range(3):
            runner(batch)
        queue.put(_status_mb("VmHWM") - before)
    except Exception as e:  # report, do not hang the parent
        queue.put(f"{type(e).__name__}: {e}")


def peak_memory_mb(spec: RuntimeSpec, shape: tuple[int, ...]) -> float | None:
    """RSS growth of a fresh process that builds the runtime and runs ``shape`` three times."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_child, args=(spec, shape, queue))
    process.start()
    result = queue.get(timeout=600)
    process.join()
    return result if isinstance(result, float) else None


def benchmark(model: str | os.PathLike[str] | ResNet, *, runtimes: list[str], batches: list[int],
              input_size: int | None = None, threads: int = 2, rounds: int = 10, per_round: int = 5,
              memory: bool = True, calibration: torch.Tensor | None = None,
              extra_specs: list[RuntimeSpec] | None = None, workdir: Path | None = None) -> list[BenchRow]:
    """Time ``runtimes`` on ``model`` (a registered name, a model file or a model) at each batch size.

    A registered name gets random weights with trained-looking BatchNorm statistics (speed does not
    depend on the values; see ``realistic_random_weights``). INT8 runtimes calibrate on
    ``calibration`` images, or on 16 random ones. ``extra_specs`` adds runtimes built elsewhere (an
    ONNX file quantized by hand, say) to the same interleaved timing. The files the runtimes need are
    written to ``workdir`` (kept) or to a temporary folder.
    """
    if isinstance(model, ResNet):
        label, info = model.config.arch, ModelInfo(model=model.config, preprocess=default_preprocess(model.config.arch))
    elif Path(model).suffix == ".safetensors" or Path(model).exists():
        label = Path(model).name
        model, info = load_model(model)
    else:
        label = str(model)
        model = realistic_random_weights(create_model(str(model)).eval())
        info = ModelInfo(model=model.config, preprocess=default_preprocess(model.config.arch))
    size = input_size or info.preprocess.input_size
    if size != info.preprocess.input_size:
        info.preprocess = Preprocess(**{**info.preprocess.to_dict(), "input_size": size, "resize_size": size})
    if calibration is None:
        calibration = torch.randn(16, info.model.in_chans, size, size, generator=torch.Generator().manual_seed(1))
    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        specs = prepare_runtimes(model.eval(), info, runtimes, Path(workdir or tmp), calibration=calibration,
                                 threads=threads)
        specs += extra_specs or []
        runners = [build_runner(s) for s in specs]
        for batch in batches:
            data = np.random.default_rng(0).standard_normal((batch, info.model.in_chans, size, size)).astype(np.float32)
            # Fewer rounds for big batches: the number of images timed matters, not the number of calls.
            scale = max(1, batch // 8)
            times = time_interleaved(runners, data, rounds=max(3, rounds // scale),
                                     per_round=max(2, per_round // scale))
            for spec in specs:
                t = np.array(times[spec.name]) * 1e3
                peak = peak_memory_mb(spec, data.shape) if memory else None
                rows.append(BenchRow(label, spec.name, batch, float(np.median(t)), float(np.percentile(t, 90)),
                                     float(t.min()), peak))
    return rows


def bench_table(rows: list[BenchRow], *, baseline: str | None = "onnx-int8-default") -> str:
    """A Markdown table; the speed-up is against ``baseline`` at the same model and batch when it was run.

    Throughput is batch / p50 latency.
    """
    lines = [f"| model | runtime | batch | p50 ms | p90 ms | best ms | images/s | peak RSS MB | "
             f"p50 speed-up vs {baseline} |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = next((b for b in rows if b.runtime == baseline and b.model == r.model and b.batch == r.batch), None)
        speedup = f"{base.p50_ms / r.p50_ms:.2f}x" if base else "-"
        peak = f"{r.peak_mb:.0f}" if r.peak_mb is not None else "-"
        lines.append(f"| {r.model} | {r.runtime} | {r.batch} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.best_ms:.2f} | "
                     f"{r.images_per_s:.1f} | {peak} | {speedup} |")
    return "\n".join(lines)


def load_average() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
