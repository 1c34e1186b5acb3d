"""A PNG whose image data is damaged is refused by name, never decoded half-black by PIL and never handed to
torchvision's PNG decoder, which crashes the process (segfault) on any libpng error in the pixel data."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from awkward_images import png16
from PIL import Image

from resnetkit.data import decode_rgb
from resnetkit.data.image import ImageLoadError
from resnetkit.data.png import png_damage

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(rows: bytes, *, width: int = 32, height: int = 32, depth: int = 8, color: int = 2, interlace: int = 0,
         data: bytes | None = None, extra: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra
            + _chunk(b"IDAT", zlib.compress(rows) if data is None else data) + _chunk(b"IEND", b""))


def _rows(count: int, *, filter_type: int = 0, row_bytes: int = 96) -> bytes:
    return (bytes([filter_type]) + bytes(range(row_bytes))) * count


def _bad_crc(png: bytes) -> bytes:
    at = png.index(b"IDAT") + 4 + struct.unpack(">I", png[png.index(b"IDAT") - 4:png.index(b"IDAT")])[0]
    return png[:at] + bytes([png[at] ^ 1]) + png[at + 1:]


DAMAGED = {
    "rows missing (half the image)": (_png(_rows(16)), "holds 1,552 of the 3,104 bytes"),
    "one row missing": (_png(_rows(31)), "holds 3,007 of the 3,104 bytes"),
    "16-bit RGB, rows missing": (_png(_rows(10, row_bytes=192), depth=16), "of the 6,176 bytes"),
    "interlaced, rows missing": (_png(bytes(970), interlace=1), "holds 970 of the 3,132 bytes"),
    "empty IDAT": (_png(b"", data=b""), "holds 0 of the 3,104 bytes"),
    "bad filter byte": (_png(_rows(32, filter_type=7)), "unknown filter type"),
    "corrupt zlib stream": (_png(b"", data=b"\x78\x9c" + b"\xff" * 50), "PNG data stream is corrupt"),
    "IDAT CRC wrong": (_bad_crc(_png(_rows(32))), "IDAT chunk's CRC is wrong"),
    "cut inside IDAT": (_png(_rows(32))[:80], "the file ends inside a PNG chunk"),
    "unknown critical chunk": (_png(_rows(32), extra=_chunk(b"ABCD", b"x")), "unexpected PNG chunk 'ABCD'"),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_damaged_png_is_refused_by_name_saying_why(case):
    data, reason = DAMAGED[case]
    with pytest.raises(ImageLoadError, match=f"^photo.png: damaged image data \\(.*{reason}"):
        decode_rgb(data, name="photo.png")


def test_whole_pngs_pass_including_interlaced_16_bit_and_trailing_chunks():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (13, 17, 3)).astype(np.uint16)
    expected = ((pixels.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
    for interlace in (False, True):
        data = png16(pixels, interlace=interlace)
        assert png_damage(data) is None
        assert np.array_equal(decode_rgb(data).permute(1, 2, 0).numpy(), expected)  # all 16 bits were read
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)).save(buffer, "PNG", interlace=1)
    assert png_damage(buffer.getvalue()) is None
    # After the image data: a text chunk with a wrong CRC, then no IEND: nothing a decoder needs.
    trailing = _png(_rows(32))[:-12] + b"\0\0\0\x01tEXtx\0\0\0\0"
    assert png_damage(trailing) is None and decode_rgb(trailing).shape == (3, 32, 32)


def test_fuzzed_pngs_and_jpegs_never_crash_the_process(tmp_path):
    """Hundreds of damaged 8- and 16-bit PNGs (CRCs mended, so the damage reaches the pixel data) and JPEGs
    decoded in a child process: each one decodes or is refused; the process lives to say how many."""
    script = Path(__file__).with_name("fuzz_images.py")
    result = subprocess.run([sys.executable, str(script), "300"], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path)
    assert result.returncode == 0, f"the decoder crashed (exit {result.returncode}): {result.stderr[-2000:]}"
    decoded, refused = map(int, result.stdout.split())
    assert decoded + refused == 3 * 300 and refused > 0
