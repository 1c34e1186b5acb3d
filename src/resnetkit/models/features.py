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
        self.body = body
        self.out_indices = tuple(sorted(indices))
        self.feature_info = [dict(available[i], index=i) for i in self.out_indices]

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
        for i, stage in enumerate(stages, start=1):
            x = body._run_stage(stage, x)  # (with the body's gradient checkpointing, when it is on)
            if i == len(stages):
                x = body.norm(x)  # pre-activation nets normalise the last map (identity for the others)
            if i in wanted:
                outputs.append(x)
            if i == last:
                break  # later stages are not needed: skip their computation
        return outputs


def _whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def stage_feature_info(model: ResNet) -> list[dict[str, object]]:
    """Channels and stride of the stem (index 0) and of every stage (1..), as timm's ``feature_info``."""
    convs = [m for m in model.conv1.modules() if isinstance(m, nn.Conv2d)]  # one, or a deep stem's three
    return [{"module": "conv1" if isinstance(model.bn1, nn.Identity) else "bn1",
             "num_chs": convs[-1].out_channels, "reduction": convs[0].stride[0]},
            *model.feature_info]


def features_only(model: ResNet, out_indices: Sequence[int] | int | None = None) -> FeatureExtractor:
    """Wrap ``model`` (any registered network, pretrained or not) as a backbone; default: every stage."""
    return FeatureExtractor(model, out_indices=out_indices)


class FeaturePyramidBackbone(nn.Module):
    """A ``FeatureExtractor`` topped by torchvision's ``FeaturePyramidNetwork``: the backbone torchvision's
    detectors (``FasterRCNN``, ``MaskRCNN``, ``RetinaNet``) take. Maps are named "0", "1" ... and "pool" (an
    extra max-pooled level), as torchvision's own ResNet-FPN backbones name them; ``out_channels`` is theirs.
    """

    def __init__(self, body: FeatureExtractor, *, out_channels: int = 256) -> None:
        super().__init__()
        # Imported here: `import resnetkit` (which registers every network) stays free of torchvision.ops.
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.fpn({str(i): m for i, m in enumerate(self.body(x))})
