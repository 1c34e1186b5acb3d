"""The registry as a table (name, family, block, parameters, MACs), and the pretrained catalog as a table.

Counting a 1,000-layer network op by op takes seconds, and ``resnetkit models`` lists several. Every block
between a stage's first and its last is the same shape (the last differs in Keras' ResNetV2 layout, where
it carries the stride), so the counts are taken (with ``torch.utils.flop_counter``, on the ``meta``
device: no memory) on the network with at most three blocks per stage, and each stage's second block is
counted again for the blocks it stands for. The result is exact; tests compare it with the whole
network's count.

Even so, the first count in a process starts PyTorch's meta-device machinery (about a second), so the
counts are kept, keyed by everything they depend on (the shortened architecture, its options, the input
size and the block code): the package ships them for every registered network at its own input size
(``models/model-counts.json``, written by ``write_shipped_counts``; a test fails when it is out of date),
and other sizes or options are added to ``$RESNETKIT_CACHE/model-counts.json``. A changed family is simply
counted again.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig, cache_dir
from ..files import write_text_atomic
from .registry import default_config, get_builder, get_spec, list_models
from .resnet import ArchSpec, ResNet
from .summary import count_params, format_count


COUNTS_FILE = "model-counts.json"
SHIPPED_COUNTS = Path(__file__).with_name(COUNTS_FILE)
SHORT_BLOCKS = 3  # first, middle, last: every distinct block shape of a stage
Counts = tuple[int, int, tuple[tuple[int, int], ...]]


def counts(name: str, *, input_size: int | None = None, cache: dict[str, Any] | None = None,
           **options: object) -> tuple[int, int]:
    """Exact (parameters, MACs) of ``create_model(name, **options)`` at ``input_size``.

    ``cache`` (keys as ``models_table`` keeps them) is read and filled in; without it every count is computed.
    """
    spec, config = get_spec(name), default_config(name, **options)
    size = input_size or spec.preprocess.input_size
    # Depths of one family share their shortened network (resnet44 ... resnet1202 all shorten to 3-3-3).
    # The builder is part of the key: a Keras layout can share its spec with one of ours (keras_cifar_resnet20v1).
    short, anonymous, builder = spec.shortened(SHORT_BLOCKS), replace(config, arch=""), get_builder(name)
    key = _counts_key(short, anonymous, builder, size)
    if cache is not None and key in cache:
        params, macs, repeated = cache[key]
    else:
        params, macs, repeated = _shortened_counts(builder, short, anonymous, size)
        if cache is not None:
            cache[key] = [params, macs, repeated]
    for blocks, (block_params, block_macs) in zip(spec.layers, repeated):
        extra = max(0, blocks - SHORT_BLOCKS)  # the stage's second block stands for every middle block
        params, macs = params + extra * block_params, macs + extra * block_macs
    return params, macs


def _counts_key(short: ArchSpec, anonymous: ModelConfig, builder: type[ResNet], size: int) -> str:
    """Everything a count depends on; not the depth (stages are shortened), not the PyTorch version."""
    return hashlib.sha256(repr((short, anonymous, builder.__qualname__, size,
                                _code_version(builder))).encode()).hexdigest()[:32]


@functools.cache
def _code_version(builder: type[ResNet] = ResNet) -> str:
    """A digest of the code that builds networks, so an edited block is counted again, not read from the cache."""
    from . import blocks, resnet

    files = {Path(m.__file__) for m in (blocks, resnet)} | {Path(inspect.getfile(builder))}
    return hashlib.sha256(b"".join(f.read_bytes() for f in sorted(files))).hexdigest()[:16]


def _read_counts(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # none yet, unreadable or damaged: count again
        return {}


def write_shipped_counts(path: Path = SHIPPED_COUNTS) -> int:
    """Count every registered network at its own input size, from scratch, into the package's file; returns how
    many distinct counts it holds. Run after changing a family: ``python -c "from resnetkit.models.catalog import
    write_shipped_counts; write_shipped_counts()"``."""
    shipped: dict[str, Any] = {}
    for name in list_models():
        counts(name, cache=shipped)
    path.write_text(json.dumps(shipped, sort_keys=True) + "\n")
    return len(shipped)


