"""Where the model's view of an image lies in the original; the transform itself is ``data.preprocess.eval_transform``."""

from __future__ import annotations

from ..config import Preprocess
from ..data.preprocess import eval_transform

__all__ = ["crop_box", "eval_transform"]


def crop_box(width: int, height: int, preprocess: Preprocess) -> tuple[float, float, float, float]:
    """The (left, top, right, bottom) region of the original image the model sees after resize and crop.

    It can reach outside the image when ``input_size`` exceeds the resized image (the crop pads).
    """
    scale = preprocess.resize_size / min(width, height)
    side = preprocess.input_size / scale
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side
