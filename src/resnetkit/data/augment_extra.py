"""The further augmentations: the seeds' rotation, width/height shift, brightness, contrast, cutout and random
erasing, and torchvision's automatic policies (TrivialAugment, RandAugment, AutoAugment, AugMix).

Small images get them batch-wise on the uint8 batch, each one vectorised operation for the whole batch
(no per-image Python): rotation and shift are one ``affine_grid`` + ``grid_sample`` with a matrix per
sample; brightness and contrast one fused multiply-add per pixel; cutout and random erasing one masked
``where`` whose rectangles come from comparing row/column indices with per-sample bounds. Large images
get the torchvision v2 equivalents per sample in the loader workers (``with_worker_transforms``).

Conventions follow the libraries the seeds use: shifts are fractions of the side (Keras'
``width_shift_range``), edges are filled by replicating the border (Keras' ``fill_mode="nearest"``),
brightness and contrast factors are uniform in ``[1 - x, 1 + x]`` (torchvision's ``ColorJitter``), cutout
is one ``side`` x ``side`` hole centred anywhere in the image (DeVries & Taylor 2017, clipped at the
border), random erasing follows torchvision's ``RandomErasing`` (area fraction ``erasing_scale``, aspect
ratio 0.3..3.3). Both occlusions fill with the dataset's mean colour: zero after normalisation, as the
reference implementations (which erase normalised tensors) do.

The automatic policies are torchvision's own transforms (``transforms.v2``), applied to each image on its own
(a policy given a batch would draw one operation for all of it), after the crop and flip and before the rest,
in the order of torchvision's reference recipes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..config import AUTO_AUGMENTS
from ..config.fields import check_count

ERASING_RATIO = (0.3, 3.3)  # torchvision RandomErasing's aspect-ratio range
RANDAUGMENT_BINS = 31  # torchvision RandAugment's default: magnitudes 0..30
MAX_RANDAUGMENT_OPS = 16  # far past the 1-3 of the papers: a typo, not a choice
GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class ExtraAugment:
    """Which of the further augmentations are on, and their ranges; all zeros is the identity."""

    rotation: float = 0.0  # degrees: angle uniform in [-rotation, rotation]
    width_shift: float = 0.0  # fraction of the width: shift uniform in [-w * W, w * W] pixels
    height_shift: float = 0.0
    brightness: float = 0.0  # factor uniform in [1 - b, 1 + b]
    contrast: float = 0.0  # factor uniform in [1 - c, 1 + c], blending with the image's mean grey
    cutout: int = 0  # side of the square hole, pixels
    random_erasing: float = 0.0  # probability per image
    erasing_scale: tuple[float, float] = (0.02, 0.33)  # erased area as a fraction of the image
    auto_augment: str = "none"  # one of config.AUTO_AUGMENTS
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9  # of RandAugment's 31 bins (0-30)

    def __post_init__(self) -> None:
        checks = [("rotation", self.rotation, 0.0, 180.0), ("width_shift", self.width_shift, 0.0, 1.0),
                  ("height_shift", self.height_shift, 0.0, 1.0), ("brightness", self.brightness, 0.0, 1.0),
                  ("contrast", self.contrast, 0.0, 1.0), ("random_erasing", self.random_erasing, 0.0, 1.0)]
        for name, value, low, high in checks:
            if not low <= value <= high:
                raise ValueError(f"{name}={value} must be in [{low:g}, {high:g}]")
        if self.cutout < 0:
            raise ValueError(f"cutout={self.cutout} must be >= 0 (the hole's side in pixels)")
        if self.auto_augment not in AUTO_AUGMENTS:
            raise ValueError(f"auto_augment={self.auto_augment!r} is not one of {', '.join(AUTO_AUGMENTS)}")
        check_count("randaugment_ops", self.randaugment_ops, minimum=1, maximum=MAX_RANDAUGMENT_OPS,
                    meaning="operations per image")
        check_count("randaugment_magnitude", self.randaugment_magnitude, minimum=0, maximum=RANDAUGMENT_BINS - 1,
                    meaning="RandAugment's strength")
        low, high = (tuple(self.erasing_scale) + (None, None))[:2]
        if len(self.erasing_scale) != 2 or not 0.0 < low <= high < 1.0:  # type: ignore[operator]
            raise ValueError(f"erasing_scale={tuple(self.erasing_scale)} must be two area fractions "
                             "0 < low <= high < 1, e.g. 0.02 0.33")

    @property
    def enabled(self) -> bool:
        return any((self.rotation, self.width_shift, self.height_shift, self.brightness, self.contrast,
                    self.cutout, self.random_erasing, self.auto_augment != "none"))

    @classmethod
    def from_config(cls, config: Any) -> ExtraAugment:
        """The options of a ``TrainConfig``'s augment section (same field names)."""
        a = config.augment
        return cls(rotation=a.rotation, width_shift=a.width_shift, height_shift=a.height_shift,
                   brightness=a.brightness, contrast=a.contrast, cutout=a.cutout,
                   random_erasing=a.random_erasing, erasing_scale=tuple(a.erasing_scale),  # type: ignore[arg-type]
                   auto_augment=a.auto_augment, randaugment_ops=a.randaugment_ops,
                   randaugment_magnitude=a.randaugment_magnitude)

    def policy(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """torchvision's transform for ``auto_augment`` (on one uint8 image, C x H x W), or None when it is off."""
        return None if self.auto_augment == "none" else POLICIES[self.auto_augment](self)


def _policies() -> dict[str, Callable[[ExtraAugment], Any]]:
    from torchvision.transforms import v2

    return {
        "trivialaugment": lambda o: v2.TrivialAugmentWide(),
        "randaugment": lambda o: v2.RandAugment(num_ops=o.randaugment_ops, magnitude=o.randaugment_magnitude,
                                                num_magnitude_bins=RANDAUGMENT_BINS),
        "autoaugment-imagenet": lambda o: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
        "autoaugment-cifar10": lambda o: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
        "autoaugment-svhn": lambda o: v2.AutoAugment(v2.AutoAugmentPolicy.SVHN),
        "augmix": lambda o: v2.AugMix(),
    }


POLICIES = _policies()  # every name of config.AUTO_AUGMENTS but "none" (a test keeps the two the same)


def _like(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Float results back to uint8 (rounded, clamped) when the input was uint8; float inputs (0..255) stay float."""
    return out.round_().clamp_(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else out


def _uniform(n: int, low: float, high: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, device=like.device, generator=generator)


def affine_batch(images: torch.Tensor, *, angle: torch.Tensor, shift_x: torch.Tensor,
                 shift_y: torch.Tensor) -> torch.Tensor:
    """Rotate each image of a (N, C, H, W) batch by ``angle[n]`` degrees (counter-clockwise, about its centre),
    then shift it by ``shift_x[n]``/``shift_y[n]`` pixels (right/down): one ``grid_sample`` for the batch,
    bilinear, border pixels replicated. uint8 in, uint8 out; float (0..255) in, float out."""
    n, _, height, width = images.shape
    radians = angle.float() * (math.pi / 180)
    cos, sin = torch.cos(radians), torch.sin(radians)
    # theta maps each output pixel to where it reads the input, in affine_grid's [-1, 1] units (a pixel is
    # 2 / side there); the H/W factors keep rotations of non-square images rigid.
    tx, ty = -2 * shift_x.float() / width, -2 * shift_y.float() / height
    theta = torch.stack([torch.stack([cos, -sin * height / width, cos * tx - sin * ty * height / width], 1),
                         torch.stack([sin * width / height, cos, sin * tx * width / height + cos * ty], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    # Channels-last input: the CPU kernel then reads each sampled pixel's channels together (~3x faster).
    pixels = images.to(torch.float32, memory_format=torch.channels_last)
    out = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _like(out, images)


def random_affine(images: torch.Tensor, *, rotation: float, width_shift: float, height_shift: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``affine_batch`` with each image's angle and shifts drawn uniformly from the ranges."""
    n, _, height, width = images.shape
    return affine_batch(images, angle=_uniform(n, -rotation, rotation, images, generator),
                        shift_x=_uniform(n, -width_shift * width, width_shift * width, images, generator),
                        shift_y=_uniform(n, -height_shift * height, height_shift * height, images, generator))


def brightness_contrast_batch(images: torch.Tensor, *, brightness: torch.Tensor,
                              contrast: torch.Tensor) -> torch.Tensor:
    """``b * (c * x + (1 - c) * mean_grey(x))`` per image (rounded and clamped for uint8): torchvision's
    ``adjust_brightness`` then ``adjust_contrast`` in one pass (without torchvision's clamp between the two)."""
    n, channels = images.shape[:2]
    b, c = brightness.view(n, 1, 1, 1).float(), contrast.view(n, 1, 1, 1).float()
    # The mean grey is the luma-weighted sum of the channel means: no float copy of the batch for it.
    means = images.sum((2, 3), dtype=torch.float32) / (images.shape[2] * images.shape[3])
    if channels == 3:
        grey = means @ torch.tensor(GRAY, device=images.device)
    else:
        grey = means.mean(1)
    # b * (c * x + (1 - c) * grey) as one fused x * gain + bias over the pixels.
    out = torch.addcmul(b * (1 - c) * grey.view(n, 1, 1, 1), images.float(), b * c)
    return _like(out, images)


def random_brightness_contrast(images: torch.Tensor, *, brightness: float, contrast: float,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """``brightness_contrast_batch`` with factors uniform in ``[1 - brightness, 1 + brightness]`` (and contrast)."""
    n = images.shape[0]
    return brightness_contrast_batch(images, brightness=_uniform(n, 1 - brightness, 1 + brightness, images, generator),
                                     contrast=_uniform(n, 1 - contrast, 1 + contrast, images, generator))


def box_mask(shape: torch.Size, top: torch.Tensor, left: torch.Tensor, bottom: torch.Tensor, right: torch.Tensor,
             ) -> torch.Tensor:
    """(N, 1, H, W) mask of rows [top, bottom) x cols [left, right) per image, from index comparisons."""
    rows = torch.arange(shape[2], device=top.device)
    cols = torch.arange(shape[3], device=top.device)
    inside = (((rows >= top[:, None]) & (rows < bottom[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < right[:, None]))[:, None, :])
    return inside[:, None]


def cutout_mask(images: torch.Tensor, *, side: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One ``side`` x ``side`` hole per image, centred uniformly anywhere, clipped at the border."""
    n, _, height, width = images.shape
    cy = torch.randint(0, height, (n,), device=images.device, generator=generator)
    cx = torch.randint(0, width, (n,), device=images.device, generator=generator)
    half = side // 2
    return box_mask(images.shape, (cy - half).clamp(min=0), (cx - half).clamp(min=0),
                    (cy - half + side).clamp(max=height), (cx - half + side).clamp(max=width))


def erasing_mask(images: torch.Tensor, *, probability: float, scale: tuple[float, float],
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """With ``probability``, a rectangle of area fraction ``scale`` and aspect 0.3..3.3 lying inside the image."""
    n, _, height, width = images.shape
    area = _uniform(n, *scale, images, generator) * (height * width)
    ratio = torch.exp(_uniform(n, math.log(ERASING_RATIO[0]), math.log(ERASING_RATIO[1]), images, generator))
    # torchvision retries a box that does not fit up to 10 times; clipping it to the image keeps this one pass.
    box_h = torch.sqrt(area * ratio).round().clamp(1, height).long()
    box_w = torch.sqrt(area / ratio).round().clamp(1, width).long()
    top = (torch.rand(n, device=images.device, generator=generator) * (height - box_h + 1)).long()
    left = (torch.rand(n, device=images.device, generator=generator) * (width - box_w + 1)).long()
    erase = torch.rand(n, device=images.device, generator=generator) < probability
    bottom = torch.where(erase, top + box_h, top)  # an empty box for the images left alone
    return box_mask(images.shape, top, left, bottom, left + box_w)


def random_cutout(images: torch.Tensor, *, side: int, fill: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``cutout_mask`` filled with ``fill`` (per channel)."""
    return torch.where(cutout_mask(images, side=side, generator=generator), fill.view(1, -1, 1, 1), images)


def random_erase(images: torch.Tensor, *, probability: float, scale: tuple[float, float], fill: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``erasing_mask`` filled with ``fill`` (per channel)."""
    mask = erasing_mask(images, probability=probability, scale=scale, generator=generator)
    return torch.where(mask, fill.view(1, -1, 1, 1), images)


BatchOp = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


class BatchPipeline:
    """``base`` (crop/flip, or None) followed by the ``ExtraAugment`` ops that are on, as one batch augment.

    Order: crop and flip on the uint8 batch (one gather), the automatic policy image by image, then, in float, rotation/shift and
    brightness/contrast, then both occlusions as one masked fill, and one rounding back to uint8: two
    conversions for the whole chain instead of two per op. ``fill`` is the mean colour in 0..255 per channel.
    """

    def __init__(self, options: ExtraAugment, *, base: BatchOp | None = None,
                 fill: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        self.options, self.base, self.policy = options, base, options.policy()
        self.fill = torch.tensor([round(v) for v in fill], dtype=torch.uint8)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        o = self.options
        if self.base is not None:
            images = self.base(images, generator)
        if self.policy is not None:  # one draw per image; torchvision's policies use the global RNG (checkpointed)
            images = torch.stack([self.policy(image) for image in images])
        affine, colour = bool(o.rotation or o.width_shift or o.height_shift), bool(o.brightness or o.contrast)
        x = images.to(torch.float32, memory_format=torch.channels_last) if affine or colour else images
        if affine:
            x = random_affine(x, rotation=o.rotation, width_shift=o.width_shift, height_shift=o.height_shift,
                              generator=generator)
        if colour:
            x = random_brightness_contrast(x, brightness=o.brightness, contrast=o.contrast, generator=generator)
        masks = []
        if o.cutout:
            masks.append(cutout_mask(x, side=o.cutout, generator=generator))
        if o.random_erasing:
            masks.append(erasing_mask(x, probability=o.random_erasing, scale=o.erasing_scale, generator=generator))
        if masks:
            fill = self.fill.to(device=x.device, dtype=x.dtype)[: x.shape[1]].view(1, -1, 1, 1)
            x = torch.where(masks[0] if len(masks) == 1 else masks[0] | masks[1], fill, x)
        return _like(x, images) if x.dtype != images.dtype else x


def with_worker_transforms(options: ExtraAugment, transform: Callable[[Any], Any], *, input_size: int) -> Any:
    """``transform`` (a large-image training pipeline ending in ``Normalize``) wrapped with the torchvision v2
    equivalents, run per sample in the loader workers: rotation/shift (``RandomAffine``, black fill: v2 has no
    border mode) and brightness/contrast (``ColorJitter``) before it, the automatic policy inside it (after its crop
    and flip, on uint8), the occlusions (``RandomErasing`` with
    value 0, the mean colour once normalised) after it. Cutout becomes an always-on square ``RandomErasing``
    of the same area."""
    from torchvision.transforms import v2

    before: list[Any] = [v2.ToImage()]
    if options.rotation or options.width_shift or options.height_shift:
        before.append(v2.RandomAffine(degrees=options.rotation, translate=(options.width_shift, options.height_shift),
                                      interpolation=v2.InterpolationMode.BILINEAR))
    if options.brightness or options.contrast:
        before.append(v2.ColorJitter(brightness=options.brightness, contrast=options.contrast))
    policy = options.policy()
    if policy is not None:  # after the crop and flip, on the uint8 image: before the pipeline's float conversion
        steps = list(transform.transforms)
        at = next(i for i, step in enumerate(steps) if isinstance(step, v2.ToDtype))
        transform = v2.Compose([*steps[:at], policy, *steps[at:]])
    after: list[Any] = []
    if options.cutout:
        area = min(1.0, (options.cutout / input_size) ** 2)
        after.append(v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0))
    if options.random_erasing:
        after.append(v2.RandomErasing(p=options.random_erasing, scale=tuple(options.erasing_scale),
                                      ratio=ERASING_RATIO, value=0))
    return v2.Compose([*before, transform, *after])
