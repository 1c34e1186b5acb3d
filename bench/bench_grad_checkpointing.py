"""Gradient checkpointing (``--grad-checkpointing``): peak memory and time of a training step, with and without.

Each mode runs in a fresh process (spawned, in turn, ``--rounds`` times): build the network, then ``--steps``
SGD steps on random images; peak memory is the growth of the kernel's peak resident set (``VmHWM``, reset once
the network is built), so it counts activations and gradients, not the weights; time is the median step after
one untimed step. Both modes see the same inputs; the gradients are the same (tests/test_models.py).

    PYTHONPATH=src python bench/bench_grad_checkpointing.py [--model resnet50] [--batch 16] [--size 224]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time


def _child(model_name: str, batch: int, size: int, steps: int, checkpointing: bool, queue) -> None:
    import torch

    from resnetkit import create_model
    from resnetkit.export.bench import reset_peak_rss, status_mb

    torch.manual_seed(0)
    model = create_model(model_name).train()
    model.set_grad_checkpointing(checkpointing)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(batch, 3, size, size), torch.randint(0, model.num_classes, (batch,))
    reset_peak_rss()  # VmHWM := VmRSS: from here on
    before, times = status_mb("VmRSS"), []
    for _ in range(steps + 1):
        started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    queue.put((status_mb("VmHWM") - before, statistics.median(times[1:])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per mode, interleaved")
    args = parser.parse_args()
    from resnetkit.device import describe_machine

    print(f"machine: {describe_machine()}; load average {os.getloadavg()[0]:.2f}")
    print(f"{args.model}, batch {args.batch}, {args.size}x{args.size}, fp32, SGD step; {args.rounds} fresh processes "
          f"per mode, interleaved, {args.steps} timed steps each\n")
    context = multiprocessing.get_context("spawn")
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for checkpointing in (False, True):
            queue = context.Queue()
            child = context.Process(target=_child, args=(args.model, args.batch, args.size, args.steps,
                                                         checkpointing, queue))
            child.start()
            results[checkpointing].append(queue.get(timeout=1800))
            child.join()
    print("| mode | peak memory growth per process (MB) | median step (s) per process |")
    print("|---|---|---|")
    for checkpointing, rows in results.items():
        print(f"| {'--grad-checkpointing' if checkpointing else 'plain'} | {', '.join(f'{m:,.0f}' for m, _ in rows)} "
              f"| {', '.join(f'{s:.2f}' for _, s in rows)} |")
    plain, ckpt = results[False], results[True]
    memory = statistics.median(m for m, _ in ckpt) / statistics.median(m for m, _ in plain)
    step = statistics.median(s for _, s in ckpt) / statistics.median(s for _, s in plain)
    print(f"\ncheckpointing / plain, medians: memory {memory:.2f}x, step time {step:.2f}x")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
