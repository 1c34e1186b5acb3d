"""Pruning that keeps accuracy: prune a trained CIFAR model to a MAC target, fine-tune it with the training
loop, and measure top-1 on the held-out images and latency, side by side with the unpruned model.

For each method (``torch-pruning``: group-L2 through Torch-Pruning's dependency graph; ``l1``: filter L1
norm) the script prints top-1 before pruning, right after, and after a fine-tune of ``--fine-tune-epochs``
through the training loop with ``--recipe`` (lr overridable), as ``resnetkit prune`` does; saves the pruned
model file and measures the reloaded file again (it must load as any resnetkit model). Then it times eager
PyTorch and ONNX Runtime on the unpruned and each pruned model at each ``--batches`` size, interleaved
round-robin so background load hits all alike, and prints the speed-up beside the MAC ratio.

    PYTHONPATH=src python bench/bench_pruning.py runs/cifar10-fast/model.safetensors \\
        --data ../shared/datasets/cifar10-train-jpeg.tar --val-split 5000 --fine-tune-epochs 6
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from resnetkit import load_model
from resnetkit.config import ModelInfo, PruneConfig
from resnetkit.device import describe_machine
from resnetkit.data import DataConfig, load_data, normalize
from resnetkit.export import export_model, onnx_runner, prune_model, save_pruned_model, torch_runner
from resnetkit.export.bench import time_interleaved
from resnetkit.export.evaluate import top1_accuracy
from resnetkit.models import count_macs
from resnetkit.train.prune import fine_tune, fine_tune_config, fine_tune_data


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fine_tune_with_loop(model: torch.nn.Module, info: ModelInfo, args: argparse.Namespace, out_dir: Path,
                        method: str, teacher: torch.nn.Module) -> tuple[torch.nn.Module, float]:
    """``model`` trained by the training loop as ``resnetkit prune`` does (held-out images excluded), and seconds."""
    config = PruneConfig(model=str(args.model), data=args.data, ratio=args.target, method=method,
                         fine_tune_epochs=args.fine_tune_epochs, recipe=args.recipe, lr=args.lr, amp=args.amp, distill=args.distill,
                         val_split=args.val_split, seed=args.seed, out_dir=str(out_dir), device="cpu", progress=False,
                         resume=args.resume)
    train = fine_tune_config(config, info)
    data = fine_tune_data(train, info, num_classes=model.num_classes, recipe=args.recipe)
    started = time.perf_counter()
    tuned = fine_tune(model, train, data, epochs=args.fine_tune_epochs, teacher=teacher if args.distill else None)
    return tuned, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a trained resnetkit CIFAR model file")
    parser.add_argument("--data", required=True, help="the data it was trained on (its training split)")
    parser.add_argument("--val-split", type=int, default=5000, help="the held-out images, as in training")
    parser.add_argument("--seed", type=int, default=0, help="the training run's seed (fixes the held-out images)")
    parser.add_argument("--target", type=float, default=0.5, help="MAC ratio to prune to")
    parser.add_argument("--methods", default="torch-pruning,l1")
    parser.add_argument("--recipe", default="cifar10-fast", help="fine-tune recipe")
    parser.add_argument("--lr", type=float, default=0.0, help="fine-tune peak lr (0: the recipe's)")
    parser.add_argument("--fine-tune-epochs", type=float, default=1.0)
    parser.add_argument("--distill", type=float, default=0.0,
                        help="the unpruned model teaches the fine-tune with this weight (0: labels alone)")
    parser.add_argument("--amp", default="", help="fine-tune precision (bf16, fp16, none); '': the recipe's")
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pruning"))
    parser.add_argument("--resume", action="store_true",
                        help="continue each method's fine-tune from its checkpoint in --out (a run stopped part-way); "
                             "its fine-tune seconds then count only the part run now")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    print(f"{describe_machine()}, {torch.get_num_threads()} threads; load average at start: {load_average()}")
    model, info = load_model(args.model)
    size = info.preprocess.input_size
    val = load_data(DataConfig(source=args.data, val_split=args.val_split, seed=args.seed)).val
    if val is None:
        raise SystemExit("--val-split must be > 0: the measuring images are the ones training held out")
    images = normalize(val.images, info.preprocess.mean, info.preprocess.std)
    labels = val.labels
    top1_before = top1_accuracy(model, images, labels, batch_size=256)
    macs_before = count_macs(model, size)
    print(f"unpruned: {macs_before / 1e6:.1f}M MACs, top-1 {top1_before:.2%} on {len(labels)} held-out images")

    files = {"unpruned": args.model}
    macs = {"unpruned": macs_before}
    print("\n| method | MACs (ratio) | params | top-1 before | pruned | fine-tuned | reloaded file | change | fine-tune |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for method in args.methods.split(","):
        pruned, report = prune_model(model, target_ratio=args.target, eval_data=(images, labels), input_size=size,
                                     method=method)
        seconds = 0.0
        if args.fine_tune_epochs > 0:
            pruned, seconds = fine_tune_with_loop(pruned, info, args, args.out / method, method,
                                                  teacher=copy.deepcopy(model))
        top1_tuned = top1_accuracy(pruned, images, labels, batch_size=256)
        path = args.out / f"pruned-{method}.safetensors"
        save_pruned_model(pruned, path, info)
        reloaded, _ = load_model(path)
        top1_file = top1_accuracy(reloaded, images, labels, batch_size=256)
        files[method], macs[method] = path, report.macs_after
        print(f"| {method} | {report.macs_after / 1e6:.1f}M ({report.macs_after / macs_before:.3f}) | "
              f"{report.params_after:,} | {top1_before:.2%} | {report.top1_pruned:.2%} | {top1_tuned:.2%} | "
              f"{top1_file:.2%} | {100 * (top1_file - top1_before):+.2f} pt | {args.fine_tune_epochs:g} ep, "
              f"{seconds:.0f} s |", flush=True)

    runners = []
    for name, path in files.items():
        loaded, _ = load_model(path)
        onnx_path = export_model(path, fmt="onnx", output=args.out / f"{name}.onnx").path
        runners += [torch_runner(loaded, threads=args.threads, name=f"{name} torch"),
                    onnx_runner(onnx_path, threads=args.threads, name=f"{name} onnx")]
    print(f"\nlatency, median ms per call ({args.rounds} interleaved rounds x 5 calls, {args.threads} threads); "
          "speed-up against the unpruned model on the same runtime, beside the MAC ratio")
    print("\n| model | runtime | batch | median ms | best ms | speed-up (median) | MAC ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for batch_size in (int(b) for b in args.batches.split(",")):
        batch = torch.randn(batch_size, 3, size, size).numpy()
        times = time_interleaved(runners, batch, rounds=args.rounds, per_round=5 if batch_size < 64 else 1)
        for runner in runners:
            name, runtime = runner.name.rsplit(" ", 1)
            median = statistics.median(times[runner.name])
            base = statistics.median(times[f"unpruned {runtime}"])
            print(f"| {name} | {runtime} | {batch_size} | {1e3 * median:.2f} | {1e3 * min(times[runner.name]):.2f} | "
                  f"{base / median:.2f}x | {macs[name] / macs_before:.3f} |", flush=True)
    print(f"\nload average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
