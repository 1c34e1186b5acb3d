"""Decode N damaged images of each kind (8-bit PNG, 16-bit colour PNG, JPEG) with the one decoder and print how
many decoded and how many were refused. Run in a child process by test_data_png.py: a decoder that crashes
(a segfault in a C library) kills this process, not the test run. Any error but ``ImageLoadError`` exits 1."""

from __future__ import annotations

import io
import struct
import sys
import warnings
import zlib

import numpy as np
from PIL import Image

from resnetkit.data import decode_rgb
from resnetkit.data.image import ImageLoadError

warnings.filterwarnings("ignore")


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png16_rows(rng: np.random.Generator) -> bytes:
    """A 16-bit RGB or RGBA PNG whose raw rows are damaged before compression, so its chunks are sound."""
    height, width, channels = int(rng.integers(1, 30)), int(rng.integers(1, 30)), int(rng.choice([3, 4]))
    raw = bytearray(b"".join(b"\0" + rng.integers(0, 256, width * channels * 2, dtype=np.uint8).tobytes()
                             for _ in range(height)))
    damage = rng.integers(3)
    if damage == 0:
        raw = raw[:int(rng.integers(0, len(raw)))]  # rows missing
    elif damage == 1:
        raw[int(rng.integers(len(raw)))] = int(rng.integers(256))  # perhaps a filter byte
    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")


def encoded(rng: np.random.Generator, fmt: str) -> bytes:
    mode = str(rng.choice(["RGB", "RGBA", "L", "P"])) if fmt == "PNG" else "RGB"
    image = Image.fromarray(rng.integers(0, 256, (int(rng.integers(1, 40)), int(rng.integers(1, 40)), 3),
                                         dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": int(rng.integers(30, 95)), "progressive": bool(rng.integers(2))}
                               if fmt == "JPEG" else {"interlace": int(rng.integers(2))}))
    return buffer.getvalue()


def damaged(rng: np.random.Generator, data: bytes, *, mend_crcs: bool) -> bytes:
    data = bytearray(data)
    if rng.integers(3) == 0:
        data = data[:int(rng.integers(8, len(data)))]
    else:
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(8, len(data)))] = int(rng.integers(256))
    if mend_crcs:  # the damage then reaches the zlib stream and the rows, not only a CRC
        position, out = 8, bytearray(data[:8])
        while position + 12 <= len(data):
            length = struct.unpack(">I", data[position:position + 4])[0]
            if position + 12 + length > len(data):
                break
            body = bytes(data[position + 4:position + 8 + length])
            out += data[position:position + 8 + length] + struct.pack(">I", zlib.crc32(body))
            position += 12 + length
        data = out + data[position:]
    return bytes(data)


def main(count: int) -> int:
    rng = np.random.default_rng(0)
    decoded = refused = 0
    makers = (lambda: damaged(rng, encoded(rng, "PNG"), mend_crcs=bool(rng.integers(2))),
              lambda: png16_rows(rng),
              lambda: damaged(rng, encoded(rng, "JPEG"), mend_crcs=False))
    for make in makers:
        for _ in range(count):
            try:
                decode_rgb(make())
                decoded += 1
            except ImageLoadError:
                refused += 1
    print(decoded, refused)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
