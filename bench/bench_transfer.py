"""Transfer learning on CIFAR-10: does fine-tuning a pretrained ResNet-20 beat training from scratch?

Pre-train ResNet-20 on five CIFAR-10 classes (airplane, automobile, bird, cat, deer) with the
cifar10-fast recipe, shortened; then learn the other five (dog, frog, horse, ship, truck) from 100
training images per class, four ways, each for the same number of epochs:

- scratch:      a fresh ResNet-20 (`resnetkit train`, the cifar10-fast recipe's settings at batch 32)
- linear probe: the pretrained body frozen (BatchNorm too), a new head trained (`resnetkit finetune --freeze`)
- full, one lr: everything trained at one lr from the start (`resnetkit finetune --freeze-epochs 0 --lr-mult 1`)
- two-stage:    head only for one epoch, then everything with lrs from lr/100 to lr (`resnetkit finetune`)

Accuracy is measured on 500 held-out training images of each of the five new classes (the same 2,500 for
every run), the mean of three seeds (each seed draws its own 100 images per class and initialises its own
head). Wall time is per run, on this machine, sharing its CPU with whatever else runs.

    PYTHONPATH=src nice python bench/bench_transfer.py ../shared/datasets/cifar10-train-jpeg.tar \\
        --work /tmp/transfer --pretrain-epochs 4 --epochs 15
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torchvision.io import write_png

from resnetkit.config import load_train_config
from resnetkit.data import DataConfig, InMemoryImageDataset, load_data
from resnetkit.train.finetune import run_finetune
from resnetkit.train.run import MODEL_FILE, run_training

SOURCE_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
TARGET_CLASSES = ("dog", "frog", "horse", "ship", "truck")
METHODS = ("scratch", "linear probe", "full, one lr", "two-stage")


def write_images(dataset: InMemoryImageDataset, indices: list[int], root: Path) -> None:
    for i in indices:
        folder = root / dataset.class_names[int(dataset.labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        write_png(dataset.images[i], str(folder / f"{i:05d}.png"))


def class_indices(dataset: InMemoryImageDataset, name: str) -> list[int]:
    return torch.nonzero(dataset.labels == dataset.class_names.index(name)).flatten().tolist()


def prepare_folders(source: str, work: Path, *, per_class: int, seeds: int, source_per_class: int,
                    test_per_class: int) -> tuple[Path, list[Path]]:
    """The source-task folder and one target-task folder per seed (train: per_class a class, test: fixed)."""
    done = work / "folders.done"
    pretrain_dir = work / "source"
    targets = [work / f"target-seed{s}" for s in range(seeds)]
    if done.exists():
        return pretrain_dir, targets
    data = load_data(DataConfig(source=source)).train
    for name in SOURCE_CLASSES:
        write_images(data, class_indices(data, name)[:source_per_class], pretrain_dir / "train")
    pools, tests = {}, {}
    for name in TARGET_CLASSES:
        order = class_indices(data, name)
        shuffled = [order[i] for i in torch.randperm(len(order), generator=torch.Generator().manual_seed(1234))]
        tests[name], pools[name] = shuffled[:test_per_class], shuffled[test_per_class:]
    for seed, target in enumerate(targets):
        for name in TARGET_CLASSES:
            pick = torch.randperm(len(pools[name]), generator=torch.Generator().manual_seed(seed))[:per_class]
            write_images(data, [pools[name][i] for i in pick.tolist()], target / "train")
            write_images(data, tests[name], target / "test")
    done.touch()
    return pretrain_dir, targets


def pretrain(pretrain_dir: Path, work: Path, *, epochs: int, val_split: int) -> tuple[Path, float | None, float]:
    out = work / "pretrain"
    if (out / MODEL_FILE).exists():
        return out / MODEL_FILE, None, 0.0
    config = load_train_config("cifar10-fast", data=str(pretrain_dir), val_split=val_split, epochs=epochs,
                               eval_every=0, out_dir=str(out), progress=True)
    result = run_training(config)
    return out / MODEL_FILE, result.top1, result.wall_time_s


def run_method(method: str, *, start: Path, data: Path, out: Path, seed: int, epochs: int, batch_size: int,
               lr: float, scratch_lr: float) -> tuple[float, float]:
    common = {"data": str(data), "seed": seed, "epochs": epochs, "batch_size": batch_size, "out_dir": str(out),
              "progress": False, "eval_every": 0, "val_split": 0}
    started = time.perf_counter()
    if method == "scratch":
        config = load_train_config("cifar10-fast", **common, lr=scratch_lr)
        result = run_training(config)
    else:
        base = load_train_config("finetune", **common, pretrained=str(start), lr=lr)
        if method == "linear probe":
            config = base.with_flat(freeze_backbone=True, freeze_epochs=0)
        elif method == "full, one lr":
            config = base.with_flat(freeze_epochs=0, lr_mult=1.0)
        else:  # two-stage: the recipe's defaults; the head-only epoch counts towards the same budget
            config = base.with_flat(epochs=epochs - base.finetune.freeze_epochs)
        result = run_finetune(config)
    assert result.top1 is not None
    return result.top1, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="CIFAR-10 as an image tree or tar (train/<class>/<image>)")
    parser.add_argument("--work", default="/tmp/transfer", help="folders, the pretrained model and every run")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=100, help="training images per new class")
    parser.add_argument("--source-per-class", type=int, default=5000, help="pre-training images per class")
    parser.add_argument("--test-per-class", type=int, default=500, help="held-out images per new class")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15, help="epochs per method (two-stage: head epoch included)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01, help="fine-tuning lr (the finetune recipe's)")
    parser.add_argument("--scratch-lr", type=float, default=0.1, help="from-scratch peak lr")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()

    work = Path(args.work)
    pretrain_dir, targets = prepare_folders(args.source, work, per_class=args.per_class, seeds=args.seeds,
                                            source_per_class=args.source_per_class,
                                            test_per_class=args.test_per_class)
    held = len(SOURCE_CLASSES) * args.source_per_class // 25
    start, source_top1, pretrain_s = pretrain(pretrain_dir, work, epochs=args.pretrain_epochs, val_split=held)
    if source_top1 is not None:
        print(f"pre-trained ResNet-20 on {args.source_per_class} images of each of {', '.join(SOURCE_CLASSES)} for "
              f"{args.pretrain_epochs} epochs: {100 * source_top1:.2f}% on {held} held-out images of those classes, "
              f"{pretrain_s:.0f} s")
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in args.methods}
    for seed, target in enumerate(targets):
        for method in args.methods:
            out = work / "runs" / f"{method.replace(' ', '-').replace(',', '')}-seed{seed}"
            top1, seconds = run_method(method, start=start, data=target, out=out, seed=seed, epochs=args.epochs,
                                       batch_size=args.batch_size, lr=args.lr, scratch_lr=args.scratch_lr)
            results[method].append((top1, seconds))
            print(f"seed {seed} {method:<13} top-1 {100 * top1:6.2f}%  {seconds:5.0f} s", flush=True)

    scratch = statistics.mean(t for t, _ in results["scratch"]) if "scratch" in results else None
    print(f"\n{args.per_class} images per new class ({', '.join(TARGET_CLASSES)}), {args.epochs} epochs, "
          f"accuracy on {args.test_per_class * len(TARGET_CLASSES)} held-out images, {args.seeds} seeds")
    print("| method | top-1 (mean) | per seed | vs scratch | wall time per run |")
    print("|---|---:|---|---:|---:|")
    for method, rows in results.items():
        mean = statistics.mean(t for t, _ in rows)
        seeds = ", ".join(f"{100 * t:.1f}" for t, _ in rows)
        delta = f"{100 * (mean - scratch):+.1f} points" if scratch is not None and method != "scratch" else "-"
        print(f"| {method} | {100 * mean:.2f}% | {seeds} | {delta} | {statistics.mean(s for _, s in rows):.0f} s |")


if __name__ == "__main__":
    main()
