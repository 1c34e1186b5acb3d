"""ResNet-50 and ResNet-20 on the CPU: our runtimes against onnxruntime INT8 quantization done by hand.

The baseline is what a user writes from the onnxruntime docs: export torchvision's resnet50 to ONNX and
call ``quantize_static`` with a ``CalibrationDataReader`` and every option at its default (QDQ format,
signed 8-bit activations and weights, per-tensor). Ours is ``resnetkit.export.quantize_onnx_int8``
(pre-processing, per-channel, u8 activations) run by ONNX Runtime and by OpenVINO. All runtimes are
timed interleaved in one process on the same input, with the same thread count.

    PYTHONPATH=src python bench/bench_runtimes.py            # the table in docs/bench-runtimes.md
    PYTHONPATH=src python bench/bench_runtimes.py --quick    # batch 1 only, fewer rounds, no memory

Weights are random, with trained-looking BatchNorm statistics (speed does not depend on the values);
calibration uses 16 random images, which is enough for timing but not for accuracy.
"""

from __future__ import annotations

import argparse
import collections
import logging
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
import torchvision

from resnetkit.device import describe_machine
from resnetkit import create_model
from resnetkit.export.bench import (RuntimeSpec, bench_table, benchmark, load_average,
                                    realistic_random_weights)

THREADS = 2
TARGET_SPEEDUP = 1.2
BASELINE = "ort-int8-by-hand"


def hand_quantized_torchvision_resnet50(weights: dict[str, torch.Tensor], calibration: torch.Tensor,
                                        workdir: Path) -> Path:
    """The baseline, written the way the onnxruntime quantization tutorial does it."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    model = torchvision.models.resnet50()
    model.load_state_dict(weights)  # the very weights our runtimes use (identical state-dict names)
    model.eval()
    fp32, int8 = workdir / "torchvision-resnet50.onnx", workdir / "torchvision-resnet50-int8.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(fp32), dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": image[None].numpy()} for image in calibration])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    quantize_static(str(fp32), str(int8), Reader())
    return int8


def optimized_op_counts(path: Path, workdir: Path) -> str:
    """What onnxruntime turns a model into: fp32 ``Conv`` left over means quantization did not take."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # saving an NCHWc-optimised graph warns that it is machine-specific
    options.optimized_model_filepath = str(workdir / f"{path.stem}-optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    counts = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    shown = ("QLinearConv", "Conv", "QLinearAdd", "Add", "Transpose", "QuantizeLinear", "DequantizeLinear")
    return ", ".join(f"{op} {counts[op]}" for op in shown)


def machine() -> str:
    try:
        import openvino

        ov = openvino.__version__.split("-")[0]
    except ImportError:
        ov = "not installed"
    return (f"{describe_machine()}, onnxruntime {ort.__version__}, openvino {ov}; "
            f"{THREADS} threads for every runtime")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-50 batch 1 only, fewer rounds, no memory")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-runtime peak-memory child processes")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds (5 calls each) at batch 1")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice, printed for every conv
    warnings.simplefilter("ignore")  # the classic ONNX exporter's deprecation notice
    torch.set_num_threads(THREADS)
    memory = not (args.quick or args.no_memory)
    rounds = 8 if args.quick else args.rounds
    print(machine())
    print(f"start: {load_average()}  ({subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()})")
    started = time.time()

    resnet50 = realistic_random_weights(create_model("resnet50").eval())
    calibration = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = hand_quantized_torchvision_resnet50(resnet50.state_dict(), calibration, Path(tmp))
        runtimes = ["torch", "onnx", "onnx-int8", "openvino-int8"]
        if args.quick:
            runtimes = ["onnx", "onnx-int8", "openvino-int8"]
        rows += benchmark(resnet50, runtimes=runtimes, batches=[1] if args.quick else [1, 32], rounds=rounds,
                          memory=memory, calibration=calibration, threads=THREADS,
                          extra_specs=[RuntimeSpec(BASELINE, str(baseline), THREADS)], workdir=Path(tmp))
        print(f"onnxruntime's optimised graph, {BASELINE}: {optimized_op_counts(baseline, Path(tmp))}")
        print(f"onnxruntime's optimised graph, onnx-int8:        "
              f"{optimized_op_counts(Path(tmp) / 'model-int8.onnx', Path(tmp))}")
    if not args.quick:
        rows += benchmark("resnet20", runtimes=["torch", "onnx", "onnx-int8", "openvino-int8"], batches=[1, 256],
                          rounds=rounds, memory=memory, threads=THREADS)
    print(f"end: {load_average()}  ({time.time() - started:.0f} s)\n")
    print(bench_table(rows, baseline=BASELINE))

    at_batch1 = [r for r in rows if r.model == "resnet50" and r.batch == 1]
    base = next(r for r in at_batch1 if r.runtime == BASELINE)
    best = min((r for r in at_batch1 if r.runtime != BASELINE), key=lambda r: r.p50_ms)
    speedup = base.p50_ms / best.p50_ms
    verdict = "MET" if speedup >= TARGET_SPEEDUP else "NOT MET"
    print(f"\ntarget (ResNet-50, 224x224, batch 1, p50): {best.runtime} {best.p50_ms:.2f} ms vs {BASELINE} "
          f"{base.p50_ms:.2f} ms = {speedup:.2f}x, target {TARGET_SPEEDUP}x: {verdict}")
    return 0 if speedup >= TARGET_SPEEDUP else 1


if __name__ == "__main__":
    sys.exit(main())
