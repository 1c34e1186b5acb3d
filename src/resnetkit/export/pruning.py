"""Structured channel pruning of residual blocks to a target MAC ratio, and pruned model files.

Only the channels *inside* a block are pruned (the outputs of every conv but the last), because the
block's output width is tied to its shortcut and to every other block of the stage. Within a layer the
filters with the smallest L1 norm go (Li et al., "Pruning Filters for Efficient ConvNets", 2017); every
inner layer keeps the same fraction, found by bisection so the MACs meet the target. The convs and
norms are rebuilt smaller, so the speed-up is real on any runtime, not a mask.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..config import PRUNE_METHODS, ModelInfo
from ..models import ResNet, count_macs, count_params
from ..models.widths import inner_chains, shrink_chain


@dataclass(frozen=True)
class PruneReport:
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    keep_fraction: float
    top1_before: float | None = None
    top1_pruned: float | None = None
    top1_fine_tuned: float | None = None

    def summary(self) -> str:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.2%}"

        return (f"MACs {self.macs_before / 1e6:.2f}M -> {self.macs_after / 1e6:.2f}M "
                f"({self.macs_after / self.macs_before:.1%}), params {self.params_before:,} -> {self.params_after:,}, "
                f"inner channels kept {self.keep_fraction:.1%}; top-1 {pct(self.top1_before)} -> "
                f"{pct(self.top1_pruned)} pruned -> {pct(self.top1_fine_tuned)} fine-tuned")


def prune_with_fraction(model: ResNet, keep_fraction: float) -> ResNet:
    """A copy of ``model`` whose inner block channels are cut to ``keep_fraction`` by filter L1 norm."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction={keep_fraction} must be in (0, 1]")
    pruned = copy.deepcopy(model).eval()
    chains = inner_chains(pruned)
    # Rank every chain on the original weights before any conv is replaced (a bottleneck's conv2 is the
    # consumer of one chain and the producer of the next).
    keeps = []
    for _, block, chain in chains:
        weight = getattr(block, chain[0]).weight
        count = max(1, round(keep_fraction * weight.shape[0]))
        order = weight.detach().abs().sum(dim=(1, 2, 3)).argsort(descending=True)
        keeps.append(order[:count].sort().values)
    for (_, block, chain), keep in zip(chains, keeps):
        shrink_chain(block, chain, keep)
    return pruned


def _conv_output_pixels(model: ResNet, size: int) -> dict[nn.Conv2d, int]:
    """Output height x width of every convolution at ``size`` x ``size`` input (one forward pass)."""
    pixels: dict[nn.Conv2d, int] = {}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks = [c.register_forward_hook(lambda m, _i, out: pixels.__setitem__(m, out.shape[-2] * out.shape[-1]))
             for c in convs]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, model.config.in_chans, size, size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return pixels


def _macs_at_fraction(model: ResNet, keep_fraction: float, before: int, pixels: dict[nn.Conv2d, int]) -> int:
    """MACs of ``prune_with_fraction(model, keep_fraction)``: only the inner convs' channel counts change."""
    channels = {}  # conv -> (in, out) after pruning
    for _, block, (producer, _, consumer) in inner_chains(model):
        p, c = getattr(block, producer), getattr(block, consumer)
        kept = max(1, round(keep_fraction * p.out_channels))
        channels[p] = (channels.get(p, (p.in_channels, p.out_channels))[0], kept)
        channels[c] = (kept, channels.get(c, (c.in_channels, c.out_channels))[1])
    delta = 0
    for conv, (cin, cout) in channels.items():
        per_pair = pixels[conv] * conv.kernel_size[0] * conv.kernel_size[1] // conv.groups
        delta += per_pair * (cin * cout - conv.in_channels * conv.out_channels)
    return before + delta


def prune_to_macs(model: ResNet, target_ratio: float, *, input_size: int | None = None) -> tuple[ResNet, float]:
    """Prune until the MACs are at most ``target_ratio`` of the original; returns the model and keep fraction."""
    size = input_size or model.spec.preprocess.input_size
    before = count_macs(model, size)
    pixels = _conv_output_pixels(model, size)
    floor = _macs_at_fraction(model, 1e-9, before, pixels)
    if target_ratio * before < floor:
        raise ValueError(f"target_ratio={target_ratio} is below what inner-channel pruning can reach "
                         f"({floor / before:.3f}: the stem, shortcuts and block outputs stay); ask for more")
    if target_ratio >= 1.0:
        return copy.deepcopy(model).eval(), 1.0
    low, high = 1e-9, 1.0  # invariant: keeping `low` meets the target, keeping `high` does not
    for _ in range(20):
        mid = (low + high) / 2
        if _macs_at_fraction(model, mid, before, pixels) <= target_ratio * before:
            low = mid
        else:
            high = mid
    return prune_with_fraction(model, low), low


def fine_tune_on_tensors(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 1,
                         lr: float = 0.01, batch_size: int = 64, weight_decay: float = 5e-4) -> nn.Module:
    """A short SGD fine-tune on in-memory tensors (for real recoveries, pass your training loop instead)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=generator).split(batch_size):
            loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def prune_model(model: ResNet, *, target_ratio: float, fine_tune: Callable[[ResNet], object] | None = None,
                eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
                input_size: int | None = None, method: str = "torch-pruning") -> tuple[ResNet, PruneReport]:
    """Prune to ``target_ratio`` of the MACs, call ``fine_tune(model)`` if given, and report.

    ``method``: "torch-pruning" ranks each channel group by its L2 norm through Torch-Pruning's dependency
    graph (``pruning_tp``); "l1" ranks the producer's filters by L1 norm (Li et al. 2017, this module).

    ``fine_tune`` is any callable that trains the model in place: your training loop, or
    ``lambda m: fine_tune_on_tensors(m, images, labels)``. With ``eval_data = (images, labels)`` the
    report gives top-1 before, right after pruning and after the fine-tune.
    """
    from .evaluate import top1_accuracy
    from .runtimes import torch_runner

    size = input_size or model.spec.preprocess.input_size

    def top1(m: ResNet) -> float | None:
        return None if eval_data is None else top1_accuracy(torch_runner(m.eval(), threads=None), *eval_data)

    top1_before = top1(model)
    if method == "torch-pruning":
        from .pruning_tp import prune_to_macs_tp

        pruned, fraction = prune_to_macs_tp(model, target_ratio, input_size=size)
    elif method == "l1":
        pruned, fraction = prune_to_macs(model, target_ratio, input_size=size)
    else:
        raise ValueError(f"method={method!r} is not one of {PRUNE_METHODS}")
    top1_pruned = top1(pruned)
    if fine_tune is not None:
        fine_tune(pruned)
        pruned.eval()
    report = PruneReport(count_macs(model, size), count_macs(pruned, size), count_params(model), count_params(pruned),
                         fraction, top1_before, top1_pruned, top1(pruned) if fine_tune is not None else None)
    return pruned, report


def save_pruned_model(model: ResNet, path: str | os.PathLike[str], info: ModelInfo) -> None:
    """A resnetkit model file that records the pruned widths (``save_model`` does), so ``load_model`` rebuilds it."""
    from ..models import save_model

    save_model(model, path, info=copy.deepcopy(info))
