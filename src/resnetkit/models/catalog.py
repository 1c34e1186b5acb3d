"""The registry as a table (name, family, block, parameters, MACs), and the pretrained catalog as a table.

Counting a 1,000-layer network op by op takes seconds, and ``resnetkit models`` lists several. Every block
after a stage's first is the same shape, so the counts are taken (with ``torch.utils.flop_counter``, on
the ``meta`` device: no memory) on the network with at most two blocks per stage, and each stage's second
block is counted again for the blocks it stands for. The result is exact; tests compare it with the
whole network's count.
"""

from __future__ import annotations

import torch

from .registry import default_config, get_spec, list_models
from .resnet import ResNet
from .summary import count_params, format_count, summarize


def counts(name: str, *, input_size: int | None = None, **options: object) -> tuple[int, int]:
    """Exact (parameters, MACs) of ``create_model(name, **options)`` at ``input_size``, built in seconds' fraction."""
    spec, config = get_spec(name), default_config(name, **options)
    size = input_size or spec.preprocess.input_size
    with torch.device("meta"):
        model = ResNet(spec.shortened(2), config)
    summary = summarize(model, input_size=size)
    params, macs = summary.params, summary.macs
    repeated = summarize_blocks(model, size)
    for stage, blocks in zip(model.stage_names, spec.layers):
        if blocks > 2:
            block_params, block_macs = repeated[stage]
            params += (blocks - 2) * block_params
            macs += (blocks - 2) * block_macs
    return params, macs


def summarize_blocks(model: ResNet, size: int) -> dict[str, tuple[int, int]]:
    """(parameters, MACs) of the second block of every stage that has one."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, model.config.in_chans, size, size, device=model.conv1.weight.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    flops = counter.get_flop_counts()
    root = type(model).__name__
    return {stage: (count_params(getattr(model, stage)[1]), sum(flops.get(f"{root}.{stage}.1", {}).values()) // 2)
            for stage in model.stage_names if len(getattr(model, stage)) > 1}


def models_table(pattern: str = "*", *, input_size: int | None = None) -> str:
    names = list_models(pattern)
    if not names:
        return f"no model matches {pattern!r}"
    lines = [f"{'name':<18} {'family':<9} {'block':<11} {'variant':<8} {'shortcut':<9} {'params':>12} "
             f"{'MACs':>10} {'input':>6}"]
    for name in names:
        spec, config = get_spec(name), default_config(name)
        size = input_size or spec.preprocess.input_size
        params, macs = counts(name, input_size=size)
        lines.append(f"{name:<18} {spec.family:<9} {spec.block:<11} {config.variant:<8} "
                     f"{config.shortcut:<9} {params:>12,} {format_count(macs):>10} {size:>6}")
    return "\n".join(lines)


def pretrained_table(pattern: str = "*") -> str:
    """Every available catalog entry: name, architecture, accuracy from its card, preprocessing, where it lives."""
    import fnmatch

    from .pretrained import list_weights

    entries = [e for e in list_weights() if fnmatch.fnmatch(e.name, pattern) or fnmatch.fnmatch(e.arch, pattern)]
    if not entries:
        return f"no pretrained weights match {pattern!r}"
    lines = [f"{'name':<32} {'arch':<18} {'top-1 %':>8} {'evaluated on':<40} {'input':>5} {'resize':>6} "
             f"{'interp':<8} source"]
    for e in entries:
        top1 = e.card.get("top1")
        p = e.preprocess
        size, resize, interp = (p.input_size, p.resize_size, p.interpolation) if p else ("file", "file", "file")
        lines.append(f"{e.name:<32} {e.arch:<18} {(f'{top1:.2f}' if top1 is not None else '-'):>8} "
                     f"{str(e.card.get('evaluated_on', '-'))[:40]:<40} {size:>5} {resize:>6} {interp:<8} "
                     f"{'shipped' if e.shipped else 'download: ' + e.source}")
    return "\n".join(lines)
