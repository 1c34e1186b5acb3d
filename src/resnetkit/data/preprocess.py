"""The one evaluation preprocessing, built from a model file's ``Preprocess`` (as timm's ``create_transform``).

A decoded (3, H, W) uint8 image (``data.image.decode_rgb``) has its shorter side resized to
``resize_size`` and is centre-cropped to ``input_size``, in uint8; the crop is then scaled to [0, 1] and
normalised by ``augment.normalize``. The resize is PIL's, as in the classic torchvision pipeline
(``Resize / CenterCrop / ToTensor / Normalize`` on PIL images) that published weights were evaluated
with, so a torchvision or timm checkpoint sees what its authors measured. Training's
evaluation (in memory or file by file), ``resnetkit eval`` (every protocol's views), ``predict``,
``serve`` and export calibration all call these functions, so the model sees the same tensor from each.
Images decoded into memory for training are fitted to their size by ``fit_to_size``, the same resize
and crop with ``resize_size == input_size``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..config import IMAGENET_PREPROCESS, PROTOCOLS, Preprocess
from ..config import INTERPOLATIONS as INTERPOLATION_NAMES
from .augment import normalize
from .image import pil_to_rgb, to_pil

# The names are config's (INTERPOLATION_NAMES); here, what each means to torchvision and to PIL.
INTERPOLATIONS = {name: InterpolationMode(name) for name in INTERPOLATION_NAMES}
PIL_FILTERS = {name: Image.Resampling[name.upper()] for name in INTERPOLATION_NAMES}
PAPER_SCALES = (224, 256, 384, 480, 640)
# A resized image over this many pixels (about 200 MB) is refused: only an extreme aspect ratio gets there
# (a 1 x 1,000,000 strip with its shorter side at 256 would be 256 x 256,000,000).
MAX_RESIZED_PIXELS = 1 << 26
# When the resized image would hold more than this many times the target's pixels (aspect ratio over 16:1),
# the crop's region alone is resized (PIL's ``box``): the same mapping, though not always bit-equal (PIL
# rounds its weights per box, so a pixel may differ by one level), at the cost of the crop.
BOX_RESIZE_RATIO = 16


def interpolation_mode(name: str) -> InterpolationMode:
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(f"interpolation {name!r} is not one of {sorted(INTERPOLATIONS)}") from None


def cover_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """The smallest size with the image's aspect ratio that covers ``target`` (H, W); the other side is floored.

    For a square target this is "shorter side to the target", computed as torchvision's ``Resize(size)``
    computes it (``int(size * long / short)``), so the classic pipeline's sizes are reproduced exactly.
    """
    target_h, target_w = target
    if target_h * width >= target_w * height:  # the height binds
        return target_h, int(target_h * width / height)
    return int(target_w * height / width), target_w


def resize_to_cover(image: torch.Tensor, target: tuple[int, int], *, interpolation: str = "bilinear") -> torch.Tensor:
    """Resize uint8 (3, H, W) or (N, 3, H, W), aspect kept, to ``cover_size``; unchanged when already that size."""
    height, width = image.shape[-2:]
    size = cover_size(height, width, target)
    if size == (height, width):
        return image
    if size[0] * size[1] > MAX_RESIZED_PIXELS:
        raise ValueError(f"a {width}x{height} image resized to cover {target[1]}x{target[0]} would be "
                         f"{size[1]}x{size[0]} = {size[0] * size[1]:,} pixels, over the limit of "
                         f"{MAX_RESIZED_PIXELS:,}: its aspect ratio is too extreme for this view (crop the image, "
                         "or use the center or flip protocol)")
    return _resize(image, size, interpolation)


def _resize(image: torch.Tensor, size: tuple[int, int], interpolation: str,
            box: tuple[float, float, float, float] | None = None) -> torch.Tensor:
    """PIL's resize of a uint8 (3, H, W) or (N, 3, H, W) image (of its ``box`` region) to ``size`` (H, W)."""
    if image.dim() == 4:
        return torch.stack([_resize(one, size, interpolation, box) for one in image])
    if image.dtype != torch.uint8 or image.shape[0] != 3:
        raise ValueError(f"expected a decoded (3, H, W) uint8 image, got {image.dtype} of shape {tuple(image.shape)}")
    interpolation_mode(interpolation)  # the same error for an unknown name as everywhere else
    resized = to_pil(image).resize((size[1], size[0]), PIL_FILTERS[interpolation], box=box)
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1).contiguous()


