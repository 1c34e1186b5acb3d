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
import queue as queue_module
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Preprocess
from ..config.fields import check_count
from ..models import ResNet, create_model, default_info, load_model
from .formats import MAX_BATCH
from .registry import RuntimeSpec, build_runner, prepare_runtimes
from .runtimes import Runner

MEMORY_CHILD_TIMEOUT_S = 600  # a memory measurement that has not answered by then is given up

__all__ = ["BenchRow", "RuntimeSpec", "bench_table", "benchmark", "load_average", "peak_memory_mb",
           "realistic_random_weights", "time_interleaved"]

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


def status_mb(field: str) -> float:
    """A memory field of this process from the kernel (``VmRSS`` now, ``VmHWM`` its peak), in MB (Linux only)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # the kernel reports kB


def reset_peak_rss() -> None:
    """Make the kernel's peak resident set (``VmHWM``) this process's current one, so a peak measures from here.
    ``ru_maxrss`` would include the parent's size at fork time (it survives exec); ``VmHWM`` belongs to this address
    space."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _memory_child(spec: RuntimeSpec, shape: tuple[int, ...],
                  queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        torch.set_num_threads(spec.threads)
        batch = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        reset_peak_rss()
        before = status_mb("VmRSS")
        runner = build_runner(spec)
        for _ in range(3):
            runner(batch)
        queue.put(status_mb("VmHWM") - before)
    except Exception as e:  # report, do not hang the parent
        queue.put(f"{type(e).__name__}: {e}")


def peak_memory_mb(spec: RuntimeSpec, shape: tuple[int, ...]) -> float | None:
    """RSS growth of a fresh process that builds the runtime and runs ``shape`` three times."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_child, args=(spec, shape, queue))
    process.start()
    result = None
    # The child may die without a word (the OOM killer at a large batch, a crash in a runtime): waiting on the
    # queue alone hung the bench for 10 minutes and then lost every row it had measured.
    deadline = time.monotonic() + MEMORY_CHILD_TIMEOUT_S
    while result is None and time.monotonic() < deadline:
        try:
            result = queue.get(timeout=1)
        except queue_module.Empty:
            if not process.is_alive() and queue.empty():
                break
    if result is None:
        process.kill()
        code = process.exitcode
        how = f"ran past {MEMORY_CHILD_TIMEOUT_S} s" if code is None else f"exited with code {code}" + (
            " (killed: out of memory?)" if code == -9 else "")
        warnings.warn(f"{spec.name} at batch {shape[0]}: the memory measurement's process {how}; no memory figure "
                      "for it", stacklevel=2)
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
    for batch in batches:  # checked before any runtime is built: a batch of 10^9 would try to allocate terabytes
        check_count("batch", batch, minimum=1, maximum=MAX_BATCH, meaning="images per timed call")
    check_count("threads", threads, minimum=1, meaning="threads per runtime")
    check_count("rounds", rounds, minimum=1, meaning="timed rounds")
    check_count("per_round", per_round, minimum=1, meaning="calls per round")
    if isinstance(model, ResNet):
        label, info = model.config.arch, default_info(model)
    elif Path(model).suffix == ".safetensors" or Path(model).exists():
        label = Path(model).name
        model, info = load_model(model)
    else:
        label = str(model)
        model = realistic_random_weights(create_model(str(model)).eval())
        info = default_info(model)
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
    """A Markdown table; the speed-up is against ``baseline`` at the same model and batch, a column only when
    ``baseline`` was run.

    Throughput is batch / p50 latency.
    """
    if not any(r.runtime == baseline for r in rows):
        baseline = None  # not run: no column of dashes
    lines = ["| model | runtime | batch | p50 ms | p90 ms | best ms | images/s | peak RSS MB |"
             + (f" p50 speed-up vs {baseline} |" if baseline else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if baseline else "")]
    for r in rows:
        peak = f"{r.peak_mb:.0f}" if r.peak_mb is not None else "-"
        line = (f"| {r.model} | {r.runtime} | {r.batch} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.best_ms:.2f} | "
                f"{r.images_per_s:.1f} | {peak} |")
        if baseline:
            base = next((b for b in rows if b.runtime == baseline and b.model == r.model and b.batch == r.batch), None)
            line += f" {base.p50_ms / r.p50_ms:.2f}x |" if base else " - |"
        lines.append(line)
    return "\n".join(lines)


def load_average() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
