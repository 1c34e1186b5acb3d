"""Input pipeline benchmark: ResNet-20 CIFAR-10 training throughput, five variants side by side.

  (a) reference: torchvision ImageFolder on the extracted JPEGs, per-sample transforms
      (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), DataLoader(num_workers=2,
      batch 128), fp32 ResNet-20 SGD step: the loop most users would write;
  (b) resnetkit: the tar decoded once into a cached in-memory uint8 tensor, batch augmentation
      (pad 4 + random crop + flip as one gather), bf16 autocast (``--amp none``: fp32), channels_last,
      ResNet-20 SGD step;
  (c) bare: the same step on one fixed batch, no data at all (the upper bound);
  (d) resnetkit with every further augmentation on as well: rotation 15 deg, width/height shift 0.1,
      brightness and contrast 0.2, cutout 16 px, random erasing p=0.5 (``BatchPipeline``, batch-wise).
  (e) resnetkit as (b) + torchvision's TrivialAugmentWide (``--auto-augment trivialaugment``), drawn per image.

The variants run interleaved, ``--rounds`` times ``--steps`` timed steps each after ``--warmup`` untimed ones,
so load from other processes affects all alike. Decoding/extraction time is reported separately
and not counted in images/s (it is paid once; the cache makes later runs skip it).

    PYTHONPATH=src python bench/bench_input_pipeline.py [--tar PATH] [--steps 10] [--warmup 3] [--rounds 8] [--amp none]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms as T

from resnetkit.device import describe_machine
from resnetkit import create_model
from resnetkit.config import CIFAR10_MEAN, CIFAR10_STD
from resnetkit.data import BatchAugment, InMemoryLoader, load_image_dataset, normalize
from resnetkit.data.augment_extra import BatchPipeline, ExtraAugment

DEFAULT_TAR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-train-jpeg.tar"
BATCH = 128
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4  # the paper's CIFAR optimiser


def make_step(*, bf16: bool, channels_last: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    torch.manual_seed(0)
    model = create_model("resnet20")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def endless(make_iter: Callable[[], Batches]) -> Batches:
    while True:
        yield from make_iter()


def extract(tar: Path, into: Path) -> Path:
    marker = into / ".complete"
    if not marker.exists():
        into.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar) as archive:
            archive.extractall(into, filter="data")
        marker.touch()
    return into / "train"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tar", type=Path, default=DEFAULT_TAR, help="CIFAR-10 JPEG tar (train/<class>/<n>.jpg)")
    parser.add_argument("--extract-to", type=Path, default=Path(tempfile.gettempdir()) / "resnetkit-bench-cifar10-jpeg",
                        help="where the reference variant's ImageFolder tree is extracted (kept for reruns)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant at the start of each round")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds")
    parser.add_argument("--first-warmup", type=int, default=10, help="untimed steps per variant before round 1")
    parser.add_argument("--amp", choices=("bf16", "none"), default="bf16",
                        help="resnetkit's precision in (b)-(d), as its --amp: bf16 (the recipes' default) or none "
                             "(fp32, faster on CPUs whose bf16 is slow); (a) is always the fp32 loop users write")
    args = parser.parse_args()
    bf16, precision = args.amp == "bf16", "bf16" if args.amp == "bf16" else "fp32"
    if not args.tar.exists():
        print(f"skipped: {args.tar} is not present (pass --tar with a tar of train/<class>/<image>.jpg)")
        return 0

    print(f"machine: {describe_machine()}, torchvision {torchvision.__version__}; {torch.get_num_threads()} threads")
    print(f"load average at start: {load_average()}")

    started = time.perf_counter()
    folder = extract(args.tar, args.extract_to)
    print(f"reference: extracted tree ready in {time.perf_counter() - started:.1f}s ({folder})")
    reference_set = torchvision.datasets.ImageFolder(str(folder), transform=T.Compose([
        T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]))
    # Workers live for one round only (not persistent): between its rounds the reference leaves
    # no processes prefetching in the background to slow the other variants down.
    reference_loader = DataLoader(reference_set, batch_size=BATCH, shuffle=True, num_workers=2, drop_last=True)

    started = time.perf_counter()
    dataset = load_image_dataset(str(args.tar))  # decoded once, then from the cache
    print(f"resnetkit: {len(dataset)} images in memory in {time.perf_counter() - started:.1f}s")
    ours_loader = InMemoryLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True, seed=0,
                                 augment=BatchAugment(padding=4, flip=True), mean=CIFAR10_MEAN, std=CIFAR10_STD,
                                 channels_last=True)
    everything = ExtraAugment(rotation=15, width_shift=0.1, height_shift=0.1, brightness=0.2, contrast=0.2, cutout=16,
                              random_erasing=0.5)
    all_on_loader = InMemoryLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True, seed=0,
                                   augment=BatchPipeline(everything, base=BatchAugment(padding=4, flip=True),
                                                         fill=[255 * m for m in CIFAR10_MEAN]),
                                   mean=CIFAR10_MEAN, std=CIFAR10_STD, channels_last=True)
    trivial_loader = InMemoryLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True, seed=0,
                                    augment=BatchPipeline(ExtraAugment(auto_augment="trivialaugment"),
                                                          base=BatchAugment(padding=4, flip=True)),
                                    mean=CIFAR10_MEAN, std=CIFAR10_STD, channels_last=True)
    # A batch drawn across the classes: the first 128 images are all of class 0, and a batch of one class drives the
    # softmax to saturation within a few steps, and the step then ran at 12 images/s instead of 694 (most likely
    # denormal gradients, slow on x86).
    fixed = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:BATCH]
    fixed_images = normalize(dataset.images[fixed], CIFAR10_MEAN, CIFAR10_STD, channels_last=True)
    fixed_labels = dataset.labels[fixed]

    variants = {
        "(a) reference: ImageFolder + per-sample transforms + 2 workers, fp32":
            (lambda: iter(reference_loader), make_step(bf16=False, channels_last=False)),
        f"(b) resnetkit: in-memory uint8 + batch augment, {precision}, channels_last":
            (lambda: iter(ours_loader), make_step(bf16=bf16, channels_last=True)),
        f"(c) bare {precision} channels_last step on a fixed batch (upper bound)":
            (lambda: iter(lambda: (fixed_images, fixed_labels), None), make_step(bf16=bf16, channels_last=True)),
        "(d) resnetkit as (b) + rotation, shifts, brightness, contrast, cutout, random erasing":
            (lambda: iter(all_on_loader), make_step(bf16=bf16, channels_last=True)),
        "(e) resnetkit as (b) + TrivialAugmentWide, per image":
            (lambda: iter(trivial_loader), make_step(bf16=bf16, channels_last=True)),
    }
    for make_batches, step in variants.values():  # once: oneDNN kernel creation, allocator, page cache
        batches = endless(make_batches)
        for _ in range(args.first_warmup):
            step(*next(batches))
        batches.close()

    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (make_batches, step) in variants.items():
            batches = endless(make_batches)
            for _ in range(args.warmup):  # untimed: worker start-up, first prefetches, allocator warm-up
                step(*next(batches))
            started = time.perf_counter()
            for _ in range(args.steps):
                step(*next(batches))
            rates[name].append(args.steps * BATCH / (time.perf_counter() - started))
            batches.close()  # shuts the reference's workers down before the next variant runs

    # The augmentation alone, per batch of uint8 images (no step), for both pipelines, interleaved too.
    batch = dataset.images[:BATCH]
    augment_ms: dict[str, list[float]] = {"(b) pad-crop-flip": [], "(d) pad-crop-flip + all further": [],
                                          "(e) pad-crop-flip + TrivialAugmentWide": []}
    for _ in range(args.rounds):
        for name, augment in zip(augment_ms, (ours_loader.augment, all_on_loader.augment, trivial_loader.augment)):
            generator = torch.Generator().manual_seed(0)
            started = time.perf_counter()
            for _ in range(20):
                augment(batch, generator)
            augment_ms[name].append((time.perf_counter() - started) / 20 * 1e3)

    reference_name = next(iter(variants))
    median_ref, best_ref = statistics.median(rates[reference_name]), max(rates[reference_name])
    print(f"\nResNet-20 training, batch {BATCH}, {args.rounds} interleaved rounds x {args.steps} timed steps "
          f"(each after {args.warmup} untimed steps). Other processes only ever slow a round down, so the best "
          f"round is the least disturbed estimate; the median shows the spread.\n")
    print("| variant | images/s per round | median | best | vs (a), median | vs (a), best |")
    print("|---|---|---:|---:|---:|---:|")
    for name, values in rates.items():
        median, best = statistics.median(values), max(values)
        print(f"| {name} | {', '.join(f'{v:,.0f}' for v in values)} | {median:,.0f} | {best:,.0f} | "
              f"{median / median_ref:.2f}x | {best / best_ref:.2f}x |")
    print(f"\naugmentation alone, ms per batch of {BATCH} uint8 images (median of {args.rounds} rounds x 20 calls): "
          + ", ".join(f"{name}: {statistics.median(v):.2f} ms" for name, v in augment_ms.items()))
    print(f"\nload average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
