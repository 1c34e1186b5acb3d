"""``resnetkit <command>``: parse arguments, call one library function, print. No logic of its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_models(args: argparse.Namespace) -> int:
    from .models.catalog import models_table

    print(models_table(args.pattern, input_size=args.input_size))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from .models import create_model, default_preprocess, summarize, summary_table

    size = args.input_size or default_preprocess(args.name).input_size
    options = {k: v for k, v in (("variant", args.variant), ("shortcut", args.shortcut)) if v is not None}
    model = create_model(args.name, **options)
    print(f"{args.name} (variant {model.config.variant}, shortcut {model.config.shortcut}) at {size}x{size}")
    print(summary_table(summarize(model, input_size=size)))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import ParityError, export_from_file

    try:
        print(export_from_file(args.model, fmt=args.format, output=args.output, images=args.images, limit=args.limit,
                               int8=args.int8, report=args.report.split(",") if args.report else None))
    except ParityError as e:
        print(f"resnetkit export: PARITY CHECK FAILED: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .export.bench import bench_table, benchmark, load_average

    print(load_average())
    rows = benchmark(args.model, runtimes=args.runtime.split(","), batches=[int(b) for b in args.batch.split(",")],
                     input_size=args.input_size, threads=args.threads, rounds=args.rounds, memory=not args.no_memory)
    print(load_average())
    print("peak RSS MB: peak resident-set growth (VmHWM) of a fresh process that builds the runtime and runs the batch")
    print(bench_table(rows, baseline=args.baseline))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnetkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the registered networks with parameters and MACs")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'resnet*'")
    p.add_argument("--input-size", type=int, default=None,
                   help="image size for MACs (default: 224 for ImageNet models, 32 for CIFAR models)")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("summary", help="stage-by-stage table of one network")
    p.add_argument("name")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--variant", choices=["v1", "v1.5", "v2"], default=None)
    p.add_argument("--shortcut", choices=["A", "B", "C"], default=None)
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("export", help="write ONNX / TorchScript / ExportedProgram, checked against PyTorch")
    p.add_argument("model", help="a resnetkit .safetensors model file")
    p.add_argument("--format", choices=["onnx", "torchscript", "exported-program"], default="onnx")
    p.add_argument("--output", default=None, help="artifact path (default: beside MODEL); PATH.json is written too")
    p.add_argument("--images", default=None,
                   help="labelled folder root/<class>/<image>: parity inputs, INT8 calibration, --report set")
    p.add_argument("--limit", type=int, default=256, help="use at most this many images from --images")
    p.add_argument("--int8", action="store_true", help="INT8 static quantization (ONNX, calibrated on --images)")
    p.add_argument("--report", default=None, metavar="VARIANTS",
                   help="also print size/speed/top-1 of variants on --images, e.g. torch,torch-bf16,onnx,onnx-int8")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="latency, throughput and peak memory per runtime, as a table")
    p.add_argument("model", help="a registered name (random weights) or a resnetkit .safetensors file")
    p.add_argument("--batch", default="1,32", help="comma-separated batch sizes")
    p.add_argument("--runtime", default="torch,torch-bf16,onnx,onnx-int8",
                   help="comma-separated: torch, torch-bf16, torch-fp16, onnx, onnx-int8, onnx-int8-default, "
                        "openvino, openvino-bf16, openvino-int8")
    p.add_argument("--input-size", type=int, default=None, help="default: the model's own input size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds of 5 calls at batch 1")
    p.add_argument("--baseline", default="onnx-int8-default", help="runtime the speed-up column compares with")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"resnetkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
