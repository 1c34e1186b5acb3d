"""Images with an extreme aspect ratio or a huge size cost what a photo costs, never gigabytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from resnetkit.config import Preprocess
from resnetkit.data.preprocess import (BOX_RESIZE_RATIO, center_view, cover_size, eval_views, fit_within,
                                       fit_to_size, resize_to_cover)
from resnetkit.infer.annotate import MAX_ENLARGED_SIDE, enlarge
from resnetkit.infer.cam import overlay

PRE = Preprocess(resize_size=256, input_size=224)


def _image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, height, width), dtype=np.uint8))


def test_a_long_thin_strip_is_cropped_before_it_is_resized():
    strip = _image(1, 1_000_000)  # resized whole, it would be 256 x 256,000,000 (196 GB)
    view = center_view(strip, PRE)
    assert view.shape == (3, 224, 224)
    assert fit_to_size(strip, (32, 32)).shape == (3, 32, 32)
    tall = _image(200_000, 2)
    assert center_view(tall, PRE).shape == (3, 224, 224)


def test_the_crop_first_path_matches_the_full_resize_up_to_rounding():
    # 20:1, just past BOX_RESIZE_RATIO, small enough to resize whole for comparison.
    image = _image(30, 600, seed=1)
    height, width = cover_size(30, 600, (256, 256))
    assert height * width > BOX_RESIZE_RATIO * 256 * 256
    full = TF.center_crop(resize_to_cover(image, (256, 256)), [224])
    cropped = center_view(image, PRE)
    assert cropped.shape == full.shape
    assert (cropped.int() - full.int()).abs().max() <= 1


def test_an_ordinary_photo_takes_the_exact_path():
    image = _image(300, 450, seed=2)  # 3:2
    np.testing.assert_array_equal(center_view(image, PRE), TF.center_crop(resize_to_cover(image, (256, 256)), [224]))


def test_a_whole_image_view_of_a_strip_is_refused_with_its_size():
    with pytest.raises(ValueError, match=r"1000000x1 image .* over the limit of .*center or flip protocol"):
        eval_views(_image(1, 1_000_000), PRE, protocol="multiscale")


def test_annotating_a_strip_does_not_blow_it_up():
    strip = Image.new("RGB", (5000, 1))
    assert enlarge(strip).size == (5000, 1)  # not 1,280,000 x 256
    assert max(enlarge(Image.new("RGB", (100, 2))).size) <= MAX_ENLARGED_SIDE
    assert enlarge(Image.new("RGB", (32, 32))).size == (256, 256)


def test_overlay_accepts_a_heat_map_made_at_a_smaller_size():
    image = Image.new("RGB", (3000, 2000))
    width, height = fit_within(3000, 2000, 512)
    assert (width, height) == (512, 341)
    assert overlay(image, np.zeros((height, width), np.float32)).size == (512, 341)
    with pytest.raises(ValueError, match="heat-map of shape"):
        overlay(image, np.zeros((300, 512), np.float32))
