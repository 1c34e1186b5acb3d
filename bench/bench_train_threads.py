"""Two cores, one training or two? The training step's throughput with 2 threads against two 1-thread runs at once.

A CIFAR ResNet's convolutions are small (16-64 channels on 32x32 maps and less), so two threads may not run one
step twice as fast; two independent runs with one thread each would then finish a study sooner. Each variant runs
in its own process (``torch.set_num_threads`` and ``OMP_NUM_THREADS`` set before torch starts its pool); the
variants are interleaved in rounds so that the machine's drift hits them alike. The step is the real one's
arithmetic: forward, label-smoothed cross entropy, backward, SGD with Nesterov momentum, channels_last, fp32.

    PYTHONPATH=src python bench/bench_train_threads.py --model resnet56 --steps 6 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def worker(model_name: str, threads: int, batch: int, steps: int, warmup: int, compile_step: bool) -> None:
    import torch

    from resnetkit.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    images = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()

    run = torch.compile(step) if compile_step else step
    for _ in range(warmup):
        run()
    print("ready", flush=True)  # the workers of a variant start their timed steps together
    sys.stdin.readline()
    start = time.time()  # wall clock: comparable between the workers of a variant
    for _ in range(steps):
        run()
    print(json.dumps({"images": batch * steps, "start": start, "end": time.time()}))


def launch(args: argparse.Namespace, threads: int, copies: int) -> float:
    """``copies`` workers of ``threads`` threads each, timed together: all their images over the span from the
    first one's start to the last one's end."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    line = [sys.executable, __file__, "--worker", str(threads), "--model", args.model, "--batch", str(args.batch),
            "--steps", str(args.steps), "--warmup", str(args.warmup)] + (["--compile"] if args.compile else [])
    procs = [subprocess.Popen(line, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(copies)]
    for proc in procs:  # every worker built, warmed up (compiled) and waiting
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"worker failed before its timed steps: {' '.join(line)}")
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    out = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"worker failed (exit {proc.returncode}): {' '.join(line)}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return sum(o["images"] for o in out) / (max(o["end"] for o in out) - min(o["start"] for o in out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per worker")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per worker first")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three variants")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step (compiles once per worker)")
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.model, args.worker, args.batch, args.steps, args.warmup, args.compile)
        return 0

    cores = len(os.sched_getaffinity(0))
    variants = {"one run, 2 threads": (2, 1), "one run, 1 thread": (1, 1), "two runs at once, 1 thread each": (1, 2)}
    seen: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, (threads, copies) in variants.items():
            seen[name].append(launch(args, threads, copies))
            print(f"round {r + 1}: {name}: {seen[name][-1]:.1f} images/s", file=sys.stderr)
    base = statistics.median(seen["one run, 2 threads"])
    print(f"\n{args.model}, batch {args.batch}, {args.steps} timed steps per worker (started together), "
          f"{args.rounds} rounds, "
          f"{'compiled' if args.compile else 'eager'}, {cores} CPUs\n")
    print("| variant | total images/s (median) | each round | against one run with 2 threads |")
    print("|---|---:|---|---:|")
    for name, values in seen.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.1f} | {', '.join(f'{v:.1f}' for v in values)} | {med / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
