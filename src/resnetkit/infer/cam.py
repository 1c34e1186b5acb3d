"""Grad-CAM (Selvaraju et al., 2017) on the last stage's feature map, and heat-map overlays.

Written with autograd in a few lines rather than taken from a package: the maintained Grad-CAM
libraries (pytorch-grad-cam and the like) bring OpenCV and scikit-image along for what is one
gradient, one weighted sum and one resize here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..config import Preprocess
from ..data.preprocess import fit_within
from .transforms import crop_box

# Overlays written by `resnetkit predict --cam` are at the image's size up to this many pixels a side: a
# full-size heat-map of a 9000x9000 photo and its colour map cost gigabytes.
MAX_OVERLAY_SIDE = 2048


def grad_cam(model: torch.nn.Module, batch: torch.Tensor, targets: list[int] | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class activation maps for ``batch`` (N, C, H, W) on the last stage's feature map.

    Each map weights the feature channels by the mean gradient of the target class's logit over them,
    keeps the positive part and is scaled to [0, 1] (all zeros where no evidence is positive).
    ``targets`` default to the predicted classes. Returns the maps (N, h, w) at feature-map
    resolution and the logits (N, num_classes).
    """
    with torch.enable_grad():
        # requires_grad on the input keeps a graph even when the weights are frozen.
        features = model.forward_features(batch.detach().requires_grad_(True))  # = forward_stages(x)[-1]
        logits = model.forward_head(features)
        chosen = logits.argmax(1) if targets is None else torch.as_tensor(targets, device=logits.device)
        # Samples are independent in eval mode, so one backward pass serves the whole batch.
        score = logits.gather(1, chosen.view(-1, 1)).sum()
        (gradients,) = torch.autograd.grad(score, features)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    maps = F.relu((weights * features.detach()).sum(dim=1))
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return maps / peak, logits.detach()


def cam_to_image(cam: torch.Tensor, width: int, height: int, preprocess: Preprocess, *,
                 max_side: int | None = None) -> np.ndarray:
    """Place a feature-map CAM (h, w) over the original image: (height, width) float32 in [0, 1].

    The map covers only the centre crop the model saw; pixels the crop cut away get zero. With
    ``max_side``, the map is made for the image scaled down to fit it (aspect kept), so a huge photo's
    heat-map costs no more memory than a small one's.
    """
    left, top, right, bottom = crop_box(width, height, preprocess)
    if max_side is not None and max(width, height) > max_side:  # the crop box in the scaled image's pixels
        scale = max_side / max(width, height)
        left, top, right, bottom = (v * scale for v in (left, top, right, bottom))
        width, height = fit_within(width, height, max_side)
    box_w, box_h = max(1, round(right - left)), max(1, round(bottom - top))
    upsampled = F.interpolate(cam[None, None].float(), size=(box_h, box_w), mode="bilinear",
                              align_corners=False)[0, 0].clamp_min(0)
    upsampled = (upsampled / upsampled.max().clamp_min(1e-12)).cpu().numpy()  # interpolation lowers the peak
    full = np.zeros((height, width), dtype=np.float32)
    x0, y0 = round(left), round(top)
    # The overlap of the crop box with the image, in both coordinate frames.
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(width, x0 + box_w), min(height, y0 + box_h)
    if ix1 > ix0 and iy1 > iy0:
        full[iy0:iy1, ix0:ix1] = upsampled[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
    return full


# Matplotlib's jet segments (x, value) per channel: dark blue -> cyan -> yellow -> dark red.
_JET = (((0.0, 0.35, 0.66, 0.89, 1.0), (0.0, 0.0, 1.0, 1.0, 0.5)),
        ((0.0, 0.125, 0.375, 0.64, 0.91, 1.0), (0.0, 0.0, 1.0, 1.0, 0.0, 0.0)),
        ((0.0, 0.11, 0.34, 0.65, 1.0), (0.5, 1.0, 1.0, 0.0, 0.0)))


def colormap(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8 with matplotlib's jet if installed, else the same ramp built in."""
    try:
        from matplotlib import colormaps

        rgb = colormaps["jet"](values)[..., :3]
    except ImportError:
        rgb = np.stack([np.interp(values, xs, ys) for xs, ys in _JET], axis=-1)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.5) -> Image.Image:
    """The image with the coloured heat-map blended on it.

    ``heatmap`` is at the image's size, or at the smaller size ``grad_cam(max_side=...)`` made it for
    (the image is then scaled down to it, and so is the blend).
    """
    if heatmap.shape != (image.height, image.width):
        width, height = fit_within(image.width, image.height, max(heatmap.shape))
        if heatmap.shape != (height, width):
            raise ValueError(f"heat-map of shape {heatmap.shape} for an image of {image.width}x{image.height}")
        image = image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=2.0)  # reduce() first: bounded
    heat = Image.fromarray(colormap(heatmap))
    return Image.blend(image.convert("RGB"), heat, alpha)
