"""Why ``resnetkit models`` took 13-20 s, and what it takes now: the two ways of counting, side by side.

"whole": build every registered network on the meta device and count its FLOPs op by op (what the table
did before); "shortened": count the network with at most three blocks per stage and add the repeated
block's counts (``resnetkit.models.catalog.counts``, no disk cache). Both give identical numbers (checked
here for every model); only the time differs. Then the command itself, as a user runs it, in a fresh
process: with an empty counts cache (a fresh install) and with the cache the first run wrote. The machine
is shared, so CPU seconds (user + sys of the child) are printed beside wall seconds.

    PYTHONPATH=src python bench/bench_models_table.py [--before-src /work/main/src]

``--before-src`` also times the command from another checkout's ``src`` (the code before this change).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

from resnetkit import create_model, list_models
from resnetkit.models import summarize
from resnetkit.models.catalog import counts


def whole(name: str) -> tuple[int, int]:
    with torch.device("meta"):
        model = create_model(name)
    summary = summarize(model, input_size=model.spec.preprocess.input_size)
    return summary.params, summary.macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-src", default=None, help="a checkout's src folder to time as 'before' (default: none)")
    args = parser.parse_args()
    counts("resnet20"), whole("resnet20")  # warm-up: the first meta-device build pays a one-off set-up
    totals = {"whole": 0.0, "shortened": 0.0}
    print(f"{'model':<18} {'whole s':>8} {'shortened s':>12}  identical")
    for name in list_models():
        results = {}
        for method, fn in (("whole", whole), ("shortened", counts)):
            start = time.perf_counter()
            results[method] = fn(name)
            elapsed = time.perf_counter() - start
            totals[method] += elapsed
            results[method + "_s"] = elapsed
        same = results["whole"] == results["shortened"]
        print(f"{name:<18} {results['whole_s']:>8.3f} {results['shortened_s']:>12.3f}  {same}")
        assert same, name
    print(f"{'total':<18} {totals['whole']:>8.2f} {totals['shortened']:>12.2f}")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPATH": "src", "RESNETKIT_CACHE": cache}
        runs = [("this code, empty cache", "src"), ("this code, warm cache", "src"), ("this code, warm cache", "src")]
        if args.before_src:
            runs.insert(0, (f"before ({args.before_src})", args.before_src))
        for label, src in runs:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "resnetkit.cli", "models"], check=True, capture_output=True,
                           env={**env, "PYTHONPATH": src})
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            print(f"`resnetkit models`, fresh process, {label}: {wall:.2f} s wall, {cpu:.2f} s CPU")
        start = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", "import torch"], check=True, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"`python -c 'import torch'` alone: {time.perf_counter() - start:.2f} s wall, "
              f"{after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime:.2f} s CPU")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
