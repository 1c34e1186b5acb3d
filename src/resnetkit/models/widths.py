"""The channel widths inside residual blocks: read them, and rebuild a model at recorded widths.

A block's inner channels (the outputs of every conv but its last) can be narrowed without touching the
block's interface; structured pruning does that (``resnetkit.export.prune_model``) and records the widths
in the model file under ``PRUNED_KEY``, so ``load_model`` can rebuild the narrower network before loading.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from .resnet import ResNet

PRUNED_KEY = "pruned_channels"

# (producer conv, the norm between, consumer conv) for every prunable channel dimension of a block.
INNER_CHAINS: dict[type[nn.Module], tuple[tuple[str, str, str], ...]] = {
    BasicBlock: (("conv1", "bn1", "conv2"),),
    Bottleneck: (("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3")),
    PreActBasicBlock: (("conv1", "bn2", "conv2"),),
    PreActBottleneck: (("conv1", "bn2", "conv2"), ("conv2", "bn3", "conv3")),
}


def residual_blocks(model: ResNet) -> list[tuple[str, nn.Module]]:
    return [(f"{stage}.{i}", block) for stage in model.stage_names for i, block in enumerate(getattr(model, stage))]


def _conv_like(conv: nn.Conv2d, in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, conv.kernel_size, stride=conv.stride,  # type: ignore[arg-type]
                     padding=conv.padding, dilation=conv.dilation,  # type: ignore[arg-type]
                     groups=conv.groups, bias=conv.bias is not None)


def shrink_chain(block: nn.Module, chain: tuple[str, str, str], keep: torch.Tensor | int) -> None:
    """Keep channels ``keep`` (indices, or a count of zero-filled channels to be loaded later) of one chain."""
    producer_name, norm_name, consumer_name = chain
    producer, norm, consumer = (getattr(block, n) for n in chain)
    count = keep if isinstance(keep, int) else len(keep)
    new_producer = _conv_like(producer, producer.in_channels, count)
    new_norm = nn.BatchNorm2d(count, eps=norm.eps, momentum=norm.momentum)
    new_consumer = _conv_like(consumer, count, consumer.out_channels)
    if not isinstance(keep, int):
        with torch.no_grad():
            new_producer.weight.copy_(producer.weight[keep])
            if producer.bias is not None:
                new_producer.bias.copy_(producer.bias[keep])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new_norm, name).copy_(getattr(norm, name)[keep])
            new_norm.num_batches_tracked.copy_(norm.num_batches_tracked)
            new_consumer.weight.copy_(consumer.weight[:, keep])
            if consumer.bias is not None:
                new_consumer.bias.copy_(consumer.bias)
    for new, old in ((new_producer, producer), (new_norm, norm), (new_consumer, consumer)):
        new.train(old.training)  # a fresh module is in training mode; a BN in it would use batch statistics
    setattr(block, producer_name, new_producer)
    setattr(block, norm_name, new_norm)
    setattr(block, consumer_name, new_consumer)


def inner_chains(model: ResNet) -> list[tuple[str, nn.Module, tuple[str, str, str]]]:
    found = []
    for name, block in residual_blocks(model):
        chains = INNER_CHAINS.get(type(block))
        if chains is None:
            raise TypeError(f"{name}: cannot prune a {type(block).__name__}; known blocks: "
                            f"{[c.__name__ for c in INNER_CHAINS]}")
        grouped = [c for c in ("conv1", "conv2", "conv3") if getattr(getattr(block, c, None), "groups", 1) > 1]
        if grouped:
            # Dropping single channels would break the groups' equal sizes (ResNeXt); whole groups would be needed.
            raise TypeError(f"{name}: cannot prune grouped convolutions ({name}.{grouped[0]}); inner-channel "
                            "pruning supports ungrouped blocks (ResNet, wide and SE-ResNet)")
        found += [(name, block, chain) for chain in chains]
    return found


def inner_widths(model: ResNet) -> dict[str, int]:
    """The width of every inner channel dimension, keyed ``layer1.0.conv1``: what a pruned file records."""
    return {f"{name}.{chain[0]}": getattr(block, chain[0]).out_channels for name, block, chain in inner_chains(model)}


def set_inner_widths(model: ResNet, widths: dict[str, int]) -> ResNet:
    """Narrow ``model``'s inner channels in place to ``widths`` (from ``inner_widths``); weights to be loaded."""
    for name, block, chain in inner_chains(model):
        key = f"{name}.{chain[0]}"
        if key not in widths:
            raise ValueError(f"the recorded widths have no entry for {key}; the file does not match its architecture")
        shrink_chain(block, chain, int(widths[key]))
    return model
