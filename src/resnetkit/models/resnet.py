"""The ResNet families: ImageNet (4 stages, 7x7 stem) and CIFAR (3 stages of 16/32/64 filters).

One ``ResNet`` class builds both from an ``ArchSpec`` (block type and blocks per stage, fixed by the
registry name) and a ``ModelConfig`` (the user's options). Every model has the same interface:
``forward_features``, ``forward_head``, ``forward_stages``, ``reset_classifier``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from .blocks import BLOCKS

IMAGENET_STAGE_WIDTHS = (64, 128, 256, 512)
CIFAR_STAGE_WIDTHS = (16, 32, 64)


@dataclass(frozen=True)
class ArchSpec:
    """What a registry name fixes: the family, block type and blocks per stage."""

    family: str  # "imagenet" or "cifar"
    block: str  # "basic" or "bottleneck"
    layers: tuple[int, ...]
    default_variant: str = "v1.5"
    default_shortcut: str = "B"
    plain: bool = False
    default_width: float = 1.0

    @property
    def depth(self) -> int:
        convs_per_block = 2 if self.block == "basic" else 3
        return convs_per_block * sum(self.layers) + 2


def _make_stage(block_cls: type[nn.Module], in_ch: int, width: int, blocks: int, stride: int, *,
                shortcut: str, v15: bool, inner_width: int | None) -> tuple[nn.Sequential, int]:
    """Build one stage; returns it with its output channel count. No hidden state is mutated."""
    extra = {} if inner_width is None else {"inner_width": inner_width}
    layers = []
    for i in range(blocks):
        layers.append(block_cls(in_ch, width, stride if i == 0 else 1, shortcut=shortcut, v15=v15, **extra))
        in_ch = width * block_cls.expansion  # type: ignore[attr-defined]
    return nn.Sequential(*layers), in_ch


class ResNet(nn.Module):
    """A residual (or plain) network; see ``resnetkit.create_model`` for the names and options."""

    def __init__(self, spec: ArchSpec, config: ModelConfig) -> None:
        super().__init__()
        self.spec = spec
        self.config = config
        preact = config.variant == "v2"
        block_cls = BLOCKS[(spec.block, preact)]
        imagenet = spec.family == "imagenet"
        stage_widths = IMAGENET_STAGE_WIDTHS if imagenet else CIFAR_STAGE_WIDTHS
        stem_ch = stage_widths[0]

        if imagenet:
            self.conv1 = nn.Conv2d(config.in_chans, stem_ch, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(config.in_chans, stem_ch, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        # Pre-activation blocks normalise their own input, so the v2 stem is a bare convolution.
        self.bn1: nn.Module = nn.Identity() if preact else nn.BatchNorm2d(stem_ch)
        self.relu: nn.Module = nn.Identity() if preact else nn.ReLU(inplace=True)

        # Wide ResNets: for basic blocks the stage widths scale (WRN-n-k); for bottlenecks the inner 3x3
        # width scales and the stage outputs stay, as torchvision's wide_resnet50_2.
        self.stage_names: list[str] = []
        self.feature_info: list[dict[str, object]] = []
        in_ch, reduction = stem_ch, 4 if imagenet else 1
        for i, (blocks, base) in enumerate(zip(spec.layers, stage_widths)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            if spec.block == "basic":
                width, inner = max(1, round(base * config.width)), None
            else:
                width, inner = base, (max(1, round(base * config.width)) if config.width != 1.0 else None)
            stage, in_ch = _make_stage(block_cls, in_ch, width, blocks, stride, shortcut=config.shortcut,
                                       v15=config.variant != "v1", inner_width=inner)
            name = f"layer{i + 1}"
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.feature_info.append({"module": name, "num_chs": in_ch, "reduction": reduction})

        self.norm: nn.Module = nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True)) if preact else nn.Identity()
        self.num_features = in_ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(config.drop_rate)
        self.fc: nn.Module = nn.Linear(in_ch, config.num_classes) if config.num_classes else nn.Identity()
        self._init_weights(config.zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual and self.config.shortcut != "none":
            # Each residual branch starts as zero, so every block starts as the identity (Goyal et al.).
            for m in self.modules():
                if hasattr(m, "last_norm"):
                    nn.init.zeros_(m.last_norm().weight)

    @property
    def num_classes(self) -> int:
        return self.fc.out_features if isinstance(self.fc, nn.Linear) else 0

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, name) for name in self.stage_names]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output feature map of every stage, highest resolution first (for backbones, Grad-CAM)."""
        x = self.forward_stem(x)
        outputs = []
        for stage in self.stages():
            x = stage(x)
            outputs.append(x)
        outputs[-1] = self.norm(outputs[-1])
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling: (N, num_features, H/32, W/32) on ImageNet models."""
        x = self.forward_stem(x)
        for stage in self.stages():
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh ``num_classes``-way classifier (0 removes it), for fine-tuning."""
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.config = ModelConfig.from_dict({**self.config.to_dict(), "num_classes": num_classes})
