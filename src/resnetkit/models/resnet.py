"""One ``ResNet`` class for every family: ImageNet and CIFAR ResNets, plain twins, wide nets, ResNeXt, SE-ResNet.

What differs between families is data in an ``ArchSpec`` (stem, stage widths, block type, blocks per
stage, groups and base width, attention, default preprocessing), fixed by the registry name; a
``ModelConfig`` holds the user's options. No code here asks which family it builds. Every model has
the same interface: ``forward_features``, ``forward_head``, ``forward_stages``, ``reset_classifier``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..config import IMAGENET_PREPROCESS, ModelConfig, Preprocess
from .blocks import BLOCKS


@dataclass(frozen=True)
class Stem:
    """The layers before the first stage: one convolution (then BN-ReLU), optionally a 3x3 max-pool.

    ``deep_widths`` makes the convolution a "deep stem" (ResNet-C, He et al. 2019): convolutions of those widths,
    each followed by BN-ReLU, before the one that gives the first stage's width; the first carries the stride.
    """

    kernel_size: int = 7
    stride: int = 2
    max_pool: bool = True
    deep_widths: tuple[int, ...] = ()

    @property
    def reduction(self) -> int:
        return self.stride * (2 if self.max_pool else 1)

    def convolution(self, in_ch: int, out_ch: int) -> nn.Module:
        """``conv1``: one convolution, or for a deep stem the sequence whose indices (``conv1.0``, ``conv1.1`` ...,
        ``conv1.6`` the last convolution) are timm's."""
        widths = (in_ch, *self.deep_widths, out_ch)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Conv2d(a, b, kernel_size=self.kernel_size, stride=self.stride if i == 0 else 1,
                                    padding=self.kernel_size // 2, bias=False))
            if i < len(self.deep_widths):
                layers += [nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


IMAGENET_STEM = Stem(kernel_size=7, stride=2, max_pool=True)  # 224 -> 56 before the first stage
CIFAR_STEM = Stem(kernel_size=3, stride=1, max_pool=False)  # 32x32 images keep their resolution
# ResNet-C/D's deep stem (timm's stem_type="deep", stem_width=32): three 3x3 convolutions (32, 32, then 64 wide)
# see the 7x7's field in three steps with two more non-linearities; they cost 0.24 GMACs more at 224 (ResNet-50:
# 4.33 against 4.09), +0.2% top-1 in the paper's Table 5 (ResNet-50-C against -B).
DEEP_STEM = Stem(kernel_size=3, stride=2, max_pool=True, deep_widths=(32, 32))
HEAD_MODULES = ("pre_logits", "fc")  # the head's modules with parameters (ResNet._build_head), input to output


@dataclass(frozen=True)
class ArchSpec:
    """What a registry name fixes. A new family is a new ``ArchSpec`` (``dataclasses.replace`` of a base).

    ``family`` is a label for tables and sorting (the data the layout was designed for); nothing branches
    on it. ``groups`` and ``base_width`` set a bottleneck's inner 3x3 width as torchvision does:
    ``stage_width * base_width / 64 * groups`` (ResNeXt-50 32x4d: groups 32, base width 4).
    """

    family: str
    block: str  # "basic" or "bottleneck"
    layers: tuple[int, ...]
    default_variant: str = "v1.5"
    default_shortcut: str = "B"
    plain: bool = False
    default_width: float = 1.0
    stem: Stem = IMAGENET_STEM
    stage_widths: tuple[int, ...] = (64, 128, 256, 512)
    groups: int = 1
    base_width: int = 64
    attention: str = ""  # "" or "se" (Squeeze-and-Excitation on every block's residual branch)
    preprocess: Preprocess = IMAGENET_PREPROCESS  # for randomly initialised and newly saved models
    num_classes: int = 1000  # the default classifier size

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.stage_widths):
            raise ValueError(f"{len(self.layers)} stage depths for {len(self.stage_widths)} stage widths")

    @property
    def depth(self) -> int:
        convs_per_block = 2 if self.block == "basic" else 3
        return convs_per_block * sum(self.layers) + 2

    def shortened(self, max_blocks: int) -> ArchSpec:
        """The same family with at most ``max_blocks`` per stage: same stem, head and block shapes, fewer repeats.

        Every block after a stage's first has the same shapes, so two per stage show every distinct shape.
        """
        return replace(self, layers=tuple(min(n, max_blocks) for n in self.layers))

    def block_widths(self, stage_width: int, width: float) -> tuple[int, int | None]:
        """A stage's block width and bottleneck inner width (None: the block's own) at multiplier ``width``.

        Wide ResNets: for basic blocks the stage widths scale (WRN-n-k); for bottlenecks the inner 3x3
        width scales and the stage outputs stay, as torchvision's wide_resnet50_2.
        """
        if self.block == "basic":
            return max(1, round(stage_width * width)), None
        per_group = max(1, round(stage_width * self.base_width / 64 * width))
        inner = per_group * self.groups
        return stage_width, (None if inner == stage_width else inner)


def _make_stage(block_cls: type[nn.Module], in_ch: int, width: int, blocks: int, stride: int, *,
                shortcut: str, v15: bool, inner_width: int | None, groups: int,
                attention: str) -> tuple[nn.Sequential, int]:
    """Build one stage; returns it with its output channel count. No hidden state is mutated."""
    layers = []
    for i in range(blocks):
        layers.append(block_cls(in_ch, width, stride if i == 0 else 1, shortcut=shortcut, v15=v15,
                                inner_width=inner_width, groups=groups, attention=attention))
        in_ch = width * block_cls.expansion  # type: ignore[attr-defined]
    return nn.Sequential(*layers), in_ch


class ResNet(nn.Module):
    """A residual (or plain) network; see ``resnetkit.create_model`` for the names and options."""

    grad_checkpointing = False  # set_grad_checkpointing: a training-time choice, not part of the model file

    def __init__(self, spec: ArchSpec, config: ModelConfig) -> None:
        super().__init__()
        self.spec = spec
        self.config = config
        preact = config.variant == "v2"
        block_cls = BLOCKS[(spec.block, preact)]
        stem_ch = spec.stage_widths[0]
        stem = spec.stem
        self.conv1 = stem.convolution(config.in_chans, stem_ch)
        self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem.max_pool else nn.Identity()
        # Pre-activation blocks normalise their own input, so the v2 stem is a bare convolution.
        self.bn1: nn.Module = nn.Identity() if preact else nn.BatchNorm2d(stem_ch)
        self.relu: nn.Module = nn.Identity() if preact else nn.ReLU(inplace=True)

        self.stage_names: list[str] = []
        self.feature_info: list[dict[str, object]] = []
        in_ch, reduction = stem_ch, stem.reduction
        for i, (blocks, base) in enumerate(zip(spec.layers, spec.stage_widths)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            width, inner = spec.block_widths(base, config.width)
            stage, in_ch = _make_stage(block_cls, in_ch, width, blocks, stride, shortcut=config.shortcut,
                                       v15=config.variant != "v1", inner_width=inner, groups=spec.groups,
                                       attention=spec.attention)
            name = f"layer{i + 1}"
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.feature_info.append({"module": name, "num_chs": in_ch, "reduction": reduction})

        self.norm: nn.Module = nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True)) if preact else nn.Identity()
        self._build_head(in_ch, config)
        self.set_dropout(drop_path_rate=config.drop_path_rate)
        self._init_weights(config.zero_init_residual)

    def _build_head(self, in_ch: int, config: ModelConfig) -> None:
        """Pooling, an optional hidden ReLU layer (``head_hidden``), dropout and the classifier ``fc``; every
        layout (the Keras ones too) ends with this head."""
        self.num_features = in_ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        hidden = config.head_hidden
        self.pre_logits: nn.Module = nn.Sequential(nn.Linear(in_ch, hidden), nn.ReLU(inplace=True)) if hidden \
            else nn.Identity()
        self.head_features = hidden or in_ch
        self.drop = nn.Dropout(config.drop_rate)
        self.fc: nn.Module = nn.Linear(self.head_features, config.num_classes) if config.num_classes else nn.Identity()

    def _init_weights(self, zero_init_residual: bool) -> None:
        if next(self.parameters()).is_meta:
            # A network built on the meta device holds no values to initialise: it is checked against a file's
            # shapes or counted, then materialised and loaded. Random init there costs seconds for 1,000 layers.
            return
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
            x = self._run_stage(stage, x)
            outputs.append(x)
        outputs[-1] = self.norm(outputs[-1])
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling: (N, num_features, H/32, W/32) on ImageNet models."""
        x = self.forward_stem(x)
        for stage in self.stages():
            x = self._run_stage(stage, x)
        return self.norm(x)

    def _run_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_tracing():
            from torch.utils.checkpoint import checkpoint_sequential

            return checkpoint_sequential(stage, len(stage), x, use_reentrant=False)  # one segment per block
        return stage(x)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each residual block's activations in the backward pass instead of keeping them (timm's
        ``set_grad_checkpointing``): less activation memory for a training step (larger batches or images) for
        one more forward pass of each block (bench/bench_grad_checkpointing.py). Gradients are those of the plain step; BatchNorm
        running statistics take one more update per step (the recomputed forward), as in timm."""
        self.grad_checkpointing = enable

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pre_logits(torch.flatten(self.avgpool(x), 1)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def set_dropout(self, *, drop_rate: float | None = None, drop_path_rate: float | None = None) -> None:
        """Change the training-only regularisers (a pretrained network's too; None keeps one as it is).

        ``drop_rate``: dropout before the classifier. ``drop_path_rate``: stochastic depth (Huang et al. 2016),
        torchvision's ``StochasticDepth`` on each residual branch, whole samples at a time; the probability rises
        linearly from 0 at the first block to ``drop_path_rate`` at the last, as timm spaces it. Neither has
        weights or changes evaluation: the state dict and the outputs in ``eval()`` stay the same.
        """
        from torchvision.ops import StochasticDepth

        settings = {k: v for k, v in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)) if v is not None}
        config = replace(self.config, **settings)  # the config checks the ranges
        blocks = [b for stage in self.stages() for b in stage
                  if getattr(b, "residual", False) and hasattr(b, "drop_path")]  # not plain nor Keras blocks
        if config.drop_path_rate and not blocks:
            why = "a plain network has no residual branch to skip" if config.shortcut == "none" else \
                "its blocks (a Keras layout) have no stochastic depth"
            raise ValueError(f"drop_path_rate={config.drop_path_rate}: {config.arch}: {why}; use a resnetkit ResNet")
        for i, block in enumerate(blocks):
            p = config.drop_path_rate * i / max(1, len(blocks) - 1)
            block.drop_path = StochasticDepth(p, "row") if p else None
        self.drop.p = config.drop_rate
        self.config = config

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh ``num_classes``-way classifier (0 removes it), for fine-tuning."""
        config = ModelConfig.from_dict({**self.config.to_dict(), "num_classes": num_classes})  # checked before
        self.fc = nn.Linear(self.head_features, num_classes) if num_classes else nn.Identity()  # it is allocated
        self.config = config
