"""The evaluation transform a model's stored ``Preprocess`` describes, with torchvision transforms v2."""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2

from ..config import Preprocess


def eval_transform(preprocess: Preprocess) -> v2.Compose:
    """Resize the shorter side to ``resize_size``, centre-crop ``input_size``, scale to [0, 1], normalise.

    Applied to an RGB PIL image, the resize and crop run on PIL's kernels, exactly as the classic
    ``transforms.Resize / CenterCrop / ToTensor / Normalize`` evaluation pipeline does, so a prediction
    matches what an evaluation with the same preprocessing measures.
    """
    try:
        interpolation = InterpolationMode(preprocess.interpolation.lower())
    except ValueError:
        known = [m.value for m in InterpolationMode]
        raise ValueError(f"preprocess interpolation={preprocess.interpolation!r} is not one of {known}") from None
    return v2.Compose([
        v2.Resize(preprocess.resize_size, interpolation=interpolation, antialias=True),
        v2.CenterCrop(preprocess.input_size),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(preprocess.mean), std=list(preprocess.std)),
    ])


def crop_box(width: int, height: int, preprocess: Preprocess) -> tuple[float, float, float, float]:
    """The (left, top, right, bottom) region of the original image the model sees after resize and crop.

    It can reach outside the image when ``input_size`` exceeds the resized image (the crop pads).
    """
    scale = preprocess.resize_size / min(width, height)
    side = preprocess.input_size / scale
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side
