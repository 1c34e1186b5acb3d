"""Backbones: a network's intermediate feature maps, for detectors, segmenters and feature extraction.

``create_model(name, features_only=True, out_indices=(1, 2, 3, 4))`` wraps any registered network in
``FeatureExtractor``, which returns the chosen maps as a list, highest resolution first. Indices follow
timm: 0 is the stem (before its max-pool), 1.. are the residual stages. ``feature_info`` lists each
returned map's channels (``num_chs``), stride from the input (``reduction``) and module, so a detection
neck (torchvision's ``FeaturePyramidNetwork``) can be sized without running the network.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .resnet import ResNet


class FeatureExtractor(nn.Module):
    """The feature maps ``out_indices`` of a ``ResNet``; the classifier head is dropped.

    The wrapped network keeps its parameter names under ``body.``, so weights load into the body
    (``extractor.body.load_state_dict(...)``) before or after wrapping.
    """

    def __init__(self, body: ResNet, *, out_indices: Sequence[int] | int | None = None) -> None:
        super().__init__()
        available = stage_feature_info(body)
        if out_indices is None:
            out_indices = range(1, len(available))  # every stage
        elif _whole(out_indices):  # timm's int: the last n maps
            count = int(out_indices)  # type: ignore[call-overload]
            out_indices = range(len(available) - count, len(available)) if 1 <= count <= len(available) else ()
        given = tuple(out_indices) if isinstance(out_indices, Iterable) and not isinstance(out_indices, str) else ()
        bad = [i for i in given if not (_whole(i) and 0 <= i < len(available))]
        if not given or bad or len(set(given)) != len(given):
            raise ValueError(f"out_indices={out_indices!r} for {body.config.arch}: give distinct whole indices from "
                             f"0 (stem) to {len(available) - 1} (last stage), or a count n of the last maps")
        indices = tuple(int(i) for i in given)  # type: ignore[call-overload]
        body.reset_classifier(0)  # a backbone has no head; this also frees the classifier's memory
        _drop_unused(body, last=max(indices))
        self.body = body
        self.out_indices = tuple(sorted(indices))
        self.feature_info = FeatureInfo(dict(available[i], index=i) for i in self.out_indices)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """As ``ResNet.set_grad_checkpointing``: recompute each block's activations in the backward pass."""
        self.body.set_grad_checkpointing(enable)

    @property
    def channels(self) -> list[int]:
        return [int(info["num_chs"]) for info in self.feature_info]  # type: ignore[call-overload]

    @property
    def reductions(self) -> list[int]:
        return [int(info["reduction"]) for info in self.feature_info]  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        body, wanted, last = self.body, set(self.out_indices), max(self.out_indices)
        outputs: list[torch.Tensor] = []
        x = body.relu(body.bn1(body.conv1(x)))
        if 0 in wanted:
            outputs.append(x)
        x = body.maxpool(x)
        stages = body.stages()
        for i, stage in enumerate(stages[:last], start=1):  # later stages are not needed (and emptied)
            x = body._run_stage(stage, x)  # (with the body's gradient checkpointing, when it is on)
            if i == len(stages):
                x = body.norm(x)  # pre-activation nets normalise the last map (identity for the others)
            if i in wanted:
                outputs.append(x)
        return outputs


def _drop_unused(body: ResNet, *, last: int) -> None:
    """Empty what the maps up to stage ``last`` never run (later stages, a pre-activation net's final norm, a hidden
    head layer), as timm's and torchvision's extractors do: DDP refuses parameters that get no gradient, and an
    optimizer would decay and keep state for them. Their keys leave the body's state dict: load a whole network's
    weights before wrapping it, or with ``strict=False``."""
    for name in body.stage_names[last:]:  # stage i is stage_names[i - 1]
        setattr(body, name, nn.Sequential())
    if last < len(body.stage_names):
        body.norm = nn.Identity()  # it follows the last stage only
    body.pre_logits = nn.Identity()


class FeatureInfo(list):  # type: ignore[type-arg]
    """``feature_info``: a list of dicts (``module``, ``num_chs``, ``reduction``, ``index``) with timm's
    ``FeatureInfo`` accessors, so code written for timm backbones (``channels()``, ``reduction()``) runs as it is."""

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> list[dict]:
        chosen = self if idx is None else [self[i] for i in ([idx] if isinstance(idx, int) else idx)]
        return [dict(d) if keys is None else {k: d[k] for k in keys} for d in chosen]

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:  # type: ignore[override]
        if isinstance(idx, int):
            return self[idx][key]
        return [d[key] for d in (self if idx is None else [self[i] for i in idx])]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)


