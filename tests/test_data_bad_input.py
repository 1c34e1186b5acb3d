"""The decoder's and the tree reader's defences: memory-lean 16-bit RGBA, a size limit read before the file,
and damaged tars named."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit.data import image as image_module
from resnetkit.data import index_tree, load_tree_in_memory
from resnetkit.data.image import ImageLoadError, max_file_bytes, to_rgb8
from resnetkit.infer.images import load_pixels

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))


def test_16_bit_rgba_converted_in_bands_matches_the_formula(monkeypatch):
    monkeypatch.setattr(image_module, "BAND_PIXELS", 7)  # many bands, the last one partial
    values = np.random.default_rng(0).integers(0, 65536, (4, 13, 11), dtype=np.uint16)
    values[3, 0, :4] = (0, 65535, 128, 32896)
    expected8 = (values.astype(np.int64) * 255 + 32767) // 65535
    color, alpha = expected8[:3], expected8[3:]
    expected = (color * alpha + 255 * (255 - alpha) + 127) // 255
    assert np.array_equal(to_rgb8(torch.from_numpy(values)).numpy(), expected)
    gray_alpha = torch.from_numpy(values[2:])
    assert np.array_equal(to_rgb8(gray_alpha).numpy(), np.repeat(expected[2:3], 3, axis=0))


def test_16_bit_rgba_costs_a_few_bytes_a_pixel():
    """Before: int64 temporaries made a 16-bit RGBA image cost ~69 bytes a pixel on top of its pixels."""
    script = """
import resource, torch
from resnetkit.data.image import to_rgb8
pixels = torch.full((4, 2000, 2000), 40000, dtype=torch.uint16)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rgb = to_rgb8(pixels)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / pixels[0].numel())
"""
    extra = float(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout)
    assert extra < 8, f"{extra:.1f} bytes a pixel"  # the 8-bit RGB result takes 3


def test_a_file_over_the_size_limit_is_refused_by_its_size_without_being_read(tmp_path):
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(max_file_bytes() + 1)  # sparse: no disk, but reading it would take 700 MiB
    with pytest.raises(ImageLoadError, match=r"huge\.jpg: 683\.7 MiB is more than an image within PIL's limit of "
                                             r"89,478,485 pixels can take .*raise PIL.Image.MAX_IMAGE_PIXELS"):
        load_pixels(huge)


def test_the_size_limit_follows_pils_pixel_limit(monkeypatch):
    monkeypatch.setattr(image_module.Image, "MAX_IMAGE_PIXELS", 1000)
    assert max_file_bytes() == 8000 + 2**20
    monkeypatch.setattr(image_module.Image, "MAX_IMAGE_PIXELS", None)
    assert max_file_bytes() is None


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path):
    import os

    pipe = tmp_path / "photo.jpg"
    os.mkfifo(pipe)
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_pixels(pipe)


def test_a_tree_reports_an_oversized_file_and_keeps_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(image_module, "max_file_bytes", lambda: 10_000)
    for name, size in (("small.png", 8), ("big.png", 200)):
        (tmp_path / "tree" / "cat").mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "tree" / "cat" / name)
    with pytest.warns(UserWarning, match=r"big\.png: .*MiB is more than an image within PIL's limit"):
        dataset = load_tree_in_memory(tmp_path / "tree", cache=False)
    assert len(dataset) == 1


@pytest.mark.parametrize("damage", ["not a tar", "truncated"])
def test_a_damaged_tar_is_named(tmp_path, damage):
    import tarfile

    archive = tmp_path / "data.tar.gz"
    if damage == "not a tar":
        archive.write_bytes(np.random.default_rng(0).bytes(3000))
    else:
        (tmp_path / "cat").mkdir()
        for i in range(3):
            (tmp_path / "cat" / f"{i}.png").write_bytes(np.random.default_rng(i).bytes(50_000))
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(tmp_path / "cat", arcname="cat")
        archive.write_bytes(archive.read_bytes()[:60_000])
    with pytest.raises(ValueError, match=r"data\.tar\.gz: not a readable tar archive"):
        index_tree(archive)


def _tree_with_large_bad_files(root, count: int, size: int):
    """A class of ``count`` undecodable files of ``size`` bytes each (sparse: no disk) before two good images."""
    (root / "cat").mkdir(parents=True)
    for i in range(count):
        with open(root / "cat" / f"0{i}-bad.png", "wb") as f:
            f.truncate(size)
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "cat" / f"9{i}-good.png")
    return root


@pytest.mark.parametrize("image_size", [None, 8], ids=["size-from-first-image", "size-given"])
def test_large_undecodable_files_are_not_all_held_in_memory_at_once(tmp_path, monkeypatch, image_size):
    """Before: the search for the first decodable image kept every failed file's bytes, and every chunk was read
    ahead of the decoders, so a folder of large broken files took their whole size in memory (the probe: 4.8 GB
    from eight 500 MB files). Now the bytes held at once stay near a few files' worth."""
    import time
    import tracemalloc

    from resnetkit.data import decode as decode_module

    size, count = 8 * 2**20, 8
    tree = index_tree(_tree_with_large_bad_files(tmp_path / "tree", count, size))
    monkeypatch.setattr(decode_module, "CHUNK_BYTES", 1)  # a chunk per file
    real_decode = decode_module.decode_read

    def slow_decode(data):  # decoders slower than the reader: what is read ahead shows
        time.sleep(0.02)
        return real_decode(data)

    monkeypatch.setattr(decode_module, "decode_read", slow_decode)
    tracemalloc.start()
    try:
        with pytest.warns(UserWarning, match="0-bad.png"):
            dataset = decode_module.decode_tree(tree, image_size=image_size, workers=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(dataset) == 2 and len(dataset.skipped) == count
    assert peak < 5 * size, f"{peak / 2**20:.0f} MiB held for {count} files of {size / 2**20:.0f} MiB"


def _ico_around_png(width: int) -> bytes:
    """A valid .ico whose one entry is a width x width RGBA PNG of zeros (Pillow decodes it while opening)."""
    import io
    import struct

    buffer = io.BytesIO()
    Image.new("RGBA", (width, width)).save(buffer, "PNG")
    png = buffer.getvalue()
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22) + png


