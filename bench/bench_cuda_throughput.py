"""CUDA throughput of ResNet-20 (32x32) and ResNet-50 (224x224): fp32 against bf16 + channels_last.

Training images/s is one full SGD step (forward, backward, Nesterov momentum update, as the recipes use);
inference images/s is a forward pass under ``torch.inference_mode``. Each precision/layout runs side by
side in the same process on the same GPU with synthetic inputs already on the device (the CIFAR input
pipeline lives on the device too, so for ResNet-20 the step is the whole cost: compare with the images/s
that ``resnetkit train`` logs). Needs a CUDA GPU.

    PYTHONPATH=src python bench/bench_cuda_throughput.py --json $OUT/cuda-throughput.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from resnetkit import create_model

CASES = (("resnet20", 32, (128, 512)), ("resnet50", 224, (64, 256)))
MODES = {"fp32": (None, False), "fp32+cl": (None, True), "bf16": (torch.bfloat16, False),
         "bf16+cl": (torch.bfloat16, True)}


def measure(step, batch: int, min_seconds: float) -> float:
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    count, started = 0, time.perf_counter()
    while True:
        for _ in range(10):
            step()
        count += 10
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return count * batch / elapsed


def run_case(name: str, size: int, batch: int, mode: str, min_seconds: float) -> dict:
    dtype, channels_last = MODES[mode]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(name).cuda().to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    images = torch.randn(batch, 3, size, size, device="cuda").contiguous(memory_format=fmt)
    labels = torch.randint(0, 10, (batch,), device="cuda")
    criterion = nn.CrossEntropyLoss()

    def train_step() -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def infer_step() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            model(images)

    model.train()
    train = measure(train_step, batch, min_seconds)
    model.eval()
    infer = measure(infer_step, batch, min_seconds)
    torch.cuda.reset_peak_memory_stats()
    train_step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20
    return {"model": name, "size": size, "batch": batch, "mode": mode, "train_img_s": train, "infer_img_s": infer,
            "train_peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum timed seconds per measurement")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures the GPU path")
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | cuDNN {torch.backends.cudnn.version()} | "
          f"TF32 convs {torch.backends.cudnn.allow_tf32}")
    rows = []
    print("| model | input | batch | precision / layout | train img/s | vs fp32 | inference img/s | vs fp32 | "
          "train peak MiB |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for name, size, batches in CASES:
        for batch in batches:
            base = None
            for mode in MODES:
                row = run_case(name, size, batch, mode, args.seconds)
                base = base or row
                rows.append(row)
                print(f"| {name} | {size}x{size} | {batch} | {mode} | {row['train_img_s']:,.0f} | "
                      f"{row['train_img_s'] / base['train_img_s']:.2f}x | {row['infer_img_s']:,.0f} | "
                      f"{row['infer_img_s'] / base['infer_img_s']:.2f}x | {row['train_peak_mib']:,.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, handle,
                      indent=1)


if __name__ == "__main__":
    main()
