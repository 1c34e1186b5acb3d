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
