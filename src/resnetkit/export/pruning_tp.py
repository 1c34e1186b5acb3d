"""Structured pruning through Torch-Pruning's dependency graph (DepGraph, Fang et al., CVPR 2023).

``torch_pruning`` traces the network, groups every tensor slice that must shrink together (a conv's
filters, the BatchNorm after it, the next conv's input channels) and ranks each group by the L2 norm of
all its parameters together, not the producer's filters alone as ``pruning.prune_with_fraction`` does.

What is pruned is the same as there: the channels *inside* each residual block. The residual stream
(stem, each block's last conv, shortcuts, classifier) is left out of the graph's reach through
``ignored_layers``, so a pruned network is described by its inner widths alone and is saved in the
resnetkit model file as before (``save_pruned_model``, ``PRUNED_KEY``), loading with ``load_model``
everywhere (predict, eval, serve, export). The stream could be pruned too, but then the model file would
need every layer's width and option-A shortcuts' padding would change; not done here.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..models import ResNet, count_macs
from ..models.widths import inner_chains, inner_widths

IMPORTANCE_NORMS = {"l2": 2, "l1": 1}


def require_torch_pruning():  # noqa: ANN202 - the module
    try:
        import torch_pruning
    except ImportError:
        raise ImportError("pruning with method='torch-pruning' needs the torch-pruning package: "
                          "pip install 'resnetkit[export]' (or pip install torch-pruning)") from None
    return torch_pruning


def prune_with_ratio(model: ResNet, pruning_ratio: float, *, input_size: int, importance: str = "l2") -> ResNet:
    """A copy of ``model`` with ``pruning_ratio`` of every block's inner channels removed, ranked by group norm."""
    tp = require_torch_pruning()
    if importance not in IMPORTANCE_NORMS:
        raise ValueError(f"importance={importance!r} is not one of {sorted(IMPORTANCE_NORMS)}")
    if not 0.0 <= pruning_ratio < 1.0:
        raise ValueError(f"pruning_ratio={pruning_ratio} must be in [0, 1)")
    pruned = copy.deepcopy(model).eval()
    producers = {id(getattr(block, chain[0])) for _, block, chain in inner_chains(pruned)}
    # Every conv/linear whose output is not an inner channel dimension stays whole: the residual stream.
    ignored = [m for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in producers]
    example = torch.zeros(1, pruned.config.in_chans, input_size, input_size)
    pruner = tp.pruner.MetaPruner(pruned, example, importance=tp.importance.GroupMagnitudeImportance(
        p=IMPORTANCE_NORMS[importance]), pruning_ratio=pruning_ratio, ignored_layers=ignored, global_pruning=False)
    pruner.step()
    return pruned.eval()


def prune_to_macs_tp(model: ResNet, target_ratio: float, *, input_size: int,
                     importance: str = "l2") -> tuple[ResNet, float]:
    """Prune until the MACs are at most ``target_ratio`` of the original; returns the model and the kept
    fraction of inner channels. The ratio is found by bisection on the measured MACs (Torch-Pruning rounds
    channel counts its own way, so the analytic estimate of ``pruning.prune_to_macs`` is not reused)."""
    before = count_macs(model, input_size)
    if target_ratio >= 1.0:
        return copy.deepcopy(model).eval(), 1.0
    # Invariant: pruning `high` meets the target, pruning `low` does not. Not above 0.9: Torch-Pruning leaves a
    # group whole when the ratio would empty it (0.95 of 16 channels), so higher ratios can prune *less*.
    low, high = 0.0, 0.9
    best = prune_with_ratio(model, high, input_size=input_size, importance=importance)
    if count_macs(best, input_size) > target_ratio * before:
        raise ValueError(f"target_ratio={target_ratio} is below what inner-channel pruning can reach "
                         f"({count_macs(best, input_size) / before:.3f}: the stem, shortcuts and block outputs stay); "
                         "ask for more")
    for _ in range(12):
        mid = (low + high) / 2
        candidate = prune_with_ratio(model, mid, input_size=input_size, importance=importance)
        if count_macs(candidate, input_size) <= target_ratio * before:
            high, best = mid, candidate
        else:
            low = mid
    # The share of inner channels kept, as counted in the pruned network (1 - ratio is not it: Torch-Pruning rounds
    # each layer's count down, 7 of 16 at a ratio of 0.5).
    return best, sum(inner_widths(best).values()) / sum(inner_widths(model).values())
