"""Which device to run on: one rule for training, evaluation and prediction."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

CPU_FEATURES = ("avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")  # what changes bf16/int8 speed


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
    if device.type not in ("cpu", "cuda", "mps", "xpu", "meta"):
        raise ValueError(f"device={name!r} (--device): resnetkit runs on cpu or cuda (or mps, xpu); use auto, cpu, "
                         "cuda or cuda:N")
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
