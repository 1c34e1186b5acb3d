"""Torch Hub entry points: every network resnetkit registers, by its name.

    import torch
    model = torch.hub.load("OWNER/resnetkit", "resnet20", pretrained=True)       # the shipped CIFAR-10 ResNet-20
    model = torch.hub.load("OWNER/resnetkit", "resnet56", pretrained="cifar10")  # a catalog tag
    model = torch.hub.load("path/to/resnetkit", "resnet50", source="local", variant="v1", num_classes=10)
    torch.hub.list("OWNER/resnetkit")                                            # the names

Each entry point is ``resnetkit.create_model(NAME, pretrained=..., **options)``: ``pretrained`` is False (random
weights), True (the architecture's most accurate weights in ``resnetkit models --pretrained``) or a tag of that
list; the options are create_model's (num_classes, variant, shortcut, width ...). Only public names here are entry
points (``torch.hub.list`` lists every public callable of this module).
"""

import sys as _sys
from pathlib import Path as _Path

# torch.hub imports this file from a checkout that is not installed: the package is under src/. A resnetkit
# imported before (an installed copy) stays the one in use: Python keeps its first import.
_SOURCE = _Path(__file__).resolve().parent / "src"
_sys.path.insert(0, str(_SOURCE))

import resnetkit as _resnetkit  # noqa: E402
from resnetkit.models import create_model as _create_model, list_models as _list_models  # noqa: E402

if _SOURCE not in _Path(_resnetkit.__file__).resolve().parents:
    import warnings as _warnings

    _warnings.warn(f"torch.hub: resnetkit was imported before from {_resnetkit.__file__}, so that copy builds the "
                   f"models, not the one in {_SOURCE}", stacklevel=2)

dependencies = ["torch", "torchvision", "safetensors", "numpy", "PIL", "yaml", "tqdm"]


def _entry_point(name: str):
    def build(pretrained: "bool | str" = False, **options):
        return _create_model(name, pretrained=pretrained, **options)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"{name}: resnetkit.create_model({name!r}, pretrained=..., **options). pretrained: False "
                     "(random weights), True (its most accurate weights) or a tag from `resnetkit models --pretrained`; "
                     "options: num_classes, variant, shortcut, width, zero_init_residual, drop_rate.")
    return build


for _name in _list_models():
    globals()[_name] = _entry_point(_name)
