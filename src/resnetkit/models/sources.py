"""Open any model resnetkit reads: its own ``.safetensors`` files, torchvision / timm ``.pth`` state dicts,
Keras ``.h5`` / ``.weights.h5`` files, always as a ``ResNet`` plus the ``ModelInfo`` it must be used with."""

from __future__ import annotations

import os

from ..config import ModelInfo
from .hf_hub import is_hf_hub_name, load_hf_hub_as
from .pretrained import close_model_names
from .registry import default_info, list_models
from .resnet import ResNet
from .state_dict import load_state_dict_file, model_for_state_dict
from .weights import check_self_describing, load_model, resolve_weight_path

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")


def is_keras_file(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(KERAS_SUFFIXES)


def open_model(model: str, *, weights: str | None = None, **options: object) -> tuple[ResNet, ModelInfo]:
    """``model``: a resnetkit model file or a Keras weight file (path or URL), or a registered architecture
    name with ``weights`` (torchvision, timm, resnetkit or Keras weights; ``options`` such as ``variant`` go
    to ``create_model``). The model is in eval mode."""
    if model in list_models():
        if weights is None:
            raise ValueError(f"{model} is an architecture name: give its weights with --weights FILE_OR_URL, or pass "
                             "a model file")
        if is_hf_hub_name(weights):  # the repository's preprocessing and class names come with it
            return load_hf_hub_as(model, weights)
        path = resolve_weight_path(weights)
        if is_keras_file(path):
            from .keras import load_keras_model

            return load_keras_model(path, arch=model)
        net = model_for_state_dict(model, load_state_dict_file(path), source=str(path), **options)
        return net.eval(), default_info(net)
    if weights is not None:
        raise ValueError(f"{model}: --weights goes with an architecture name (see `resnetkit models`); a model file "
                         "already holds its weights")
    if is_hf_hub_name(model):
        return load_model(model)
    path = resolve_weight_path(model)
    if not path.exists():
        raise FileNotFoundError(f"{model}: neither a model file nor a registered architecture name "
                                f"(see `resnetkit models`){close_model_names(model)}")
    if is_keras_file(path):
        from .keras import load_keras_model

        return load_keras_model(path)
    check_self_describing(path, shown=model)  # load_model checks too; here the message shows the name as given
    return load_model(path)

