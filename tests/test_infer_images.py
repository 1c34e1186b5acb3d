"""Any real-world image file works, and a bad one fails alone with its name in the error."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit import create_model, save_model
from resnetkit.infer import ImageLoadError, Predictor, expand_inputs, load_image

RED = (220, 30, 30)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    path = tmp_path_factory.mktemp("model") / "resnet20.safetensors"
    torch.manual_seed(0)
    save_model(create_model("resnet20"), path, class_names=[f"class{i}" for i in range(10)])
    return Predictor.from_file(path, device="cpu")


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_grayscale_and_bilevel_become_rgb_with_equal_channels(tmp_path):
    gray = _save(Image.new("L", (12, 8), 77), tmp_path / "gray.png")
    bilevel = _save(Image.new("1", (12, 8), 1), tmp_path / "bilevel.png")
    for path, value in ((gray, 77), (bilevel, 255)):
        image = load_image(path)
        assert image.mode == "RGB" and image.size == (12, 8)
        assert np.all(np.asarray(image) == value)


def test_rgba_transparent_pixels_show_on_white_not_black(tmp_path):
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent black
    pixels[0, 0] = (*RED, 255)  # one opaque red pixel
    image = load_image(_save(Image.fromarray(pixels, "RGBA"), tmp_path / "rgba.png"))
    values = np.asarray(image)
    assert tuple(values[0, 0]) == RED
    assert np.all(values[1:, :] == 255)


def test_palette_with_and_without_transparency(tmp_path):
    palette = Image.new("RGB", (6, 6), RED).convert("P", palette=Image.Palette.ADAPTIVE)
    image = load_image(_save(palette, tmp_path / "p.png"))
    assert tuple(np.asarray(image)[0, 0]) == RED

    transparent = Image.new("P", (6, 6), 0)
    transparent.putpalette([*RED, 0, 0, 0] + [0] * 762)
    transparent.putpixel((0, 0), 1)
    _save(transparent, tmp_path / "pt.png", transparency=1)
    values = np.asarray(load_image(tmp_path / "pt.png"))
    assert tuple(values[0, 0]) == (255, 255, 255)  # the transparent index shows as background
    assert tuple(values[5, 5]) == RED


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (10, 10), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    r, g, b = np.asarray(load_image(path)).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 100%, 100%, 0) is red


def test_16_bit_png_is_scaled_by_range_not_truncated(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    path = _save(Image.fromarray(ramp), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    values = np.asarray(load_image(path))[..., 0].astype(int)
    assert values.min() == 0 and values.max() == 255
    expected = np.rint(ramp / 257.0)
    assert np.abs(values - expected).max() <= 1


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    # Stored 20 wide x 10 high, left half red; orientation 6 means "rotate 90 degrees clockwise to view".
    stored = Image.new("RGB", (20, 10), (255, 255, 255))
    stored.paste(RED, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(stored, tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    image = load_image(path)
    assert image.size == (10, 20)  # upright: taller than wide
    top, bottom = np.asarray(image)[2, 5], np.asarray(image)[17, 5]
    assert top[1] < 80 and bottom[1] > 200  # the red half is now at the top


def test_tiny_one_pixel_image_is_predicted(predictor, tmp_path):
    path = _save(Image.new("RGB", (1, 1), RED), tmp_path / "dot.png")
    [result] = predictor.predict(path, top_k=3)
    assert result.ok and len(result.labels) == 3


def test_decompression_bomb_is_refused_with_the_file_name(tmp_path, monkeypatch):
    path = _save(Image.new("L", (100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4_000)  # over 2x: PIL itself raises
    refused = r"bomb\.png: refused as a possible decompression bomb: "
    with pytest.raises(ImageLoadError, match=refused + r"Image size \(10000 pixels\) exceeds limit of 8000 pixels"):
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6_000)  # between 1x and 2x: PIL only warns, we refuse
    with pytest.raises(ImageLoadError, match=refused + r"100x100 = 10,000 pixels is over the limit of 6,000"):
        load_image(path)


def test_corrupt_files_fail_alone_and_the_batch_completes(predictor, tmp_path):
    good = _save(Image.new("RGB", (40, 30), RED), tmp_path / "good.jpg")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), RED).save(buffer, "PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[:60])
    inputs = [text, good, empty, truncated, tmp_path / "missing.jpg", tmp_path]
    results = predictor.predict(inputs, batch_size=2)
    assert [r.ok for r in results] == [False, True, False, False, False, False]
    for result, path in zip(results, inputs):
        assert result.source == str(path)
        if not result.ok:
            assert str(path) in result.error and not result.labels
    assert "not an image" in results[0].error and "empty" in results[2].error
    assert "no such file" in results[4].error and "folder" in results[5].error


def test_arrays_tensors_pil_and_bytes(predictor, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    path = _save(Image.fromarray(pixels), tmp_path / "noise.png")
    inputs = [path, Image.fromarray(pixels), pixels, torch.from_numpy(pixels).permute(2, 0, 1),
              path.read_bytes(), pixels.astype(np.float32) / 255]
    results = predictor.predict(inputs, top_k=10)
    reference = results[0].probabilities
    for result in results[1:]:
        assert result.ok and result.indices == results[0].indices
        assert np.allclose(result.probabilities, reference, atol=1e-6)
    assert [r.source for r in results[2:5]] == ["<array #2>", "<tensor #3>", "<bytes #4>"]
    # Floats outside 0..1 (0..255 values, a normalised tensor) are said, not clipped into a confident wrong answer.
    normalised = (torch.from_numpy(pixels).permute(2, 0, 1) / 255 - 0.5) / 0.25
    for wrong in (pixels.astype(np.float32), normalised):
        [result] = predictor.predict(wrong)
        assert not result.ok and "give floats in 0..1" in result.error


def test_batches_of_arrays_and_wrong_shapes(predictor):
    def same_as_alone(results, images, kind):
        assert [r.source for r in results] == [f"<{kind} #{i}>" for i in range(len(images))]
        for result, image in zip(results, images):
            [alone] = predictor.predict(image, top_k=10)
            assert result.ok and alone.ok, (result.error, alone.error)
            # All ten probabilities in class order (near-tied classes may swap places in the ranking).
            assert np.allclose(np.array(result.probabilities)[np.argsort(result.indices)],
                               np.array(alone.probabilities)[np.argsort(alone.indices)], atol=1e-6)

    generator = torch.Generator().manual_seed(0)
    batch = torch.rand(3, 3, 20, 20, generator=generator)
    batch[1] = 0.0  # three clearly different images, so a mixed-up order would show
    batch[2] = 1.0
    results = predictor.predict(batch, top_k=10)  # NCHW is a batch
    assert len(results) == 3
    same_as_alone(results, list(batch), "tensor")
    assert not np.allclose(results[1].probabilities, results[2].probabilities, atol=1e-6)

    arrays = np.random.default_rng(1).integers(0, 256, (2, 20, 20, 3), dtype=np.uint8)
    arrays[1] = 255
    results = predictor.predict(arrays, top_k=10)  # so is NHWC
    assert len(results) == 2
    same_as_alone(results, list(arrays), "array")

    [bad] = predictor.predict([np.zeros((20, 20, 7), np.uint8)])
    assert not bad.ok and not bad.labels
    assert bad.error == "<array #0>: an array of shape (20, 20, 7); expected HWC with 3 or 4 channels, or HW"
    seven_channels = predictor.predict(torch.zeros(2, 7, 20, 20))  # a batch of CHW images with 7 channels
    assert [r.ok for r in seven_channels] == [False, False]
    for i, result in enumerate(seven_channels):
        assert result.error.startswith(f"<tensor #{i}>: a tensor of shape (7, 20, 20); expected one image as CHW")


def test_expand_inputs_walks_folders_and_globs_keeps_named_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.jpg", "a/b/two.PNG", "a/readme.txt", "three.png"):
        (tmp_path / name).write_bytes(b"x")
    found = expand_inputs([str(tmp_path / "a"), str(tmp_path / "*.png"), str(tmp_path / "a/readme.txt"),
                           "https://example.com/cat.jpg"])
    assert found == [str(tmp_path / "a/b/two.PNG"), str(tmp_path / "a/one.jpg"), str(tmp_path / "three.png"),
                     str(tmp_path / "a/readme.txt"), "https://example.com/cat.jpg"]
    # A name with glob characters that exists is that file (x[1].png matched x1.png as a pattern), also in a folder
    # named so; a pattern that is no file still matches.
    for name in ("br/x[1].png", "br/x1.png", "Trip [2024]/cat.avif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert expand_inputs([str(tmp_path / "br/x[1].png")]) == [str(tmp_path / "br/x[1].png")]
    assert expand_inputs([str(tmp_path / "br/x[0-9].png")]) == [str(tmp_path / "br/x1.png")]
    assert expand_inputs([str(tmp_path / "Trip [2024]")]) == [str(tmp_path / "Trip [2024]/cat.avif")]  # AVIF listed
