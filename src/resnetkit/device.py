"""Which device to run on: one rule for training, evaluation and prediction."""

from __future__ import annotations

import functools
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

CPU_FEATURES = ("avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")  # what changes bf16/int8 speed
BF16_MARGIN = 0.9  # "auto" takes bf16 on a CPU only when it trains the probe in under 90% of fp32's time
log = logging.getLogger(__name__)


def resolve_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (or None) picks the local CUDA device when there is one, else the CPU; a named CUDA device
    that is not there is a clear error rather than a crash deep inside the first ``.to()``."""
    if name in (None, "", "auto"):
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={name!r} (--device) is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but no CUDA device is available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                         f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if device.type not in ("cpu", "cuda", "mps", "xpu"):  # meta holds no numbers: nothing could be computed
        raise ValueError(f"device={name!r} (--device): resnetkit runs on cpu or cuda (or mps, xpu); use auto, cpu, "
                         "cuda or cuda:N")
    if device.type == "cpu" and device.index not in (None, 0):
        raise ValueError(f"device={name!r} (--device): torch has one CPU device and uses all its cores; use cpu")
    backend = getattr(torch.backends, "mps", None) if device.type == "mps" else getattr(torch, "xpu", None)
    if device.type in ("mps", "xpu") and not (backend is not None and backend.is_available()):
        raise ValueError(f"device={name!r} (--device): no {device.type} device on this machine; use auto or cpu")
    return device


def describe_machine(device: torch.device | str | None = None) -> str:
    """One line naming what a measurement ran on: the CPU model, its cores and the instruction sets that decide
    bf16/int8 speed (from /proc/cpuinfo on Linux), torch's and Python's versions; and the GPU first when the
    work ran on ``device`` of type CUDA (a CPU measurement on a machine with a GPU names only the CPU)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:  # not Linux: the platform's own name
        pass
    isa = [f for f in CPU_FEATURES if f in flags]
    cpu = (f"{name}, {os.cpu_count()} cores" + (f" ({', '.join(isa)})" if isa else "")
           + f", torch {torch.__version__}, Python {platform.python_version()}")
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}) on {cpu}"
    return cpu


def resolve_amp(amp: str, device: torch.device) -> str:
    """The precision a run uses: ``amp`` itself, or for ``"auto"``: bf16 on a CUDA device that has it (else fp16);
    on a CPU the faster of bf16 autocast and fp32, measured once on this machine (``cpu_bf16_is_faster``); fp32
    elsewhere. bf16 is no safe default on CPUs: measured side by side, ResNet-20's training step ran 13x slower
    in bf16 than in fp32 on an AVX2 AMD EPYC, 2x slower on an Intel Xeon with avx512_bf16, and faster on an AMD
    EPYC with avx512_bf16 (docs/training.md)."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_bf16_is_faster() else "none"
    return "none"


def _block_step_seconds(bf16: bool, *, steps: int = 2) -> float:
    """Median time of one residual block's forward and backward (conv-BN-ReLU-conv-BN, the shortcut added, ReLU;
    64 channels, 16x16, batch 16, channels_last: a CIFAR ResNet's middle stage), in bf16 autocast or fp32."""
    branch = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                           nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64))
    branch = branch.to(memory_format=torch.channels_last)
    x = torch.randn(16, 64, 16, 16).to(memory_format=torch.channels_last).requires_grad_()
    times = []
    for step in range(steps + 1):  # the first call sets up the kernels: not counted
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = torch.relu(branch(x) + x)
        out.float().square().mean().backward()
        if step:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@functools.cache
def cpu_bf16_is_faster() -> bool:
    """Whether bf16 autocast trains a residual block faster than fp32 on this CPU: measured, not guessed from its
    instruction sets (avx512_bf16 alone made it faster on one machine and slower on another). One round of
    ``_block_step_seconds`` each, two when they are close; once per process (about a second on 2 cores)."""
    # Its random layers and inputs must not move the global RNG: that draws a run's augmentation and stochastic
    # depth, and this runs only in a process's first run (a second run in the process, or a resumed one, would draw
    # other numbers than the first).
    with torch.random.fork_rng(devices=[]):
        fp32, bf16 = [_block_step_seconds(False)], [_block_step_seconds(True)]
        if 0.5 < bf16[0] / fp32[0] < 2:  # close: a second round, interleaved, so background load hits both alike
            fp32.append(_block_step_seconds(False))
            bf16.append(_block_step_seconds(True))
    faster = min(bf16) < BF16_MARGIN * min(fp32)
    log.info("precision auto: a bf16 residual block step took %.1f ms, fp32 %.1f ms on this CPU: %s", 1e3 * min(bf16),
             1e3 * min(fp32), "bf16" if faster else "fp32")
    return faster
