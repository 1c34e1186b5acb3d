"""Residual blocks and shortcuts.

Attribute names follow torchvision (``conv1``, ``bn1``, ``downsample.0`` ...) so torchvision and timm
state dicts load without renaming. A block receives its shortcut module from the stage builder:
``None`` means a plain block (no shortcut at all), which the paper's degradation experiment needs.

Successors are options of the same four blocks, not new classes: ``groups`` makes the bottleneck's 3x3 a
grouped convolution (ResNeXt), ``attention="se"`` re-weights the residual branch's channels before the
addition (Squeeze-and-Excitation), and ``drop_path`` (stochastic depth, set by ``ResNet.set_dropout``) skips the
residual branch of a whole sample in a training step. Every block takes the same keyword arguments, so the stage builder
needs to know nothing about which block it builds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity that subsamples space and zero-pads the new channels; no parameters."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"option A cannot shrink channels ({in_ch} -> {out_ch}); use shortcut='B'")
        self.stride = stride
        self.extra_channels = out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): global pooling, a bottleneck MLP, a sigmoid gate per channel.

    The MLP is two 1x1 convolutions with bias named ``fc1``/``fc2``, as timm names them, so timm's
    SE-ResNet weights load unchanged. Hidden width is ``channels // reduction`` (the paper's r = 16).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()


ATTENTION: dict[str, type[nn.Module]] = {"se": SqueezeExcite}


def make_attention(kind: str, channels: int) -> nn.Module | None:
    """The channel attention applied to a block's residual branch, or ``None`` for ``kind=""``."""
    if not kind:
        return None
    if kind not in ATTENTION:
        raise ValueError(f"attention={kind!r} is not one of {sorted(ATTENTION)} (or '' for none)")
    return ATTENTION[kind](channels)


def _basic_inner(width: int, inner_width: int | None, groups: int) -> int:
    if groups != 1:
        raise ValueError(f"groups={groups}: basic blocks have no grouped convolution; use a bottleneck (ResNeXt)")
    del inner_width  # a basic block's inner width is its stage width (wide basic nets scale the stage)
    return width


def make_shortcut(kind: str, in_ch: int, out_ch: int, stride: int, *, with_norm: bool) -> nn.Module | None:
    """The shortcut module for one block, or ``None`` when the identity needs no module.

    Options: A zero-padded identity, B projection where the shape changes, C projection on every block, D as B
    with the stride done by a 2x2 average pool. Returns ``None`` for a plain network too; the block is told
    separately whether to add at all.
    ``with_norm`` is False for pre-activation blocks, whose projection sees already-normalised input.
    """
    shape_changes = stride != 1 or in_ch != out_ch
    if kind == "none" or (kind in ("A", "B", "D") and not shape_changes):
        return None
    if kind == "A":
        return ZeroPadShortcut(in_ch, out_ch, stride)
    if kind == "D":
        # ResNet-D (He et al. 2019, "Bag of Tricks"): a strided 1x1 reads one pixel in four and drops the rest;
        # averaging first lets every pixel count, for no more multiply-adds (ResNet-50-D 77.16% against -C's 76.87%,
        # the paper's Table 5). The pool is an Identity at stride 1, so the projection is always ``downsample.1``,
        # as in timm's resnet*d.
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        layers: list[nn.Module] = [pool, conv1x1(in_ch, out_ch)]
    else:
        layers = [conv1x1(in_ch, out_ch, stride)]
    if with_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions, post-activation (the paper's Fig. 2 left)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, *, shortcut: str, v15: bool = True,
                 inner_width: int | None = None, groups: int = 1, attention: str = "") -> None:
        super().__init__()
        del v15  # stride placement only matters for bottlenecks
        width = _basic_inner(width, inner_width, groups)
        out_ch = width * self.expansion
        self.residual = shortcut != "none"
        self.conv1 = conv3x3(in_ch, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.se = make_attention(attention, out_ch)
        self.drop_path: nn.Module | None = None  # stochastic depth: ResNet.set_dropout sets it
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, in_ch, out_ch, stride, with_norm=True)

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand, post-activation (the paper's Fig. 5 right).

    ``v15=False`` puts the stride on the first 1x1 as the paper did; ``v15=True`` moves it to the 3x3,
    the layout torchvision ships (about +0.5% top-1 for ~12% more multiply-adds).
    """

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, *, shortcut: str, v15: bool = True,
                 inner_width: int | None = None, groups: int = 1, attention: str = "") -> None:
        super().__init__()
        out_ch = width * self.expansion
        inner = inner_width or width
        self.residual = shortcut != "none"
        stride_1x1, stride_3x3 = (1, stride) if v15 else (stride, 1)
        self.conv1 = conv1x1(in_ch, inner, stride_1x1)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = conv3x3(inner, inner, stride_3x3, groups)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = conv1x1(inner, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.se = make_attention(attention, out_ch)
        self.drop_path: nn.Module | None = None  # stochastic depth: ResNet.set_dropout sets it
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, in_ch, out_ch, stride, with_norm=True)

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv twice, with a clean identity path ("Identity Mappings in Deep Residual Networks")."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, *, shortcut: str, v15: bool = True,
                 inner_width: int | None = None, groups: int = 1, attention: str = "") -> None:
        super().__init__()
        del v15
        width = _basic_inner(width, inner_width, groups)
        out_ch = width * self.expansion
        self.residual = shortcut != "none"
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv3x3(in_ch, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, out_ch)
        self.se = make_attention(attention, out_ch)
        self.drop_path: nn.Module | None = None  # stochastic depth: ResNet.set_dropout sets it
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, in_ch, out_ch, stride, with_norm=False)

    def last_norm(self) -> nn.Module:
        return self.conv2  # pre-activation: zero the last conv, there is no BN after it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        # A projection sees the pre-activated input, as in the paper's code; the identity sees raw x.
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        return out + shortcut if self.residual else out


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (ResNet-164 / ResNet-1001 on CIFAR, ResNet v2 on ImageNet)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, *, shortcut: str, v15: bool = True,
                 inner_width: int | None = None, groups: int = 1, attention: str = "") -> None:
        super().__init__()
        out_ch = width * self.expansion
        inner = inner_width or width
        self.residual = shortcut != "none"
        stride_1x1, stride_3x3 = (1, stride) if v15 else (stride, 1)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv1x1(in_ch, inner, stride_1x1)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv2 = conv3x3(inner, inner, stride_3x3, groups)
        self.bn3 = nn.BatchNorm2d(inner)
        self.conv3 = conv1x1(inner, out_ch)
        self.se = make_attention(attention, out_ch)
        self.drop_path: nn.Module | None = None  # stochastic depth: ResNet.set_dropout sets it
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, in_ch, out_ch, stride, with_norm=False)

    def last_norm(self) -> nn.Module:
        return self.conv3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        return out + shortcut if self.residual else out


BLOCKS: dict[tuple[str, bool], type[nn.Module]] = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}
