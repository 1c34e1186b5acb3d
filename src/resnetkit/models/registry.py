"""The one registry of networks: ``create_model(name, **options)`` and ``list_models(pattern)``.

Names fix the family, block and depth; options (``ModelConfig`` fields) fix the rest. The registry
is also the test matrix: every registered name is built, run forward and backward by the tests.
"""

from __future__ import annotations

import fnmatch
from dataclasses import fields

from ..config import CIFAR_PREPROCESS, IMAGENET_PREPROCESS, ModelConfig, Preprocess
from .features import features_only as features_only_model
from .keras_v2 import KERAS_V2_LAYERS, KerasResNetV2
from .resnet import ArchSpec, ResNet

_REGISTRY: dict[str, ArchSpec] = {}
_BUILDERS: dict[str, type[ResNet]] = {}  # names built by a ResNet subclass of their own (Keras' ResNetV2)

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


def register(name: str, spec: ArchSpec, *, builder: type[ResNet] = ResNet) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered")
    _REGISTRY[name] = spec
    _BUILDERS[name] = builder


def _register_defaults() -> None:
    for depth, (block, layers) in IMAGENET_LAYERS.items():
        register(f"resnet{depth}", ArchSpec("imagenet", block, layers))
        if block == "basic" or depth <= 152:
            register(f"plain{depth}", ArchSpec("imagenet", block, layers, default_shortcut="none", plain=True))
    for depth in (50, 101):
        register(f"wide_resnet{depth}_2", ArchSpec("imagenet", "bottleneck", IMAGENET_LAYERS[depth][1],
                                                  default_width=2.0))
    for depth in CIFAR_BASIC_DEPTHS:
        n = (depth - 2) // 6
        register(f"resnet{depth}", ArchSpec("cifar", "basic", (n, n, n), default_variant="v1", default_shortcut="A"))
        register(f"plain{depth}", ArchSpec("cifar", "basic", (n, n, n), default_variant="v1",
                                           default_shortcut="none", plain=True))
    for depth in CIFAR_BOTTLENECK_DEPTHS:
        n = (depth - 2) // 9
        register(f"resnet{depth}", ArchSpec("cifar", "bottleneck", (n, n, n), default_variant="v2"))
    # Wide ResNet 28-10 (Zagoruyko & Komodakis): pre-activation basic blocks, 10x wider stages.
    register("wide_resnet28_10", ArchSpec("cifar", "basic", (4, 4, 4), default_variant="v2", default_width=10.0))
    # Keras Applications' ResNet50V2/101V2/152V2 (models/keras_v2.py): downsampling in each stage's last block.
    for depth, layers in KERAS_V2_LAYERS.items():
        register(f"keras_resnet{depth}v2", ArchSpec("imagenet", "bottleneck", layers, default_variant="v2"),
                 builder=KerasResNetV2)


_register_defaults()


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (``resnet*``, ``plain?0``), sorted by family and depth."""
    names = [n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)]
    return sorted(names, key=lambda n: (_REGISTRY[n].family != "imagenet", _REGISTRY[n].plain,
                                        n.startswith("wide"), _REGISTRY[n].depth, n))


def get_spec(name: str) -> ArchSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = [n for n in _REGISTRY if n.rstrip("0123456789") == name.rstrip("0123456789")]
        hint = f"; similar names: {', '.join(sorted(close))}" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; see `resnetkit models` for the list") from None


def default_config(name: str, **options: object) -> ModelConfig:
    """The ``ModelConfig`` that ``create_model(name, **options)`` builds; an option given as None keeps the
    architecture's default."""
    spec = get_spec(name)
    allowed = {f.name for f in fields(ModelConfig)} - {"arch"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"create_model({name!r}) got unknown option(s) {unknown}; options are {sorted(allowed)}")
    options = {k: v for k, v in options.items() if v is not None}
    if spec.plain and options.get("shortcut", "none") != "none":
        base = name.replace("plain", "resnet")
        raise ValueError(f"{name} is a plain network without shortcuts; use create_model({base!r}, "
                         f"shortcut={options['shortcut']!r}) for the residual twin")
    values: dict[str, object] = {
        "variant": spec.default_variant,
        "shortcut": spec.default_shortcut,
        "width": spec.default_width,
        "num_classes": 1000 if spec.family == "imagenet" else 10,
    }
    values.update(options)
    return ModelConfig(arch=name, **values)  # type: ignore[arg-type]


def build_model(config: ModelConfig) -> ResNet:
    """Build the network a ``ModelConfig`` describes (as stored in a model file)."""
    spec = get_spec(config.arch)  # an unknown name fails here, with the list of similar names
    return _BUILDERS[config.arch](spec, config)


def create_model(name: str, *, features_only: bool = False, out_indices: tuple[int, ...] | None = None,
                 **options: object) -> ResNet:
    """Build a registered network.

    Options: ``num_classes``, ``in_chans``, ``variant`` ("v1" paper, "v1.5" torchvision, "v2"
    pre-activation), ``shortcut`` ("A", "B", "C"), ``width`` (multiplier), ``zero_init_residual``,
    ``drop_rate`` (dropout before the classifier). An option given as None keeps the default.
    ``features_only=True`` returns a backbone giving the maps ``out_indices`` (0 stem, 1.. stages; default:
    every stage) with their channels and strides in ``feature_info`` (see ``models/features.py``).

    >>> model = create_model("resnet20")            # CIFAR ResNet-20, option A shortcuts
    >>> model = create_model("resnet50", variant="v1", num_classes=10)
    >>> backbone = create_model("resnet50", features_only=True, out_indices=(2, 3, 4))  # stride 8, 16, 32 maps
    """
    model = build_model(default_config(name, **options))
    if features_only:  # a backbone: the chosen stages' maps, see models/features.py
        return features_only_model(model, out_indices)  # type: ignore[return-value]
    return model


def default_preprocess(name: str) -> Preprocess:
    return IMAGENET_PREPROCESS if get_spec(name).family == "imagenet" else CIFAR_PREPROCESS
