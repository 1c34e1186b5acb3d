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
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig, ModelInfo, Preprocess
from .registry import create_model
from .resnet import ResNet
from .weights import WeightFileError, load_weights

KERAS_BN_EPSILON = 1.001e-5  # keras.applications.resnet: BatchNormalization(epsilon=1.001e-5)
TORCH_BN_EPSILON = 1e-5
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode "caffe"
KERAS_V1_PREPROCESS = Preprocess(mean=tuple(m / 255 for m in reversed(CAFFE_MEAN_BGR)),  # type: ignore[arg-type]
                                 std=(1 / 255, 1 / 255, 1 / 255))
KERAS_V2_PREPROCESS = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
BLOCKS_PER_STAGE = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
MAX_KERAS_ARCHIVE_WEIGHTS = 4 * 2**30
BLOCK_LAYER = re.compile(r"^conv(\d)_block(\d+)_")


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


def read_keras_layers(handle: Any) -> dict[str, list[Any]]:
    """Layer name -> its weight datasets in Keras order (kernel, bias / gamma, beta, moving mean, variance).

    The datasets are not read yet: their shapes are checked first.
    """
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
        raise WeightFileError("no Keras layer list in the file (neither 'layers/' nor a 'layer_names' attribute)")
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
        raise WeightFileError(f"{source}: not a Keras Applications ResNet (layers conv2_block1_... to conv5_...; "
                              f"found blocks per stage {blocks or 'none'}); resnetkit reads ResNet50/101/152 and "
                              "ResNet50V2/101V2/152V2")
    return f"keras_resnet{depth}v2" if "post_bn" in layers else f"resnet{depth}"


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

    def fetch(keras_name: str, count: int, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        arrays = layers.get(keras_name)
        if arrays is None:
            raise WeightFileError(f"{source}: layer {keras_name!r} is missing; is this a Keras {model.config.arch}?")
        found = [tuple(a.shape) for a in arrays]
        if len(arrays) != count or found != shapes:
            raise WeightFileError(f"{source}: layer {keras_name!r} holds arrays of shapes {found}, expected {shapes} "
                                  f"for {model.config.arch}; is the file for another network?")
        return [torch.from_numpy(a[()]).float() for a in arrays]  # read only now, after the shape check

    for prefix, (keras_name, kind) in _key_map(model, v2).items():
        if kind == "conv":
            out_ch, in_ch, kh, kw = own[f"{prefix}.weight"].shape
            has_bias = f"{prefix}.bias" in own or not v2  # v1: every conv has a bias, folded into its BN below
            arrays = fetch(keras_name, 2 if has_bias else 1, [(kh, kw, in_ch, out_ch), (out_ch,)][: 1 + has_bias])
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
            gamma, beta, mean, var = fetch(keras_name, 4, [(channels,)] * 4)
            state.update({f"{prefix}.weight": gamma, f"{prefix}.bias": beta, f"{prefix}.running_mean": mean,
                          f"{prefix}.running_var": var + (KERAS_BN_EPSILON - TORCH_BN_EPSILON),
                          f"{prefix}.num_batches_tracked": torch.zeros((), dtype=torch.long)})
        else:
            out_f, in_f = own["fc.weight"].shape
            kernel, bias = fetch(keras_name, 2, [(in_f, out_f), (out_f,)])
            state.update({"fc.weight": kernel.t().contiguous(), "fc.bias": bias})
    for bn, bias in conv_bias.items():
        state[f"{bn}.running_mean"] = state[f"{bn}.running_mean"] - bias  # BN(conv + b) == BN'(conv), exactly
    return state


def load_keras_model(path: str | os.PathLike[str], *, arch: str | None = None) -> tuple[ResNet, ModelInfo]:
    """A resnetkit network with a Keras Applications ResNet's weights, and the preprocessing Keras uses.

    ``arch`` is detected from the layer names; when given (``resnet50``, ``keras_resnet50v2``) it must agree.
    A file saved with ``include_top=False`` gives a network without classifier (``num_classes=0``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such weight file")
    with _open_h5(path) as handle:
        layers = read_keras_layers(handle)
        found = detect_arch(layers, str(path))
        if arch is not None and arch != found:
            raise WeightFileError(f"{path}: holds a Keras {found} ({'ResNetV2' if 'v2' in found else 'ResNet v1'}), "
                                  f"not {arch}; use {found}, or pass the file alone")
        head = layers.get("predictions")
        num_classes = int(head[1].shape[0]) if head and len(head) == 2 else 0
        v2 = found.startswith("keras_")
        model = create_model(found, num_classes=num_classes, **({} if v2 else {"variant": "v1", "shortcut": "B"}))
        state = keras_state_dict(model, layers, source=str(path))
    load_weights(model, state, source=str(path))
    config: ModelConfig = model.config
    info = ModelInfo(model=config, preprocess=KERAS_V2_PREPROCESS if v2 else KERAS_V1_PREPROCESS,
                     extra={"converted_from": f"Keras {path.name}"})
    return model.eval(), info
