"""The networks of Keras' CIFAR-10 example (``examples/cifar10_resnet.py``: ``resnet_v1``, ``resnet_v2``).

Many people learned ResNets from that example; its networks are close to the paper's CIFAR nets
(``resnet20`` ...) but not the same function, so they are architectures of their own (docs/keras-cifar10.md):

- every convolution has a bias (``Conv2D``'s default), even the ones followed by BatchNorm;
- where the shape changes the shortcut is a 1x1 convolution with bias and no BatchNorm (option B-like;
  the paper's CIFAR nets use option A, zero-padding);
- a stride-2 3x3 convolution pads like TensorFlow's ``padding="same"``: one row and column of zeros at the
  bottom and right only, so it samples other pixels than PyTorch's symmetric ``padding=1``;
- BatchNorm has Keras' defaults, epsilon 1e-3 and moving-average momentum 0.99 (PyTorch's 0.01);
- v2 is pre-activation with bottlenecks at depth 9n+2, stride on the first 1x1, stage outputs 64/128/256
  (stage 0 expands its input 4x, later stages 2x), the projection applied to the block's input *before*
  its BN-ReLU, and no BN-ReLU before the very first block's first 1x1 (the stem's conv-BN-ReLU is it).

Attribute names follow the rest of resnetkit (``conv1``, ``bn1``, ``layer2.0.downsample``, ``norm``, ``fc``);
the modules are registered in the order the example creates its layers, which is what the weight loader
(models/keras.py) maps by, since the example leaves its layers unnamed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .resnet import ArchSpec, ResNet

STEM_WIDTH = 16  # resnet_layer's num_filters default, the stem of both versions
KERAS_DEFAULT_BN_EPSILON = 1e-3  # keras.layers.BatchNormalization() defaults, which the example keeps
KERAS_BN_MOMENTUM = 0.01  # Keras' momentum=0.99 keeps 99% of the old average: PyTorch's momentum=0.01
TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a unit normal cut at +-2: Keras' VarianceScaling divides by it
V1_DEPTHS = (20, 32, 44, 56, 110)  # 6n+2: the example's table rows with an n and a result (v1)
V2_DEPTHS = (20, 56, 110, 164)  # 9n+2: its rows with an n (ResNet-1001 v2, n=111, is left out: see the doc)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``padding="same"`` along one side for ``kernel >= stride``: (before, after), the odd pixel after.

    The total is ``(ceil(size / stride) - 1) * stride + kernel - size``, written without ``max`` or branches
    so that tracing (TorchScript, ONNX export) records arithmetic instead of warning about a Python bool.
    """
    total = (-size) % stride + kernel - stride
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``keras.layers.Conv2D(padding="same")`` with its bias: symmetric padding at stride 1, TensorFlow's
    (extra zeros bottom and right) when strided. A strided 1x1 convolution needs no padding at all."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2 if stride == 1 else 0)
        if stride > 1 and 1 < kernel_size < stride:
            raise ValueError(f"SameConv2d: kernel {kernel_size} smaller than its stride {stride} is not supported")
        self.pad_like_tensorflow = stride > 1 and kernel_size > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_like_tensorflow:
            top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
            x = F.pad(x, (left, right, top, bottom))
        return self._conv_forward(x, self.weight, self.bias)


def keras_bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_DEFAULT_BN_EPSILON, momentum=KERAS_BN_MOMENTUM)


