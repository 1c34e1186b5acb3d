"""The one registry of networks: ``create_model(name, **options)`` and ``list_models(pattern)``.

Names fix the family, block and depth; options (``ModelConfig`` fields) fix the rest. The registry
is also the test matrix: every registered name is built, run forward and backward by the tests.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import fields, replace

import torch

from ..config import CIFAR_PREPROCESS, ModelConfig, ModelInfo, Preprocess
from .features import features_only as features_only_model
from .keras_cifar import V1_DEPTHS as KERAS_CIFAR_V1_DEPTHS, V2_DEPTHS as KERAS_CIFAR_V2_DEPTHS, KerasCifarResNet
from .keras_v2 import KERAS_V2_LAYERS, KerasResNetV2
from .resnet import CIFAR_STEM, DEEP_STEM, IMAGENET_STEM, ArchSpec, ResNet

_REGISTRY: dict[str, ArchSpec] = {}
_BUILDERS: dict[str, type[ResNet]] = {}  # names built by a ResNet subclass of their own (the Keras layouts)

# The two layouts every family builds on; a family entry replaces what differs (block, depths, groups ...).
IMAGENET = ArchSpec("imagenet", "basic", (2, 2, 2, 2), stem=IMAGENET_STEM, stage_widths=(64, 128, 256, 512))
CIFAR = ArchSpec("cifar", "basic", (3, 3, 3), default_variant="v1", default_shortcut="A", stem=CIFAR_STEM,
                 stage_widths=(16, 32, 64), preprocess=CIFAR_PREPROCESS, num_classes=10)

# ImageNet depths from the paper's Table 1 (plus ResNet-200 from the pre-activation paper).
IMAGENET_LAYERS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
CIFAR_BASIC_DEPTHS = (20, 32, 44, 56, 110, 1202)  # 6n+2
CIFAR_BOTTLENECK_DEPTHS = (164, 1001)  # 9n+2, pre-activation
# ResNeXt (Xie et al. 2017): name -> (depth, groups, width per group), torchvision's three.
RESNEXT = {"resnext50_32x4d": (50, 32, 4), "resnext101_32x8d": (101, 32, 8), "resnext101_64x4d": (101, 64, 4)}
# ResNet-D (He et al. 2019, "Bag of Tricks"): v1.5's stride placement, a deep stem and average-pool shortcuts (D);
# the depths timm names resnet*d, ResNet-26 (2 bottlenecks per stage) among them.
RESNET_D_LAYERS = {**{d: IMAGENET_LAYERS[d] for d in (18, 34, 50, 101, 152, 200)}, 26: ("bottleneck", (2, 2, 2, 2))}
SE_IMAGENET_DEPTHS = (50, 101)  # SE-ResNet (Hu et al. 2018), the layout timm's seresnet weights use
SE_CIFAR_DEPTHS = (20, 56)


def register(name: str, spec: ArchSpec, *, builder: type[ResNet] = ResNet) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered")
    _REGISTRY[name] = spec
    _BUILDERS[name] = builder


def _register_defaults() -> None:
    for depth, (block, layers) in IMAGENET_LAYERS.items():
        register(f"resnet{depth}", replace(IMAGENET, block=block, layers=layers))
        if block == "basic" or depth <= 152:
            register(f"plain{depth}", replace(IMAGENET, block=block, layers=layers, default_shortcut="none",
                                              plain=True))
    for depth, (block, layers) in RESNET_D_LAYERS.items():
        register(f"resnet{depth}d", replace(IMAGENET, block=block, layers=layers, stem=DEEP_STEM,
                                            default_shortcut="D"))
    for depth in (50, 101):
        register(f"wide_resnet{depth}_2", replace(IMAGENET, block="bottleneck", layers=IMAGENET_LAYERS[depth][1],
                                                  default_width=2.0))
    for name, (depth, groups, base_width) in RESNEXT.items():
        register(name, replace(IMAGENET, block="bottleneck", layers=IMAGENET_LAYERS[depth][1], groups=groups,
                               base_width=base_width))
    for depth in SE_IMAGENET_DEPTHS:
        register(f"seresnet{depth}", replace(IMAGENET, block="bottleneck", layers=IMAGENET_LAYERS[depth][1],
                                             attention="se"))
    for depth in CIFAR_BASIC_DEPTHS:
        n = (depth - 2) // 6
        register(f"resnet{depth}", replace(CIFAR, layers=(n, n, n)))
        register(f"plain{depth}", replace(CIFAR, layers=(n, n, n), default_shortcut="none", plain=True))
    for depth in CIFAR_BOTTLENECK_DEPTHS:
        n = (depth - 2) // 9
        register(f"resnet{depth}", replace(CIFAR, block="bottleneck", layers=(n, n, n), default_variant="v2",
                                           default_shortcut="B"))
    for depth in SE_CIFAR_DEPTHS:
        n = (depth - 2) // 6
        register(f"seresnet{depth}", replace(CIFAR, layers=(n, n, n), attention="se"))
    # Wide ResNet 28-10 (Zagoruyko & Komodakis): pre-activation basic blocks, 10x wider stages.
    register("wide_resnet28_10", replace(CIFAR, layers=(4, 4, 4), default_variant="v2", default_shortcut="B",
                                         default_width=10.0))
    # Keras Applications' ResNet50V2/101V2/152V2 (models/keras_v2.py): downsampling in each stage's last block.
    for depth, layers in KERAS_V2_LAYERS.items():
        register(f"keras_resnet{depth}v2", replace(IMAGENET, block="bottleneck", layers=layers, default_variant="v2"),
                 builder=KerasResNetV2)
    # Keras' CIFAR-10 example (examples/cifar10_resnet.py, models/keras_cifar.py), named by true depth and the
    # example's version: keras_cifar_resnet20v1 (6n+2, basic units), keras_cifar_resnet56v2 (9n+2, bottlenecks).
    for depth in KERAS_CIFAR_V1_DEPTHS:
        n = (depth - 2) // 6
        register(f"keras_cifar_resnet{depth}v1", replace(CIFAR, layers=(n, n, n), default_shortcut="B"),
                 builder=KerasCifarResNet)
    for depth in KERAS_CIFAR_V2_DEPTHS:
        n = (depth - 2) // 9
        register(f"keras_cifar_resnet{depth}v2", replace(CIFAR, block="bottleneck", layers=(n, n, n),
                                                         default_variant="v2", default_shortcut="B",
                                                         stage_widths=(64, 128, 256)),
                 builder=KerasCifarResNet)


_register_defaults()
_FAMILY_ORDER = list(dict.fromkeys(spec.family for spec in _REGISTRY.values()))  # first registered, first listed


def list_models(pattern: str = "*", *, pretrained: bool = False) -> list[str]:
    """Registered names matching a shell-style ``pattern`` (``resnet*``, ``plain?0``), sorted by family and depth;
    with ``pretrained``, the names of trained weights instead (``resnet20_cifar10``: ``create_model`` takes them),
    those whose name or architecture matches, as ``resnetkit models --pretrained PATTERN`` lists them."""
    if pretrained:
        from .pretrained import list_weights

        return [entry.name for entry in list_weights(pattern)]
    names = [n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)]
    # Within a layout: residual nets before plain twins, then by name stem (resnet, resnext, seresnet,
    # wide_resnet) and depth.
    return sorted(names, key=lambda n: (_FAMILY_ORDER.index(_REGISTRY[n].family), _REGISTRY[n].plain,
                                        re.match(r"\D*", n).group(), _REGISTRY[n].depth, n))


def get_spec(name: str) -> ArchSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        family = sorted(n for n in _REGISTRY if n.rstrip("0123456789") == name.rstrip("0123456789"))
        close = difflib.get_close_matches(name, list(_REGISTRY), n=4, cutoff=0.75) or family[:8]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}: see `resnetkit models` for the list{hint}") from None


def resolve_config(config: ModelConfig) -> ModelConfig:
    """``config`` with every field left at None set to its architecture's default (variant, shortcut, width,
    class count); a plain network given a shortcut is refused, naming its residual twin."""
    spec = get_spec(config.arch)
    if spec.plain and config.shortcut not in (None, "none"):
        base = config.arch.replace("plain", "resnet")
        raise ValueError(f"{config.arch} is a plain network without shortcuts; use create_model({base!r}, "
                         f"shortcut={config.shortcut!r}) for the residual twin")
    defaults = {"variant": spec.default_variant, "shortcut": spec.default_shortcut, "width": spec.default_width,
                "num_classes": spec.num_classes}
    return replace(config, **{k: v for k, v in defaults.items() if getattr(config, k) is None})


def get_builder(name: str) -> type[ResNet]:
    """The class that builds ``name``: ``ResNet``, or a subclass for a layout of its own (the Keras ones)."""
    get_spec(name)  # an unknown name fails with the list of similar names
    return _BUILDERS[name]


def default_config(name: str, **options: object) -> ModelConfig:
    """The ``ModelConfig`` that ``create_model(name, **options)`` builds; an option given as None keeps the
    architecture's default."""
    allowed = {f.name for f in fields(ModelConfig)} - {"arch"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        get_spec(name)  # an unknown name first
        raise TypeError(f"create_model({name!r}) got unknown option(s) {unknown}; options are {sorted(allowed)}")
    return resolve_config(ModelConfig(arch=name, **{k: v for k, v in options.items() if v is not None}))  # type: ignore[arg-type]


def build_model(config: ModelConfig, *, max_blocks: int | None = None) -> ResNet:
    """Build the network a ``ModelConfig`` describes (as stored in a model file); ``max_blocks`` shortens every
    stage to that many blocks (a quick shape check of a file before the whole network is built)."""
    spec = get_spec(config.arch)  # an unknown name fails here, with the list of similar names
    config = resolve_config(config)
    return _BUILDERS[config.arch](spec if max_blocks is None else spec.shortened(max_blocks), config)


def create_model(name: str, *, pretrained: str | bool | None = None, features_only: bool = False,
                 out_indices: tuple[int, ...] | int | None = None, **options: object) -> ResNet:
    """Build a registered network, or load a trained one.

    Options: ``num_classes``, ``in_chans``, ``variant`` ("v1" paper, "v1.5" torchvision, "v2"
    pre-activation), ``shortcut`` ("A", "B", "C", "D"), ``width`` (multiplier), ``zero_init_residual``,
    ``drop_rate`` (dropout before the classifier), ``drop_path_rate`` (stochastic depth). An option given as None
    keeps the default. ``pretrained`` names trained weights from the catalog (``resnetkit models --pretrained``) by
    their tag, or is True for the architecture's most accurate ones (timm's ``pretrained=True``); a catalog name such
    as ``resnet20_cifar10``, or timm's ``hf-hub:timm/resnet50d.ra4_e3600_r224_in1k``, works as ``name`` too. With
    weights, only ``num_classes`` (it replaces the head for fine-tuning), ``drop_rate`` and ``drop_path_rate`` may be
    given. ``features_only=True`` returns a backbone giving the maps ``out_indices`` (0 stem, 1.. stages; default:
    every stage; an int n: the last n maps, as timm) with their channels and strides in ``feature_info`` (see
    ``models/features.py``).

    >>> model = create_model("resnet20")            # CIFAR ResNet-20, option A shortcuts
    >>> model = create_model("resnet50", variant="v1", num_classes=10)
    >>> model = create_model("resnet20", pretrained="cifar10")
    >>> model = create_model("resnet50", pretrained=True)  # its best ImageNet weights (torchvision's v2)
    >>> backbone = create_model("resnet50", features_only=True, out_indices=(2, 3, 4))  # stride 8, 16, 32 maps
    """
    if out_indices is not None and not features_only:  # a classifier would be returned, the indices unused
        raise ValueError(f"out_indices={out_indices!r} chooses a backbone's feature maps: give features_only=True too")
    model = _create(name, pretrained=pretrained, **options)
    if features_only:  # a backbone: the chosen stages' maps, see models/features.py
        return features_only_model(model, out_indices)  # type: ignore[return-value]
    return model


def _create(name: str, *, pretrained: str | bool | None, **options: object) -> ResNet:
    if name.startswith("hf-hub:"):  # timm's spelling for its weights on the Hugging Face Hub (models/hf_hub.py)
        from .hf_hub import load_hf_hub
        from .pretrained import check_trained_options, with_trained_options

        if pretrained is False or isinstance(pretrained, str):
            raise ValueError(f"{name} names one set of trained weights: give pretrained=True or leave it out (for "
                             "random weights or other ones, give the architecture's name)")
        check_trained_options(options, call=f"create_model({name!r})")
        return with_trained_options(load_hf_hub(name)[0], **options)  # type: ignore[arg-type]
    if name not in _REGISTRY:  # a catalog name (resnet20_cifar10): those weights, whatever else is asked
        from .pretrained import get_weights, pretrained_model

        entry = get_weights(name)
        if entry is not None:
            if pretrained is False or isinstance(pretrained, str):
                raise ValueError(f"{name} names trained weights of {entry.arch}: for random weights or other "
                                 f"ones, create_model({entry.arch!r}, pretrained=...)")
            return pretrained_model(entry.arch, entry.tag, **options)
    if pretrained is not None and pretrained is not False:
        from .pretrained import default_weights, pretrained_model

        get_spec(name)  # an unknown architecture is named as such, not as missing weights
        return pretrained_model(name, default_weights(name).tag if pretrained is True else pretrained, **options)
    return build_model(default_config(name, **options))


# The options that change a network's state-dict keys or shapes, tried when looking for what a file was saved from.
_KEY_CHANGING_OPTIONS: tuple[dict[str, str], ...] = ({}, {"variant": "v2"}, {"shortcut": "A"}, {"shortcut": "B"},
                                                     {"shortcut": "C"}, {"shortcut": "D"})


def architectures_fitting(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """What a state dict's tensors (key -> shape) were saved from: each registered network, with the options that
    change keys (variant v2, the shortcut), whose tensors are exactly these, as ``create_model`` arguments
    (``resnet18d``, ``resnet20 with shortcut='B'``); the class count and input channels are read from the tensors.
    Only names with the file's blocks per stage are built, on the meta device, so the search costs a few empty
    networks (it runs when a file does not fit the one asked for); a file with more stages or blocks than any
    registered network fits none, found without building anything."""
    blocks: dict[int, int] = {}
    for key in shapes:
        match = re.match(r"layer(\d{1,2})\.(\d{1,4})\.", key)  # a crafted key cannot make the count huge
        if match:
            stage, index = int(match[1]), int(match[2])
            blocks[stage] = max(blocks.get(stage, 0), index + 1)
    if not blocks or max(blocks) > max(len(spec.layers) for spec in _REGISTRY.values()):
        return []
    layers = tuple(blocks.get(stage, 0) for stage in range(1, max(blocks) + 1))
    fc = shapes.get("fc.weight")
    stem = shapes.get("conv1.weight") or shapes.get("conv1.0.weight")  # a deep stem's first convolution
    sizes = {"num_classes": fc[0] if fc is not None and len(fc) == 2 else 0,
             "in_chans": stem[1] if stem is not None and len(stem) == 4 else 3}
    found = []
    for name, spec in _REGISTRY.items():
        if spec.layers != layers:
            continue
        for options in _KEY_CHANGING_OPTIONS:
            try:
                config = default_config(name, **sizes, **options)
                with torch.device("meta"):
                    model = build_model(config)
            except (ValueError, TypeError):  # an option the layout refuses (a plain net's shortcut, Keras' v1)
                continue
            if {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes:
                given = {**options, **{k: v for k, v in sizes.items() if k == "in_chans" and v != 3}}
                shown = ", ".join(f"{k}={v!r}" for k, v in given.items() if v != getattr(default_config(name), k))
                found.append(f"{name} with {shown}" if shown else name)
                break
    return found


def default_preprocess(name: str) -> Preprocess:
    """The preprocessing a randomly initialised ``name`` is trained and saved with (weights may carry their own)."""
    return get_spec(name).preprocess


def default_info(model: ResNet) -> ModelInfo:
    """What a network without a model file is used with: its family's preprocessing, no class names."""
    return ModelInfo(model=model.config, preprocess=default_preprocess(model.config.arch))
