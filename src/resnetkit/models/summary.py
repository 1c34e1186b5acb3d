"""Parameter and multiply-accumulate counts, per stage and in total.

MACs come from ``torch.utils.flop_counter`` (which counts 2 FLOPs per multiply-add of convolutions and
matrix products), halved: the paper's Table 1 and torchvision's "GFLOPS" are both multiply-adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .resnet import ResNet


@dataclass(frozen=True)
class LayerSummary:
    name: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class ModelSummary:
    rows: list[LayerSummary]
    input_shape: tuple[int, ...]

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: int | tuple[int, int] = 224, in_chans: int | None = None) -> int:
    """Multiply-accumulates of one forward pass of a single image."""
    return summarize(model, input_size=input_size, in_chans=in_chans).macs


def _module_macs(counter: FlopCounterMode, prefix: str) -> int:
    counts = counter.get_flop_counts()
    return sum(counts.get(prefix, {}).values()) // 2


@torch.no_grad()
def summarize(model: nn.Module, *, input_size: int | tuple[int, int] = 224, in_chans: int | None = None) -> ModelSummary:
    """A row for the stem, each stage and the head, with output shape, parameters and MACs."""
    if not isinstance(model, ResNet):
        raise TypeError(f"summarize() needs a resnetkit ResNet, got {type(model).__name__}")
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    chans = in_chans or model.config.in_chans
    device = next(model.parameters()).device
    x = torch.zeros(1, chans, h, w, device=device, dtype=next(model.parameters()).dtype)  # a .half() network too
    was_training = model.training
    model.eval()
    shapes: dict[str, tuple[int, ...]] = {}
    watched = {"stem": model.maxpool, **{n: getattr(model, n) for n in model.stage_names}, "head": model.fc}
    hooks = [module.register_forward_hook(lambda _m, _i, out, key=key: shapes.__setitem__(key, tuple(out.shape)))
             for key, module in watched.items()]
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)

    root = type(model).__name__
    stem_modules = [model.conv1, model.bn1]
    head_modules = [model.norm, model.pre_logits, model.fc]  # (pre_logits: --head-hidden's layer)
    rows = [LayerSummary("stem", shapes["stem"], sum(count_params(m) for m in stem_modules),
                         _module_macs(counter, f"{root}.conv1"))]
    for name in model.stage_names:
        rows.append(LayerSummary(name, shapes[name], count_params(getattr(model, name)),
                                 _module_macs(counter, f"{root}.{name}")))
    rows.append(LayerSummary("head", shapes["head"], sum(count_params(m) for m in head_modules),
                             _module_macs(counter, f"{root}.pre_logits") + _module_macs(counter, f"{root}.fc")))
    total_macs = counter.get_total_flops() // 2
    accounted = sum(r.macs for r in rows)
    if accounted != total_macs:  # anything the rows missed still counts in the total
        rows.append(LayerSummary("other", (), 0, total_macs - accounted))
    if sum(r.params for r in rows) != count_params(model):
        raise AssertionError("summary rows do not account for every parameter")
    return ModelSummary(rows=rows, input_shape=tuple(x.shape))


def format_count(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def summary_table(summary: ModelSummary) -> str:
    lines = [f"{'part':<8} {'output shape':<22} {'params':>14} {'MACs':>16}"]
    for r in summary.rows:
        shape = "x".join(str(s) for s in r.output_shape) if r.output_shape else "-"
        lines.append(f"{r.name:<8} {shape:<22} {r.params:>14,} {r.macs:>16,}")
    lines.append(f"{'total':<8} {'input ' + 'x'.join(map(str, summary.input_shape)):<22} "
                 f"{summary.params:>14,} {summary.macs:>16,}")
    lines.append(f"params {format_count(summary.params)}, MACs {format_count(summary.macs)} "
                 f"({format_count(2 * summary.macs)} FLOPs)")
    return "\n".join(lines)