class KerasCifarBasicBlock(nn.Module):
    """``resnet_v1``'s unit: conv-BN-ReLU, conv-BN, add the shortcut, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, stage_in_ch: int, normalize_input: bool) -> None:
        super().__init__()
        del stage_in_ch, normalize_input  # v1's units are all alike: width = output width
        self.conv1 = SameConv2d(in_ch, out_ch, 3, stride)
        self.bn1 = keras_bn(out_ch)
        self.conv2 = SameConv2d(out_ch, out_ch, 3)
        self.bn2 = keras_bn(out_ch)
        self.relu = nn.ReLU(inplace=True)
        # The example projects only where the shape changes: a 1x1 convolution with bias and no BatchNorm.
        projection = stride != 1 or in_ch != out_ch
        self.downsample = SameConv2d(in_ch, out_ch, 1, stride) if projection else None

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class KerasCifarBottleneck(nn.Module):
    """``resnet_v2``'s unit: BN-ReLU-1x1 (with the stride), BN-ReLU-3x3, BN-ReLU-1x1, add; nothing after the add.

    Its inner width is its stage's input width (the example's ``num_filters_in``): 16, 64, 128. The
    projection sees the unit's raw input, not the normalised one. ``normalize_input=False`` (the very first
    unit, whose input is the stem's conv-BN-ReLU output) drops the first BN-ReLU.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, stage_in_ch: int, normalize_input: bool) -> None:
        super().__init__()
        inner = stage_in_ch
        self.bn1: nn.Module = keras_bn(in_ch) if normalize_input else nn.Identity()
        self.relu1: nn.Module = nn.ReLU() if normalize_input else nn.Identity()
        self.conv1 = SameConv2d(in_ch, inner, 1, stride)
        self.bn2 = keras_bn(inner)
        self.conv2 = SameConv2d(inner, inner, 3)
        self.bn3 = keras_bn(inner)
        self.conv3 = SameConv2d(inner, out_ch, 1)
        self.relu = nn.ReLU(inplace=True)
        projection = stride != 1 or in_ch != out_ch
        self.downsample = SameConv2d(in_ch, out_ch, 1, stride) if projection else None

    def last_norm(self) -> nn.Module:
        return self.conv3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + (x if self.downsample is None else self.downsample(x))


KERAS_CIFAR_BLOCKS: dict[str, type[nn.Module]] = {"basic": KerasCifarBasicBlock, "bottleneck": KerasCifarBottleneck}


class KerasCifarResNet(ResNet):
    """``resnet_v1`` (basic units) and ``resnet_v2`` (pre-activation bottlenecks) of Keras' CIFAR-10 example.

    ``spec.stage_widths`` are the stage output widths (16/32/64 for v1, 64/128/256 for v2); the interface
    (``forward_features``, ``forward_stages``, ``feature_info``, ``reset_classifier``) is ``ResNet``'s. The
    example's ``AveragePooling2D(8)`` is global average pooling at its 32x32 input, so the head pools globally.
    """

    def __init__(self, spec: ArchSpec, config: ModelConfig) -> None:
        nn.Module.__init__(self)
        if config.variant != spec.default_variant or config.shortcut != "B" or config.width != 1.0 \
                or config.drop_path_rate:
            raise ValueError(f"{config.arch} is the network of Keras' cifar10_resnet.py: it has no variant, shortcut, "
                             f"width or drop-path options (got variant={config.variant!r}, shortcut={config.shortcut!r}, "
                             f"width={config.width}, drop_path_rate={config.drop_path_rate})")
        self.spec, self.config = spec, config
        preact = config.variant == "v2"
        block_cls = KERAS_CIFAR_BLOCKS[spec.block]
        self.conv1 = SameConv2d(config.in_chans, STEM_WIDTH, 3)  # both versions: resnet_layer(inputs), conv-BN-ReLU
        self.bn1: nn.Module = keras_bn(STEM_WIDTH)
        self.relu: nn.Module = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.Identity()
        self.stage_names, self.feature_info = [], []
        in_ch, reduction = STEM_WIDTH, 1
        for i, (blocks, out_ch) in enumerate(zip(spec.layers, spec.stage_widths)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            stage_in_ch, units = in_ch, []
            for b in range(blocks):
                units.append(block_cls(in_ch, out_ch, stride if b == 0 else 1, stage_in_ch=stage_in_ch,
                                       normalize_input=(i, b) != (0, 0)))
                in_ch = out_ch
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*units))
            self.stage_names.append(name)
            self.feature_info.append({"module": name, "num_chs": in_ch, "reduction": reduction})
        self.norm: nn.Module = nn.Sequential(keras_bn(in_ch), nn.ReLU(inplace=True)) if preact else nn.Identity()
        self._build_head(in_ch, config)
        self._init_weights(config.zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """As the example: ``he_normal`` kernels and zero biases. Keras draws he_normal from a normal cut at two
        standard deviations, widened so the cut distribution keeps the variance 2 / fan_in."""
        if self.conv1.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                std = (2.0 / m.weight[0].numel()) ** 0.5 / TRUNCATED_NORMAL_STD
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if hasattr(m, "last_norm"):
                    nn.init.zeros_(m.last_norm().weight)
