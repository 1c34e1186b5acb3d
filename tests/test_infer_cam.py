"""Grad-CAM peaks where the evidence is, on the original image's pixels; overlays and annotations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resnetkit import Preprocess, create_model
from resnetkit.config import ModelInfo
from resnetkit.infer import Predictor, colormap, draw_label, overlay
from resnetkit.infer import cam as cam_module

SIZE, PATCH = 16, 4
# Identity normalisation: a uint8 image / 255 is exactly the tensor the model was trained on.
PLAIN = Preprocess(input_size=SIZE, resize_size=SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


pytestmark = pytest.mark.usefixtures("one_thread")


def _patch_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dim noise; class 1 images also hold a bright square at a random place (``corners`` gives it)."""
    x = torch.rand(n, 3, SIZE, SIZE, generator=generator) * 0.3
    labels = torch.randint(0, 2, (n,), generator=generator)
    corners = torch.randint(0, SIZE - PATCH + 1, (n, 2), generator=generator)
    for image, label, (row, col) in zip(x, labels, corners.tolist()):
        if label == 1:
            image[:, row:row + PATCH, col:col + PATCH] = 1.0
    return x, labels, corners


@pytest.fixture(scope="module")
def patch_predictor() -> Predictor:
    """A resnet20 trained for a few steps to answer "is there a bright square?" (about a second on CPU)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = create_model("resnet20", num_classes=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(12):
        x, y, _ = _patch_images(32, generator)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predictor = Predictor(model, ModelInfo(model=model.config, class_names=["plain", "square"], preprocess=PLAIN),
                          device="cpu")
    x, y, _ = _patch_images(64, generator)
    with torch.no_grad():
        assert (predictor.model(x).argmax(1) == y).float().mean() >= 0.95, "the toy task did not train"
    return predictor


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_grad_cam_peaks_on_the_bright_square(patch_predictor):
    x, y, corners = _patch_images(24, torch.Generator().manual_seed(1))
    keep = y == 1
    images = [_to_uint8(image) for image in x[keep]]
    cams = patch_predictor.grad_cam(images, target="square")
    for cam, (row, col) in zip(cams, corners[keep].tolist()):
        assert cam.heatmap.shape == (SIZE, SIZE) and cam.label == "square" and cam.index == 1
        peak_row, peak_col = np.unravel_index(cam.heatmap.argmax(), cam.heatmap.shape)
        # The last stage is 4x4 here, so allow one feature cell (4 px) around the square.
        assert row - PATCH <= peak_row < row + 2 * PATCH and col - PATCH <= peak_col < col + 2 * PATCH
        assert cam.heatmap.max() == pytest.approx(1.0) and cam.heatmap.min() >= 0.0


def test_grad_cam_maps_back_through_resize_and_centre_crop(patch_predictor):
    # 32x48: resized to 16x24, centre-cropped to 16x16, so the model sees columns 8..39 of the original.
    big = np.full((32, 48, 3), 40, np.uint8)
    big[4:12, 26:34] = 255  # the square, 8x8 in the original (4x4 after resizing)
    [cam] = patch_predictor.grad_cam(big, target=1)
    assert cam.heatmap.shape == (32, 48)
    peak_row, peak_col = np.unravel_index(cam.heatmap.argmax(), cam.heatmap.shape)
    assert 0 <= peak_row < 20 and 18 <= peak_col < 42
    assert np.all(cam.heatmap[:, :8] == 0) and np.all(cam.heatmap[:, 40:] == 0)  # cropped away: no evidence


def test_a_large_images_heat_map_can_be_made_at_a_smaller_size(patch_predictor):
    # The 32x48 scene above at 5x (160x240); with max_side=48 its heat-map is the full-size one, scaled down.
    big = np.full((160, 240, 3), 40, np.uint8)
    big[20:60, 130:170] = 255
    [full] = patch_predictor.grad_cam(big, target=1)
    [small] = patch_predictor.grad_cam(big, target=1, max_side=48)
    assert full.heatmap.shape == (160, 240) and small.heatmap.shape == (32, 48)
    assert small.index == full.index and small.probability == pytest.approx(full.probability)
    assert np.all(small.heatmap[:, :8] == 0) and np.all(small.heatmap[:, 40:] == 0)  # the crop, scaled
    pooled = full.heatmap.reshape(32, 5, 48, 5).mean(axis=(1, 3))
    assert np.abs(pooled - small.heatmap).max() < 0.1
    [same] = patch_predictor.grad_cam(big, target=1, max_side=240)  # already fits: the image's own size
    np.testing.assert_array_equal(same.heatmap, full.heatmap)


def test_different_classes_give_different_maps_and_default_is_the_prediction(patch_predictor):
    x, y, _ = _patch_images(8, torch.Generator().manual_seed(2))
    image = _to_uint8(x[(y == 1).nonzero()[0, 0]])
    [square] = patch_predictor.grad_cam(image, target="square")
    [plain] = patch_predictor.grad_cam(image, target="plain")
    [default] = patch_predictor.grad_cam(image)
    assert not np.allclose(square.heatmap, plain.heatmap)
    assert default.label == patch_predictor.predict(image)[0].label == "square"
    np.testing.assert_allclose(default.heatmap, square.heatmap)
    with pytest.raises(ValueError, match="unknown class 'dog'.*plain, square"):
        patch_predictor.grad_cam(image, target="dog")
    with pytest.raises(ValueError, match="index 7 is out of range"):
        patch_predictor.grad_cam(image, target=7)


def test_grad_cam_works_with_frozen_weights():
    torch.manual_seed(0)
    trainable = create_model("resnet20").eval()
    frozen = create_model("resnet20").eval()
    frozen.load_state_dict(trainable.state_dict())
    frozen.requires_grad_(False)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps, logits = cam_module.grad_cam(frozen, x)
    assert maps.shape == (2, 8, 8) and logits.shape == (2, 10)
    assert float(maps.min()) >= 0.0
    assert maps.flatten(1).amax(1).tolist() == pytest.approx([1.0, 1.0])  # a real map per image, not all zeros
    # The same maps as with the weights trainable: freezing changes nothing but what gets gradients.
    expected_maps, expected_logits = cam_module.grad_cam(trainable, x)
    torch.testing.assert_close(maps, expected_maps)
    torch.testing.assert_close(logits, expected_logits)
    # And Grad-CAM's definition, image by image: channel weights = mean gradient of the top logit, relu, peak 1.
    for image, cam in zip(x, maps):
        features = trainable.forward_features(image[None])
        top = trainable.forward_head(features)[0].max()
        (gradient,) = torch.autograd.grad(top, features)
        raw = torch.relu((gradient.mean(dim=(2, 3), keepdim=True) * features).sum(1)[0]).detach()
        torch.testing.assert_close(cam, raw / raw.max(), rtol=1e-4, atol=1e-4)  # batch of 1 against 2: other kernels


def test_built_in_jet_matches_matplotlib(monkeypatch):
    pytest.importorskip("matplotlib")
    values = np.linspace(0, 1, 101).reshape(1, -1)
    with_matplotlib = colormap(values).astype(int)
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    built_in = colormap(values).astype(int)
    assert np.abs(with_matplotlib - built_in).max() <= 5  # matplotlib looks values up in a 256-entry table
    assert tuple(built_in[0, 0]) == (0, 0, 128) and tuple(built_in[0, -1]) == (128, 0, 0)


def test_overlay_and_label_drawing_shapes():
    image = Image.new("RGB", (30, 20), (0, 128, 0))
    heat = np.zeros((20, 30), np.float32)
    heat[5:10, 5:10] = 1.0
    blended = overlay(image, heat)
    assert blended.size == (30, 20) and blended.getpixel((7, 7)) != blended.getpixel((25, 15))
    with pytest.raises(ValueError, match="heat-map of shape"):
        overlay(image, heat.T)
    labelled = draw_label(image, "cat  97.0%")
    assert min(labelled.size) >= 256 and labelled.size[0] / labelled.size[1] == pytest.approx(1.5)
    top, bottom = np.asarray(labelled)[:20], np.asarray(labelled)[-20:]
    assert (top != top[0, 0]).any() and (bottom == bottom[0, 0]).all()  # text drawn at the top, picture untouched below


def test_cam_names_must_match_the_images_and_a_superscript_digit_is_no_index(tmp_path):
    """grad_cam zipped 3 images with 1 name and returned 1 heat-map; '³' passed isdigit() and failed in int()."""
    from resnetkit import create_model
    from resnetkit.config import CIFAR_PREPROCESS, ModelInfo
    from resnetkit.data.classes import resolve_class
    from resnetkit.infer import Predictor
    from resnetkit.serve.auth import presented_key

    model = create_model("resnet20").eval()
    predictor = Predictor(model, ModelInfo(model=model.config, preprocess=CIFAR_PREPROCESS), device="cpu")
    images = [np.zeros((32, 32, 3), np.uint8)] * 3
    with pytest.raises(ValueError, match="1 names for 3 images"):
        predictor.grad_cam(images, names=["x"])
    with pytest.raises(ValueError) as caught:
        resolve_class("³", [str(i) for i in range(10)], num_classes=10)
    assert "invalid literal" not in str(caught.value)
    # An empty X-API-Key header beside a right Authorization header is no key of its own (401 "wrong API key").
    assert presented_key({b"x-api-key": b"", b"authorization": b"Bearer sekret"}) == b"sekret"
