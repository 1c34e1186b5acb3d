"""Image files of the kinds real folders hold and naive decoders get wrong, written with PIL (and, for 16-bit
RGB, which PIL cannot write, by hand). Shared by the decoder tests and the black-box check."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RED, BLUE = (220, 30, 30), (30, 60, 200)


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png16(pixels: np.ndarray, *, interlace: bool = False) -> bytes:
    """A 16-bit PNG written by hand (PIL writes 16 bits only for grayscale): HWC uint16, 1, 2, 3 or 4 channels;
    ``interlace``: Adam7, its seven passes one after another."""
    height, width, channels = pixels.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    passes = [pixels[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7] if interlace else [pixels]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for part in passes if part.shape[1] for row in part)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, int(interlace))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour gradients plus noise: resizing it matters, unlike a flat colour."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def write_awkward_images(root: Path) -> list[Path]:
    """The awkward files, split over two classes: what a real folder of photos and scans contains."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
    files = []

    # RGBA, transparent background whose hidden pixels are black, an opaque red square and a half-transparent edge.
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[8:32, 8:32] = (*RED, 255)
    rgba[4:8, :, :3], rgba[4:8, :, 3] = BLUE, 128
    Image.fromarray(rgba, "RGBA").save(root / "a" / "rgba.png")
    # A palette with a transparent index.
    palette = Image.new("P", (30, 36), 0)
    palette.putpalette([0, 0, 0, *RED, *BLUE] + [0] * 759)
    palette.paste(1, (5, 5, 25, 20))
    palette.paste(2, (5, 20, 25, 30))
    palette.save(root / "a" / "palette.png", transparency=0)
    # 16-bit: grayscale (PIL writes it), and RGB whose low bytes are noise.
    gray16 = (_photo(rng, 34, 50)[..., 0].astype(np.uint16) * 257) + rng.integers(0, 257, (34, 50), dtype=np.uint16)
    Image.fromarray(gray16).save(root / "a" / "gray16.png")
    (root / "b" / "rgb16.png").write_bytes(png16(_photo(rng, 36, 44).astype(np.uint16) * 257 + 100))
    # CMYK JPEG.
    Image.fromarray(_photo(rng, 40, 48)).convert("CMYK").save(root / "b" / "cmyk.jpg", quality=90)
    # A JPEG stored on its side with an EXIF orientation tag (6: rotate 90 degrees clockwise to view).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_photo(rng, 30, 50)).save(root / "b" / "rotated.jpg", exif=exif.tobytes(), quality=90)
    # Grayscale, and a photo much larger than the model's input.
    Image.fromarray(_photo(rng, 32, 32)[..., 1]).save(root / "a" / "gray.png")
    Image.fromarray(_photo(rng, 150, 200)).save(root / "b" / "large.jpg", quality=92)
    for name in ("a", "b"):
        files += sorted((root / name).iterdir())
    return files
