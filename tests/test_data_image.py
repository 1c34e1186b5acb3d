"""The one decoder: its rules (16-bit, alpha, palettes, frames, bombs) hold whichever library decodes the file,
and in training's in-memory datasets and ``resnetkit eval`` as in predict."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from awkward_images import png16
from PIL import Image

from resnetkit.data import decode_rgb, load_tree_in_memory, pil_to_rgb

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def _on_white(rgba: np.ndarray) -> np.ndarray:
    color, alpha = rgba[..., :3].astype(np.int64), rgba[..., 3:].astype(np.int64)
    return ((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def test_16_bit_is_rounded_to_8_bits_and_undoes_the_8_to_16_expansion():
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    for channels in (1, 2, 3, 4):
        pixels = original[..., :channels]
        decoded = decode_rgb(png16(pixels.astype(np.uint16) * 257))
        color = np.repeat(pixels[..., :1], 3, axis=-1) if channels < 3 else pixels[..., :3]
        expected = _on_white(np.concatenate([color, pixels[..., -1:]], axis=-1)) if channels in (2, 4) else color
        assert torch.equal(decoded, _chw(expected)), f"{channels} channels"
    # Values between the 8-bit steps round to the nearest one: v / 257.
    values = np.array([[[0, 128, 129, 385, 65406, 65535]]], np.uint16).reshape(1, 6, 1)
    assert decode_rgb(png16(values))[0, 0].tolist() == [0, 0, 1, 1, 254, 255]


def test_a_16_bit_training_image_keeps_its_high_byte_in_memory(tmp_path):
    """A 16-bit grayscale PNG whose high byte is the picture and whose low byte is noise is stored as the
    picture, not as the noise (before: the in-memory dataset kept the low byte of every pixel)."""
    rng = np.random.default_rng(1)
    picture = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    noise = rng.integers(0, 256, (8, 8), dtype=np.uint16)
    (tmp_path / "tree" / "scan").mkdir(parents=True)
    Image.fromarray(picture.astype(np.uint16) * 256 + noise).save(tmp_path / "tree" / "scan" / "0.png")
    Image.fromarray(picture).save(tmp_path / "tree" / "scan" / "1.png")  # the same picture at 8 bits
    data = load_tree_in_memory(tmp_path / "tree", cache=False)
    expected = np.rint((picture.astype(np.uint16) * 256 + noise) / 257).astype(np.uint8)
    assert np.abs(expected.astype(int) - picture).max() <= 1  # the high byte, give or take the rounding
    assert torch.equal(data.images[0], _chw(np.repeat(expected[..., None], 3, axis=-1)))
    assert (data.images[0].int() - data.images[1].int()).abs().max() <= 1


def test_eval_reads_a_folder_mixing_8_and_16_bit_pngs(tmp_path):
    """Before: ``resnetkit eval`` stacked uint8 and uint16 images and ended in a promotion traceback."""
    from resnetkit import create_model, save_model
    from resnetkit.config import EvalConfig
    from resnetkit.evaluate.run import run_evaluation

    rng = np.random.default_rng(2)
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "data" / name / "8.png")
        Image.fromarray(rng.integers(0, 65536, (20, 20), dtype=np.uint16)).save(tmp_path / "data" / name / "16.png")
    save_model(create_model("resnet20", num_classes=2), tmp_path / "m.safetensors", class_names=["a", "b"])
    metrics = run_evaluation(EvalConfig(model=str(tmp_path / "m.safetensors"), data=str(tmp_path / "data"),
                                        out_dir=str(tmp_path / "ev"), device="cpu", workers=0))
    assert metrics.count == 4


@pytest.mark.parametrize("mode", ["RGBA", "LA", "I;16", "L", "RGB"])
def test_torchvision_and_pil_decodes_follow_the_same_rules(mode):
    """PNGs go through torchvision, other formats and opened PIL images through PIL: same pixels either way."""
    rng = np.random.default_rng(3)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (9, 11), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 256, (9, 11, 4), dtype=np.uint8), "RGBA").convert(mode)
    data = _encoded(image, "PNG")
    assert torch.equal(decode_rgb(data), pil_to_rgb(Image.open(io.BytesIO(data))))
    if mode in ("RGBA", "RGB"):  # the same pixels as lossless WebP, which PIL decodes
        assert torch.equal(decode_rgb(_encoded(image, "WEBP", lossless=True)), decode_rgb(data))


def test_transparency_is_white_in_every_format():
    rgba = np.zeros((6, 6, 4), np.uint8)  # a transparent background whose hidden pixels are black
    rgba[2:4, 2:4] = (200, 40, 40, 255)
    rgba[0, :] = (40, 40, 200, 100)  # half transparent
    expected = _chw(_on_white(rgba))
    for fmt in ("PNG", "WEBP"):
        options = {"lossless": True} if fmt == "WEBP" else {}
        assert torch.equal(decode_rgb(_encoded(Image.fromarray(rgba, "RGBA"), fmt, **options)), expected), fmt
    palette = Image.new("P", (5, 5), 0)
    palette.putpalette([0, 0, 0, 200, 40, 40] + [0] * 762)
    palette.putpixel((2, 2), 1)
    for fmt in ("PNG", "GIF"):
        decoded = decode_rgb(_encoded(palette, fmt, transparency=0))
        assert decoded[:, 0, 0].tolist() == [255, 255, 255] and decoded[:, 2, 2].tolist() == [200, 40, 40], fmt


def test_an_animation_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), color) for color in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    for fmt in ("GIF", "WEBP", "PNG"):  # animated GIF, animated WebP, APNG
        options = {"lossless": True} if fmt == "WEBP" else {}
        data = _encoded(frames[0], fmt, save_all=True, append_images=frames[1:], **options)
        assert Image.open(io.BytesIO(data)).n_frames == 3
        assert decode_rgb(data)[:, 4, 4].tolist() == [250, 0, 0], fmt


def test_training_refuses_a_decompression_bomb_by_name(tmp_path, monkeypatch):
    (tmp_path / "tree" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "tree" / "a" / "small.png")
    Image.new("RGB", (100, 100)).save(tmp_path / "tree" / "a" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6_000)
    with pytest.warns(UserWarning, match=r"huge\.png: refused as a possible decompression bomb: 100x100"):
        data = load_tree_in_memory(tmp_path / "tree", cache=False)
    assert len(data) == 1


def test_int_and_float_images_are_scaled_by_their_types_range_not_their_content(tmp_path):
    """A 16-bit PGM whose values all stay under 256 decoded 257x too bright (as 8-bit), and one pixel of 256 made the
    whole image dark; a float TIFF in 0..1 with one pixel of 1.001 decoded black. By the type: 16 bits, 0..1."""
    from PIL import Image

    from resnetkit.data.image import decode_rgb

    dark = np.full((4, 4), 200, np.int32)
    brighter = dark.copy()
    brighter[0, 0] = 256
    for values in (dark, brighter):
        Image.fromarray(values, mode="I").save(tmp_path / "i.tiff")
        assert int(decode_rgb((tmp_path / "i.tiff").read_bytes())[0, 1, 1]) == round(200 / 257)
    floats = np.full((4, 4), 0.5, np.float32)
    for top in (0.5, 1.001):
        floats[0, 0] = top
        Image.fromarray(floats, mode="F").save(tmp_path / "f.tiff")
        assert int(decode_rgb((tmp_path / "f.tiff").read_bytes())[0, 1, 1]) == 128


@pytest.mark.parametrize("mode, colour", [("RGB", (0, 0, 0)), ("L", 0), ("P", 0)])
def test_a_pngs_transparent_colour_is_white_whatever_its_mode(mode, colour):
    """A palette's transparent index came out white, an RGB or grey PNG's transparent colour (tRNS) black."""
    import io

    from PIL import Image

    from resnetkit.data.image import decode_rgb

    buffer = io.BytesIO()
    image = Image.new(mode, (4, 4), colour)
    image.putpixel((1, 1), (90, 90, 90) if mode == "RGB" else 90)
    image.save(buffer, "PNG", transparency=colour)
    decoded = decode_rgb(buffer.getvalue())
    assert decoded[:, 0, 0].tolist() == [255, 255, 255]
    if mode != "P":
        assert decoded[:, 1, 1].tolist() == [90, 90, 90]  # the other colours as they are


def test_a_16_bit_grey_pngs_transparent_level_is_white():
    import io

    from PIL import Image

    from resnetkit.data.image import decode_rgb

    levels = np.full((4, 4), 25700, np.uint16)
    levels[0, 0] = 0
    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, "PNG", transparency=0)
    decoded = decode_rgb(buffer.getvalue())
    assert decoded[:, 0, 0].tolist() == [255, 255, 255] and decoded[:, 1, 1].tolist() == [100, 100, 100]