def resize_and_crop(image: torch.Tensor, target: tuple[int, int], crop: tuple[int, int], *,
                    interpolation: str = "bilinear") -> torch.Tensor:
    """``resize_to_cover(image, target)`` centre-cropped to ``crop`` (H, W), padded where the crop is larger.

    For an aspect ratio over ``BOX_RESIZE_RATIO``:1 only the crop's region is resized, so a long thin
    strip costs what a photo costs instead of the whole resized strip.
    """
    height, width = image.shape[-2:]
    size = cover_size(height, width, target)
    if size == (height, width) or size[0] * size[1] <= BOX_RESIZE_RATIO * target[0] * target[1]:
        return TF.center_crop(resize_to_cover(image, target, interpolation=interpolation), list(crop))
    kept_h, kept_w = min(crop[0], size[0]), min(crop[1], size[1])  # the crop's region in the resized image
    top, left = int(round((size[0] - kept_h) / 2.0)), int(round((size[1] - kept_w) / 2.0))  # as center_crop
    scale_h, scale_w = height / size[0], width / size[1]
    box = (left * scale_w, top * scale_h, (left + kept_w) * scale_w, (top + kept_h) * scale_h)
    return TF.center_crop(_resize(image, (kept_h, kept_w), interpolation, box), list(crop))


def fit_to_size(image: torch.Tensor, size: tuple[int, int], *, interpolation: str = "bilinear") -> torch.Tensor:
    """Resize (C, H, W) or (N, C, H, W) so it covers ``size`` (H, W), then centre-crop to it."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return resize_and_crop(image, size, size, interpolation=interpolation)


def fit_within(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, so that neither side is over ``max_side``; unchanged if it fits."""
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """(C, H, W) uint8 scaled down (antialiased, aspect kept) so that neither side is over ``max_side``."""
    width, height = fit_within(image.shape[-1], image.shape[-2], max_side)
    if (height, width) == tuple(image.shape[-2:]):
        return image
    return TF.resize(image, [height, width], antialias=True)


def center_view(image: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """Shorter side to ``resize_size``, centre crop of ``input_size`` (it pads when the crop is larger)."""
    return resize_and_crop(image, (preprocess.resize_size,) * 2, (preprocess.input_size,) * 2,
                           interpolation=preprocess.interpolation)


def default_scales(preprocess: Preprocess) -> tuple[int, ...]:
    """The paper's multi-scale sizes for 224-pixel models, proportionally smaller for smaller models."""
    return tuple(round(s * preprocess.input_size / 224) for s in PAPER_SCALES)


def eval_views(image: torch.Tensor, preprocess: Preprocess, *, protocol: str = "center",
               scales: tuple[int, ...] | None = None) -> list[torch.Tensor]:
    """The uint8 views of one (3, H, W) image that an evaluation protocol averages over.

    ``center``: one centre crop; ``flip``: it and its mirror; ``10crop``: the corners and centre of the
    resized image and their mirrors; ``multiscale``: the whole image with its shorter side at each of
    ``scales`` (default ``default_scales``), and its mirror.
    """
    if protocol == "center":
        return [center_view(image, preprocess)]
    if protocol == "flip":
        center = center_view(image, preprocess)
        return [center, TF.horizontal_flip(center)]
    if protocol == "10crop":
        resized = resize_to_cover(image, (preprocess.resize_size,) * 2, interpolation=preprocess.interpolation)
        return list(TF.ten_crop(resized, [preprocess.input_size]))
    if protocol == "multiscale":
        views = []
        for scale in scales or default_scales(preprocess):
            resized = resize_to_cover(image, (scale, scale), interpolation=preprocess.interpolation)
            views += [resized, TF.horizontal_flip(resized)]
        return views
    raise ValueError(f"protocol={protocol!r} is not one of {PROTOCOLS}")


def to_model_input(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """uint8 (3, H, W) or (N, 3, H, W) -> float32 ``(x / 255 - mean) / std``, the model's input."""
    if images.dim() == 3:
        return normalize(images[None], preprocess.mean, preprocess.std)[0]
    return normalize(images, preprocess.mean, preprocess.std)


class EvalTransform:
    """``center_view`` then ``to_model_input``: a decoded image (tensor or PIL) -> the model's (3, S, S) input."""

    def __init__(self, preprocess: Preprocess = IMAGENET_PREPROCESS) -> None:
        interpolation_mode(preprocess.interpolation)  # a bad name fails here, not on the first image
        self.preprocess = preprocess

    def __call__(self, image: torch.Tensor | Image.Image) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = pil_to_rgb(image)
        return to_model_input(center_view(image, self.preprocess), self.preprocess)

    def __repr__(self) -> str:
        return f"EvalTransform({self.preprocess})"


def eval_transform(preprocess: Preprocess = IMAGENET_PREPROCESS) -> EvalTransform:
    """The one evaluation transform of ``preprocess`` (training reports, ``eval``, ``predict``, export checks)."""
    return EvalTransform(preprocess)
