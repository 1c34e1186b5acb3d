"""Keras Applications' ResNet50V2 / 101V2 / 152V2: pre-activation bottlenecks, laid out as Keras builds them.

It differs from the pre-activation paper's network (``create_model("resnet50", variant="v2")``) in ways
that change the arithmetic, so it is an architecture of its own, not a weight mapping:

- each stage downsamples in its LAST block (stride on the 3x3), and that block's shortcut is a
  1x1 max-pool with stride 2, i.e. plain subsampling; the last stage does not downsample at all, so the
  stage outputs sit at strides 8, 16, 32, 32 (torchvision layout: 4, 8, 16, 32);
- the stem convolution has a bias and no BatchNorm after it, and its max-pool pads with zeros, not -inf
  (Keras' ZeroPadding2D before MaxPooling2D), which matters because its input can be negative;
- the last 1x1 convolution of every block and the projection shortcut have biases.

Attribute names follow the rest of resnetkit (``conv1``, ``layer1.0.bn1``, ``downsample``, ``norm``, ``fc``),
so features_only, reset_classifier, fine-tuning and the model file work unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .blocks import conv1x1
from .resnet import ArchSpec, ResNet

KERAS_V2_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class KerasPreActBottleneck(nn.Module):
    """Keras' ``block2``: BN-ReLU once for both paths, 1x1, 3x3 (carries the stride), 1x1 with bias."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, *, projection: bool) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.stride = stride
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv1x1(in_ch, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=True) if projection else None

    def last_norm(self) -> nn.Module:
        return self.conv3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        if self.downsample is not None:
            shortcut = self.downsample(pre)  # Keras projects the pre-activated input
        else:
            shortcut = x[:, :, :: self.stride, :: self.stride]  # MaxPooling2D(1, strides=s): subsampling
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + shortcut


class KerasResNetV2(ResNet):
    """Keras' ResNetV2 family; the interface (``forward_features``, ``forward_stages``, ``feature_info``,
    ``reset_classifier``) is ``ResNet``'s."""

    def __init__(self, spec: ArchSpec, config: ModelConfig) -> None:
        nn.Module.__init__(self)
        if config.variant != "v2" or config.shortcut != "B" or config.width != 1.0 \
                or config.drop_path_rate:
            raise ValueError(f"{config.arch} is Keras' ResNetV2 layout: it has no variant, shortcut, width "
                             f"or drop-path options (got variant={config.variant!r}, shortcut={config.shortcut!r}, "
                             f"width={config.width}, drop_path_rate={config.drop_path_rate})")
        self.spec, self.config = spec, config
        self.conv1 = nn.Conv2d(config.in_chans, 64, kernel_size=7, stride=2, padding=3, bias=True)
        self.bn1: nn.Module = nn.Identity()
        self.relu: nn.Module = nn.Identity()
        self.maxpool: nn.Module = nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(kernel_size=3, stride=2))
        self.stage_names, self.feature_info = [], []
        in_ch, reduction = 64, 4
        for i, (blocks, width) in enumerate(zip(spec.layers, spec.stage_widths)):
            stride = 1 if i == len(spec.layers) - 1 else 2
            layers = []
            for b in range(blocks):
                last = b == blocks - 1
                layers.append(KerasPreActBottleneck(in_ch, width, stride if last else 1, projection=b == 0))
                in_ch = width * KerasPreActBottleneck.expansion
            reduction *= stride
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*layers))
            self.stage_names.append(name)
            self.feature_info.append({"module": name, "num_chs": in_ch, "reduction": reduction})
        self.norm: nn.Module = nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True))
        self._build_head(in_ch, config)
        self._init_weights(config.zero_init_residual)