def _whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def stage_feature_info(model: ResNet) -> list[dict[str, object]]:
    """Channels and stride of the stem (index 0) and of every stage (1..), as timm's ``feature_info``."""
    convs = [m for m in model.conv1.modules() if isinstance(m, nn.Conv2d)]  # one, or a deep stem's three
    return [{"module": "relu",  # the map is the stem's output after its ReLU (timm's "act1")
             "num_chs": convs[-1].out_channels, "reduction": convs[0].stride[0]},
            *model.feature_info]


def features_only(model: ResNet, out_indices: Sequence[int] | int | None = None) -> FeatureExtractor:
    """Wrap ``model`` (any registered network, pretrained or not) as a backbone; default: every stage."""
    return FeatureExtractor(model, out_indices=out_indices)


class FeaturePyramidBackbone(nn.Module):
    """A ``FeatureExtractor`` topped by torchvision's ``FeaturePyramidNetwork``: the backbone torchvision's
    detectors (``FasterRCNN``, ``MaskRCNN``, ``RetinaNet``) take. Maps are named "0", "1" ... and "pool" (an
    extra max-pooled level), as torchvision's own ResNet-FPN backbones name them; ``out_channels`` is theirs.

    As torchvision's ``resnet_fpn_backbone`` does, the defaults follow whether the body holds trained weights (its
    BatchNorm statistics differ from a fresh network's zeros and ones): trained, BatchNorm is frozen
    (``FrozenBatchNorm2d``: a detector's batches of one or two images would replace the trained statistics) and
    only the 3 deepest stages train (``trainable_layers``, stages counted from the last; one more than the stages:
    the stem too); untrained, BatchNorm stays live and everything trains. torchvision's detection checkpoints
    (``backbone.body.layer1...``) load as they are.
    """

    def __init__(self, body: FeatureExtractor, *, out_channels: int = 256, trainable_layers: int | None = None,
                 frozen_bn: bool | None = None) -> None:
        super().__init__()
        # Imported here: `import resnetkit` (which registers every network) stays free of torchvision.ops.
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        network = body.body
        order = [*reversed(network.stage_names), "conv1"]  # deepest first, then the stem
        trained = _holds_trained_statistics(network)
        trainable_layers = (min(3, len(order)) if trained else len(order)) if trainable_layers is None \
            else trainable_layers
        if not (isinstance(trainable_layers, int) and 0 <= trainable_layers <= len(order)):
            raise ValueError(f"trainable_layers={trainable_layers!r}: give 0 (a frozen body) to {len(order)} (all "
                             f"of {network.config.arch}'s {len(order) - 1} stages and its stem)")
        if trained if frozen_bn is None else frozen_bn:
            _freeze_batch_norm(body)
        chosen = set(order[:trainable_layers]) | ({"bn1"} if trainable_layers == len(order) else set())
        for name, parameter in network.named_parameters():
            # a pre-activation net's final norm belongs to its last stage
            part = network.stage_names[-1] if name.startswith("norm.") else name.split(".")[0]
            if part not in chosen:
                parameter.requires_grad_(False)
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self._register_load_state_dict_pre_hook(_torchvision_keys)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.fpn({str(i): m for i, m in enumerate(self.body(x))})


def _holds_trained_statistics(network: nn.Module) -> bool:
    """Whether any BatchNorm's running statistics differ from a fresh network's (mean 0, variance 1)."""
    norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None]
    return any(bool((m.running_mean != 0).any() or (m.running_var != 1).any()) for m in norms)


def _freeze_batch_norm(module: nn.Module) -> None:
    """Every ``BatchNorm2d`` below ``module`` replaced by torchvision's ``FrozenBatchNorm2d`` with its values."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps).to(child.weight.device)
            with torch.no_grad():
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key))
            setattr(module, name, frozen)
        else:
            _freeze_batch_norm(child)


def _torchvision_keys(state_dict: dict[str, torch.Tensor], prefix: str, *_: Any) -> None:
    """torchvision's detectors keep the network's modules right under ``backbone.body.`` (its
    ``IntermediateLayerGetter``); here they are one level down, ``body.body.``: its checkpoints are renamed as they
    load."""
    inner = prefix + "body."
    for key in [k for k in state_dict if k.startswith(inner) and not k.startswith(inner + "body.")]:
        state_dict[inner + "body." + key[len(inner):]] = state_dict.pop(key)