def save_counts_cache(cache: dict[str, Any]) -> None:
    path = cache_dir() / COUNTS_FILE
    try:
        write_text_atomic(path, json.dumps(cache))  # two commands at once never leave half a file
    except OSError:  # a read-only home: the table is still right, only the next one is slower
        pass


@functools.lru_cache(maxsize=None)
def _shortened_counts(builder: type[ResNet], spec: ArchSpec, config: ModelConfig, size: int) -> Counts:
    """(parameters, MACs, (parameters, MACs) of each stage's second block) of a shortened network."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = builder(spec, config)
        x = torch.zeros(1, config.in_chans, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    flops = counter.get_flop_counts()
    root = type(model).__name__
    repeated = tuple((count_params(stage[1]), sum(flops.get(f"{root}.{name}.1", {}).values()) // 2)
                     if len(stage) > 1 else (0, 0) for name, stage in zip(model.stage_names, model.stages()))
    return count_params(model), counter.get_total_flops() // 2, repeated


def models_table(pattern: str = "*", *, input_size: int | None = None) -> str:
    names = list_models(pattern)
    if not names:
        return f"no model matches {pattern!r}"
    width = max(18, *(len(name) for name in names))
    lines = [f"{'name':<{width}} {'family':<9} {'block':<11} {'variant':<8} {'shortcut':<9} {'params':>12} "
             f"{'MACs':>10} {'input':>6}"]
    shipped = _read_counts(SHIPPED_COUNTS)
    cache = {**shipped, **_read_counts(cache_dir() / COUNTS_FILE)}  # the user's counts over the shipped ones
    known = len(cache)
    for name in names:
        spec, config = get_spec(name), default_config(name)
        size = input_size or spec.preprocess.input_size
        params, macs = counts(name, input_size=size, cache=cache)
        lines.append(f"{name:<{width}} {spec.family:<9} {spec.block:<11} {config.variant:<8} "
                     f"{config.shortcut:<9} {params:>12,} {format_count(macs):>10} {size:>6}")
    if len(cache) > known:
        save_counts_cache({k: v for k, v in cache.items() if k not in shipped})
    return "\n".join(lines)


def pretrained_table(pattern: str = "*") -> str:
    """Every available catalog entry: name, architecture, accuracy from its card, preprocessing, where it lives."""
    from .pretrained import WEIGHTS_DIR, list_weights
    from .state_dict import WeightFileError
    from .weights import read_model_info

    entries = list_weights(pattern)
    if not entries:
        return f"no pretrained weights match {pattern!r}"
    lines = [f"{'name':<32} {'arch':<18} {'top-1 %':>8} {'evaluated on':<40} {'input':>5} {'resize':>6} "
             f"{'interp':<8} source"]
    for e in entries:
        top1 = e.card.get("top1")
        # A shipped file carries its own preprocessing: read from its header (no tensors loaded).
        p, damaged = e.preprocess, False
        if p is None and e.shipped:
            try:
                p = read_model_info(WEIGHTS_DIR / e.source).preprocess
            except (WeightFileError, OSError, ValueError):  # listed as damaged; loading it says why
                damaged = True
        size, resize, interp = (p.input_size, p.resize_size, p.interpolation) if p else ("file", "file", "file")
        evaluated_on = str(e.card.get("evaluated_on", "-"))
        if len(evaluated_on) > 40:  # cut visibly: the whole text is in the card
            evaluated_on = evaluated_on[:37] + "..."
        lines.append(f"{e.name:<32} {e.arch:<18} {(f'{top1:.2f}' if top1 is not None else '-'):>8} "
                     f"{evaluated_on:<40} {size:>5} {resize:>6} {interp:<8} "
                     f"{('shipped, DAMAGED' if damaged else 'shipped') if e.shipped else 'download: ' + e.source}")
    return "\n".join(lines)