def test_formats_outside_the_read_list_are_refused_before_pils_plugins_decode_or_run_anything():
    """An icon (its PNG decoded on open, past the pixel limit's header check) and EPS (rendered by Ghostscript) are
    refused by format, naming the file; a camera's multi-picture JPEG (MPO) is still a JPEG."""
    import io

    from resnetkit.data.image import decode_rgb, image_size

    ico = _ico_around_png(64)
    assert Image.open(io.BytesIO(ico)).format == "ICO"  # a real icon PIL would open
    for name, data in (("icon.ico", ico), ("page.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")):
        with pytest.raises(ImageLoadError, match=f"{name}: not an image file resnetkit reads .*convert it"):
            decode_rgb(data, name=name)
        with pytest.raises(Exception):
            image_size(data)
    frames = [Image.new("RGB", (16, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "MPO", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    pixels = decode_rgb(buffer.getvalue(), name="camera.jpg")
    assert pixels.shape == (3, 8, 16) and pixels[0].float().mean() > 200  # the first (red) picture


def test_a_format_this_pillow_lacks_does_not_stop_the_others(monkeypatch):
    """Pillow raises KeyError for an unknown name in Image.open(formats=...) and stops: with Pillow 11.1 (no AVIF)
    every BMP, GIF and TIFF failed. Only the names this Pillow knows are passed."""
    import io

    from resnetkit.data.image import _known_formats, decode_rgb

    monkeypatch.setattr(image_module, "READ_FORMATS", ("JPEG", "NOSUCHFORMAT", "BMP"))
    _known_formats.cache_clear()
    try:
        buffer = io.BytesIO()
        Image.new("RGB", (5, 4), (10, 20, 30)).save(buffer, "BMP")
        assert decode_rgb(buffer.getvalue(), name="a.bmp").shape == (3, 4, 5)
    finally:
        monkeypatch.undo()
        _known_formats.cache_clear()
