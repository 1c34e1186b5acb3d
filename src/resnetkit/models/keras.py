"""Keras Applications ResNet weights (ResNet50/101/152, ResNet50V2/101V2/152V2) into resnetkit networks.

Reads ``.weights.h5`` (Keras 3 ``save_weights``), legacy ``.h5`` (``model.save``, ``save_weights`` in Keras 2,
and the files keras.applications downloads) and ``.keras`` archives with ``h5py``: arrays only, nothing in
the file is executed. Every array's shape is checked against the network before it is read.

Keras v1 (``ResNet50``) is resnetkit's ``resnet50`` with ``variant="v1"`` (stride on the first 1x1) and
projection shortcuts where the shape changes. Its convolutions carry biases; each is followed by
BatchNorm, so the bias folds exactly into the BN's running mean (BN(conv(x) + b) uses mean - b). Keras'
epsilon (1.001e-5) folds into the running variance. Its ``caffe`` preprocessing (BGR, x*255 - mean) becomes
a ``Preprocess`` in resnetkit's convention (RGB in 0..1, mean/std) with the first convolution's input
channels reversed, so the network takes RGB. ResNetV2 (``preprocess_input`` mode ``tf``: x*2 - 1) is
``keras_resnet50v2`` etc. (models/keras_v2.py), normalised with mean = std = 0.5.

The networks of Keras' CIFAR-10 example (``cifar10_resnet.py``, models/keras_cifar.py) leave their layers
unnamed, so Keras numbers them per kind (``conv2d``, ``conv2d_1`` ...) in the order the example creates
them. Those numbers give the order (a ``.weights.h5`` lists its layers alphabetically), and the n-th
convolution, BatchNorm and Dense fill resnetkit's n-th of each, whose modules are registered in the
example's order; the shapes decide version and depth. An in-memory ``keras.Model`` loads the same way.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import CIFAR10_MEAN, ModelConfig, ModelInfo, Preprocess
from .keras_cifar import KERAS_DEFAULT_BN_EPSILON
from .registry import create_model, list_models
from .resnet import ResNet
from .state_dict import WeightFileError, load_weights

KERAS_BN_EPSILON = 1.001e-5  # keras.applications.resnet: BatchNormalization(epsilon=1.001e-5)
TORCH_BN_EPSILON = 1e-5
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode "caffe"
KERAS_V1_PREPROCESS = Preprocess(mean=tuple(m / 255 for m in reversed(CAFFE_MEAN_BGR)),  # type: ignore[arg-type]
                                 std=(1 / 255, 1 / 255, 1 / 255))
KERAS_V2_PREPROCESS = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
BLOCKS_PER_STAGE = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
MAX_KERAS_ARCHIVE_WEIGHTS = 4 * 2**30
BLOCK_LAYER = re.compile(r"^conv(\d)_block(\d+)_")
# The example scales to 0..1 and subtracts the training set's mean image; the file does not hold that image,
# so its per-channel mean (CIFAR-10's) stands in for it, with no division.
KERAS_CIFAR_EXAMPLE_PREPROCESS = Preprocess(input_size=32, resize_size=32, mean=CIFAR10_MEAN, std=(1.0, 1.0, 1.0))
AUTO_NAME_NUMBER = re.compile(r"_(\d+)$")


MAX_COMPRESSION = 64  # trained float weights barely compress; an array stored 64x smaller is not weights


def _need_h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise WeightFileError("reading Keras .h5 files needs h5py: pip install 'resnetkit[keras]' (or h5py)") from None
    return h5py


def _open_h5(path: Path) -> Any:
    h5py = _need_h5py()
    try:
        if path.suffix == ".keras":  # a zip holding model.weights.h5 beside the model's JSON config
            with zipfile.ZipFile(path) as archive:
                size = archive.getinfo("model.weights.h5").file_size
                if size > MAX_KERAS_ARCHIVE_WEIGHTS:  # read into memory: refuse a zip bomb before inflating it
                    raise WeightFileError(f"{path}: its weights would inflate to {size / 2**30:.1f} GiB; the "
                                          "largest ResNet needs under 1 GiB: is this file what you think it is?")
                return h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        return h5py.File(path, "r")
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise WeightFileError(f"{path}: not a readable Keras weight file ({e}); it may be truncated or not "
                              "HDF5: save it again with model.save_weights('name.weights.h5')") from e


def _names(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_keras_layers(handle: Any, source: str = "the Keras file") -> dict[str, list[Any]]:
    """Layer name -> its weight datasets in Keras order (kernel, bias / gamma, beta, moving mean, variance).

    The datasets are not read yet: their shapes are checked first.
    """
    try:
        return _keras_layers(handle, source)
    except KeyError as e:  # a layer names a weight the file does not hold: damaged, or cut short
        raise WeightFileError(f"{source}: names a weight the file does not hold ({e}); it is damaged or truncated: "
                              "save it again with model.save_weights('name.weights.h5')") from None


def _keras_layers(handle: Any, source: str) -> dict[str, list[Any]]:
    layers: dict[str, list[Any]] = {}
    if "layers" in handle and "layer_names" not in handle.attrs:  # Keras 3 .weights.h5: layers/<id>/vars/<i>
        for group in handle["layers"].values():
            if "vars" not in group or not len(group["vars"]):
                continue
            variables = group["vars"]
            name = variables.attrs.get("name", group.name.rsplit("/", 1)[-1])
            layers[_names([name])[0]] = [variables[k] for k in sorted(variables, key=int)]
        return layers
    root = handle["model_weights"] if "model_weights" in handle else handle  # model.save() / legacy save_weights
    if "layer_names" not in root.attrs:
        raise WeightFileError(f"{source}: no Keras layer list in the file (neither 'layers/' nor a 'layer_names' "
                              "attribute): is it a Keras weight file? save one with model.save_weights('name.weights.h5')")
    for name in _names(root.attrs["layer_names"]):
        group = root[name]
        weight_names = _names(group.attrs.get("weight_names", []))
        if weight_names:
            layers[name] = [group[w] for w in weight_names]
    return layers


def detect_arch(layers: dict[str, list[Any]], source: str) -> str:
    """The resnetkit name for the Keras network whose layers these are."""
    blocks: dict[int, int] = {}
    for name in layers:
        match = BLOCK_LAYER.match(name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block)
    depth = BLOCKS_PER_STAGE.get(tuple(blocks.get(s, 0) for s in (2, 3, 4, 5)))
    if depth is None:
        example = example_arch(layers, source) if not blocks else None
        if example is not None:
            return example
        raise WeightFileError(f"{source}: not a Keras Applications ResNet (layers conv2_block1_... to conv5_...; "
                              f"found blocks per stage {blocks or 'none'}) nor a network of Keras' cifar10_resnet.py "
                              "example; resnetkit reads ResNet50/101/152, ResNet50V2/101V2/152V2 and the example's "
                              "resnet_v1 / resnet_v2")
    return f"keras_resnet{depth}v2" if "post_bn" in layers else f"resnet{depth}"


def _creation_order(name: str) -> int:
    match = AUTO_NAME_NUMBER.search(name)
    return int(match.group(1)) if match else 0  # conv2d, conv2d_1, conv2d_2 ... (Keras 2: conv2d_1 first)


def _example_layers(layers: dict[str, list[Any]]) -> dict[str, list[tuple[str, list[Any]]]]:
    """The layers with weights, by kind (told by the arrays' ranks), each kind in the order the example made them."""
    kinds: dict[str, list[tuple[str, list[Any]]]] = {"convolution": [], "BatchNormalization": [], "Dense": []}
    ranks_to_kind = {(4, 1): "convolution", (1, 1, 1, 1): "BatchNormalization", (2, 1): "Dense"}
    for name in sorted(layers, key=_creation_order):
        kind = ranks_to_kind.get(tuple(len(a.shape) for a in layers[name]))
        if kind is not None:
            kinds[kind].append((name, layers[name]))
    return kinds


def example_arch(layers: dict[str, list[Any]], source: str) -> str | None:
    """The resnetkit name for a network of Keras' CIFAR-10 example, or None when these layers are not one.

    v1 has two 1x1 convolutions (its projection shortcuts) and two 3x3 per unit; v2 has one 3x3 per unit.
    """
    kinds = _example_layers(layers)
    kernels = [tuple(arrays[0].shape) for _, arrays in kinds["convolution"]]
    if not kernels or kernels[0][:2] != (3, 3) or kernels[0][3] != 16 or len(kinds["Dense"]) != 1:
        return None
    one_by_one = sum(k[:2] == (1, 1) for k in kernels)
    three_by_three = len(kernels) - 1 - one_by_one  # without the stem
    version, depth = (1, three_by_three + 2) if one_by_one == 2 else (2, 3 * three_by_three + 2)
    name = f"keras_cifar_resnet{depth}v{version}"
    known = list_models("keras_cifar_resnet*")
    if name not in known:
        raise WeightFileError(f"{source}: looks like a ResNet-{depth} v{version} of Keras' cifar10_resnet.py, which "
                              f"resnetkit does not register; it registers {', '.join(known)}")
    return name


def example_state_dict(model: ResNet, layers: dict[str, list[Any]], *, source: str) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` (a ``keras_cifar_resnet*``) from the example's layers, matched by creation order."""
    arch = model.config.arch
    kinds = _example_layers(layers)
    ours: dict[str, list[tuple[str, Any]]] = {kind: [] for kind in kinds}
    for prefix, module in model.named_modules():
        for module_type, kind in ((nn.Conv2d, "convolution"), (nn.BatchNorm2d, "BatchNormalization"),
                                  (nn.Linear, "Dense")):
            if isinstance(module, module_type):
                ours[kind].append((prefix, module))
    state: dict[str, torch.Tensor] = {}
    for kind, keras_layers in kinds.items():
        if len(keras_layers) != len(ours[kind]):
            raise WeightFileError(f"{source}: {len(keras_layers)} {kind} layers with weights, but {arch} has "
                                  f"{len(ours[kind])}; is the file for another network?")
        for number, ((keras_name, arrays), (prefix, module)) in enumerate(zip(keras_layers, ours[kind]), 1):
            where = f"{keras_name!r} ({kind} {number} of {len(keras_layers)}, for {prefix})"
            if kind == "convolution":
                out_ch, in_ch, kh, kw = module.weight.shape
                kernel, bias = _read_arrays(arrays, where, [(kh, kw, in_ch, out_ch), (out_ch,)], source=source,
                                            arch=arch)
                state.update({f"{prefix}.weight": kernel.permute(3, 2, 0, 1).contiguous(), f"{prefix}.bias": bias})
            elif kind == "BatchNormalization":
                gamma, beta, mean, var = _read_arrays(arrays, where, [tuple(module.weight.shape)] * 4, source=source,
                                                      arch=arch)
                state.update({f"{prefix}.weight": gamma, f"{prefix}.bias": beta, f"{prefix}.running_mean": mean,
                              f"{prefix}.running_var": var + (KERAS_DEFAULT_BN_EPSILON - module.eps),
                              f"{prefix}.num_batches_tracked": torch.zeros((), dtype=torch.long)})
            else:
                out_f, in_f = module.weight.shape
                kernel, bias = _read_arrays(arrays, where, [(in_f, out_f), (out_f,)], source=source, arch=arch)
                state.update({f"{prefix}.weight": kernel.t().contiguous(), f"{prefix}.bias": bias})
    return state


def _read_arrays(arrays: list[Any], where: str, shapes: list[tuple[int, ...]], *, source: str,
                 arch: str) -> list[torch.Tensor]:
    """The arrays of one Keras layer as tensors, read only after their shapes are checked."""
    found = [tuple(a.shape) for a in arrays]
    if found != shapes:
        raise WeightFileError(f"{source}: layer {where} holds arrays of shapes {found}, expected {shapes} for {arch}; "
                              "is the file for another network?")
    for array in arrays:  # an HDF5 dataset declared but never written (or a compression bomb) would inflate
        stored = array.id.get_storage_size() if hasattr(array, "id") else None
        if stored is not None and array.nbytes > max(1 << 20, MAX_COMPRESSION * stored):
            raise WeightFileError(f"{source}: layer {where} declares {array.nbytes:,} bytes of weights but the file "
                                  f"stores {stored:,}; it is damaged or crafted: use a file you trust")
    return [torch.from_numpy(np.asarray(a[()])).float() for a in arrays]


def _key_map(model: ResNet, v2: bool) -> dict[str, tuple[str, str]]:
    """resnetkit module prefix -> (Keras layer name, kind) for every layer with weights."""
    mapping: dict[str, tuple[str, str]] = {"conv1": ("conv1_conv", "conv")}
    if v2:
        mapping["norm.0"] = ("post_bn", "bn")
    else:
        mapping["bn1"] = ("conv1_bn", "bn")
    for s, stage in enumerate(model.stages()):
        for b, block in enumerate(stage):
            keras, ours = f"conv{s + 2}_block{b + 1}", f"layer{s + 1}.{b}"
            if v2:
                mapping.update({f"{ours}.bn1": (f"{keras}_preact_bn", "bn"), f"{ours}.bn2": (f"{keras}_1_bn", "bn"),
                                f"{ours}.bn3": (f"{keras}_2_bn", "bn")})
                if block.downsample is not None:
                    mapping[f"{ours}.downsample"] = (f"{keras}_0_conv", "conv")
            else:
                mapping.update({f"{ours}.bn{i}": (f"{keras}_{i}_bn", "bn") for i in (1, 2, 3)})
                if block.downsample is not None:
                    mapping.update({f"{ours}.downsample.0": (f"{keras}_0_conv", "conv"),
                                    f"{ours}.downsample.1": (f"{keras}_0_bn", "bn")})
            mapping.update({f"{ours}.conv{i}": (f"{keras}_{i}_conv", "conv") for i in (1, 2, 3)})
    if model.num_classes:
        mapping["fc"] = ("predictions", "dense")
    return mapping


# In v1 every convolution is followed by the BatchNorm named here; its bias folds into that BN.
def _v1_bn_after(conv: str) -> str:
    if conv == "conv1":
        return "bn1"
    if conv.endswith("downsample.0"):
        return conv[:-1] + "1"
    return conv[:-5] + "bn" + conv[-1]


def keras_state_dict(model: ResNet, layers: dict[str, list[Any]], *, source: str) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` (built by ``create_model``) from the Keras layers ``read_keras_layers`` gives."""
    v2 = model.config.arch.startswith("keras_")
    own = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    conv_bias: dict[str, torch.Tensor] = {}

    def fetch(keras_name: str, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        arrays = layers.get(keras_name)
        if arrays is None:
            raise WeightFileError(f"{source}: layer {keras_name!r} is missing; is this a Keras {model.config.arch}?")
        return _read_arrays(arrays, repr(keras_name), shapes, source=source, arch=model.config.arch)

    for prefix, (keras_name, kind) in _key_map(model, v2).items():
        if kind == "conv":
            out_ch, in_ch, kh, kw = own[f"{prefix}.weight"].shape
            has_bias = f"{prefix}.bias" in own or not v2  # v1: every conv has a bias, folded into its BN below
            arrays = fetch(keras_name, [(kh, kw, in_ch, out_ch), (out_ch,)][: 1 + has_bias])
            weight = arrays[0].permute(3, 2, 0, 1)
            if prefix == "conv1" and not v2:
                weight = weight.flip(1)  # caffe feeds BGR; our input is RGB
            state[f"{prefix}.weight"] = weight.contiguous()
            if f"{prefix}.bias" in own:
                state[f"{prefix}.bias"] = arrays[1]
            elif has_bias:
                conv_bias[_v1_bn_after(prefix)] = arrays[1]
        elif kind == "bn":
            channels = own[f"{prefix}.weight"].shape[0]
            gamma, beta, mean, var = fetch(keras_name, [(channels,)] * 4)
            state.update({f"{prefix}.weight": gamma, f"{prefix}.bias": beta, f"{prefix}.running_mean": mean,
                          f"{prefix}.running_var": var + (KERAS_BN_EPSILON - TORCH_BN_EPSILON),
                          f"{prefix}.num_batches_tracked": torch.zeros((), dtype=torch.long)})
        else:
            out_f, in_f = own["fc.weight"].shape
            kernel, bias = fetch(keras_name, [(in_f, out_f), (out_f,)])
            state.update({"fc.weight": kernel.t().contiguous(), "fc.bias": bias})
    for bn, bias in conv_bias.items():
        state[f"{bn}.running_mean"] = state[f"{bn}.running_mean"] - bias  # BN(conv + b) == BN'(conv), exactly
    return state


def load_keras_model(source: str | os.PathLike[str] | Any, *,
                     arch: str | None = None) -> tuple[ResNet, ModelInfo]:
    """A resnetkit network with a Keras ResNet's weights, and the preprocessing Keras uses.

    ``source`` is a weight file (``.weights.h5``, ``.h5``, ``.keras``) or an in-memory ``keras.Model``: a
    Keras Applications ResNet or a network of Keras' CIFAR-10 example. ``arch`` is detected from the layers;
    when given (``resnet50``, ``keras_resnet50v2``, ``keras_cifar_resnet20v1``) it must agree. A file saved
    with ``include_top=False`` gives a network without classifier (``num_classes=0``).
    """
    if hasattr(source, "layers") and hasattr(source, "get_weights"):  # a keras.Model, already in memory
        layers = {layer.name: layer.get_weights() for layer in source.layers if layer.weights}
        return _convert(layers, f"Keras model {source.name!r}", arch=arch)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such weight file")
    with _open_h5(path) as handle:  # arrays are read while converting, after their shapes are checked
        return _convert(read_keras_layers(handle, str(path)), str(path), arch=arch, file_name=path.name)


def _convert(layers: dict[str, list[Any]], source: str, *, arch: str | None,
             file_name: str | None = None) -> tuple[ResNet, ModelInfo]:
    found = detect_arch(layers, source)
    example = found.startswith("keras_cifar_")
    if arch is not None and arch != found:
        kind = "cifar10_resnet.py network" if example else "ResNetV2" if found.startswith("keras_") else "ResNet v1"
        raise WeightFileError(f"{source}: holds a Keras {found} ({kind}), not {arch}; use {found}, or pass the "
                              f"{'file' if file_name else 'model'} alone")
    # Built on the meta device: only the shapes guide the conversion, and nothing is allocated for a file whose
    # arrays turn out not to be there.
    if example:
        dense = _example_layers(layers)["Dense"][0][1]
        with torch.device("meta"):
            model = create_model(found, num_classes=int(dense[1].shape[0]))
        state, preprocess = example_state_dict(model, layers, source=source), KERAS_CIFAR_EXAMPLE_PREPROCESS
    else:
        head = layers.get("predictions")
        num_classes = int(head[1].shape[0]) if head and len(head) == 2 else 0
        v2 = found.startswith("keras_")
        with torch.device("meta"):
            model = create_model(found, num_classes=num_classes, **({} if v2 else {"variant": "v1", "shortcut": "B"}))
        state, preprocess = keras_state_dict(model, layers, source=source), (
            KERAS_V2_PREPROCESS if v2 else KERAS_V1_PREPROCESS)
    model = model.to_empty(device="cpu")
    load_weights(model, state, source=source)
    config: ModelConfig = model.config
    info = ModelInfo(model=config, preprocess=preprocess,
                     extra={"converted_from": f"Keras {file_name or source}"})
    return model.eval(), info
