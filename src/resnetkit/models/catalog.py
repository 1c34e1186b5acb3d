"""The registry as a table: name, family, depth, block, parameters and MACs."""

from __future__ import annotations

import torch

from .registry import create_model, default_preprocess, get_spec, list_models
from .summary import count_params, format_count, summarize


def models_table(pattern: str = "*", *, input_size: int | None = None) -> str:
    names = list_models(pattern)
    if not names:
        return f"no model matches {pattern!r}"
    lines = [f"{'name':<18} {'family':<9} {'block':<11} {'variant':<8} {'shortcut':<9} {'params':>12} "
             f"{'MACs':>10} {'input':>6}"]
    for name in names:
        spec = get_spec(name)
        with torch.device("meta"):  # shapes only: no memory, no weight initialisation, exact counts
            model = create_model(name)
        size = input_size or default_preprocess(name).input_size
        macs = summarize(model, input_size=size).macs
        lines.append(f"{name:<18} {spec.family:<9} {spec.block:<11} {model.config.variant:<8} "
                     f"{model.config.shortcut:<9} {count_params(model):>12,} {format_count(macs):>10} {size:>6}")
    return "\n".join(lines)
