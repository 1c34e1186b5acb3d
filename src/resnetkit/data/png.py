"""Is a PNG's image data whole? Checked before any PNG is decoded, for two reasons: torchvision's PNG decoder
crashes the process (a segfault, not an exception) on any libpng error in the pixel data, and PIL silently
fills missing rows with black, so a damaged file would be learnt from or classified as a half-black picture.

The check reads the file the way libpng reads it: the chunks up to the image data and their CRCs (an
ancillary chunk's bad CRC is skipped, as libpng skips it), the IDAT data inflated in pieces (memory bounded
by ``PIECE``) to the length the header implies, and each row's filter byte. What follows the image data is
not read, as decoders do not need it.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: gray, RGB, palette, gray + alpha, RGBA
# Adam7 passes: first column, first row, column step, row step.
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
PIECE = 1 << 22  # inflated bytes looked at at once
MAX_FILTER = 4  # None, Sub, Up, Average, Paeth
Segment = tuple[int, int, int]  # first row's offset in the inflated data, row length with its filter byte, rows


def png_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace) from a PNG's IHDR, or None if it has none."""
    if len(data) < 33 or not data.startswith(SIGNATURE) or data[8:16] != b"\0\0\0\rIHDR":
        return None
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, depth, color, interlace


def png_damage(data: bytes) -> str | None:
    """Why this PNG's image data cannot be read whole (a reason a person can act on), or None when it can."""
    header = png_header(data)
    if header is None:
        return "no PNG header chunk (IHDR) where it belongs"
    width, height, depth, color, interlace = header
    if color not in CHANNELS or interlace not in (0, 1) or width < 1 or height < 1:
        return f"PNG header of an impossible image ({width}x{height}, colour type {color}, interlace {interlace})"
    idat = _image_data(data)
    if isinstance(idat, str):
        return idat
    return _rows_damage(idat, _row_segments(width, height, CHANNELS[color] * depth, interlace))


def _row_segments(width: int, height: int, bits_per_pixel: int, interlace: int) -> list[Segment]:
    """Where the rows start: one segment per Adam7 pass that has pixels, or one for the whole image."""
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    segments, offset = [], 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            stride = 1 + -(-(columns * bits_per_pixel) // 8)
            segments.append((offset, stride, rows))
            offset += stride * rows
    return segments


def _image_data(data: bytes) -> list[memoryview] | str:
    """The consecutive IDAT chunks' data, or why they cannot be had: a chunk cut short, a critical chunk's
    CRC wrong, an unknown critical chunk (upper-case first letter), a second IHDR, no IDAT."""
    view, position, idat = memoryview(data), len(SIGNATURE), []
    while position + 12 <= len(data):
        length, kind = struct.unpack(">I4s", view[position:position + 8])
        if kind != b"IDAT" and idat:
            break  # the image data is over: what follows (text, IEND) is not needed
        end = position + 12 + length
        if end > len(data):
            return "the file ends inside a PNG chunk: it is truncated"
        critical = kind[0] < ord("a")
        if critical and zlib.crc32(view[position + 4:end - 4]) != struct.unpack(">I", view[end - 4:end])[0]:
            return f"the PNG {kind.decode('latin-1')} chunk's CRC is wrong: the file is damaged"
        if critical and kind not in (b"IHDR", b"PLTE", b"IDAT", b"IEND") or (kind == b"IHDR" and position != 8):
            return f"an unexpected PNG chunk {kind.decode('latin-1')!r}"
        if kind == b"IDAT":
            idat.append(view[position + 8:end - 4])
        elif kind == b"IEND":
            break
        position = end
    return idat or "no image data (no complete IDAT chunk): the file is truncated or damaged"


def _rows_damage(idat: list[memoryview], segments: list[Segment]) -> str | None:
    """Inflate the IDAT data piece by piece: a valid zlib stream holding every row, each with a known filter."""
    expected = sum(stride * rows for _, stride, rows in segments)
    inflater, produced = zlib.decompressobj(), 0
    try:
        for chunk in idat:
            pending = chunk  # zlib reads the memoryview as it is: no copy of the chunk
            while pending and produced < expected:
                piece = inflater.decompress(pending, min(PIECE, expected - produced))
                if not _filters_known(piece, produced, segments):
                    return f"a row of the PNG data has an unknown filter type (over {MAX_FILTER}): the file is damaged"
                produced += len(piece)
                pending = inflater.unconsumed_tail
                if not piece and not pending:
                    break
    except zlib.error as error:
        return f"the PNG data stream is corrupt (zlib: {error})"
    if produced < expected:
        return f"the PNG data holds {produced:,} of the {expected:,} bytes its size needs: it is truncated or damaged"
    return None


def _filters_known(piece: bytes, start: int, segments: list[Segment]) -> bool:
    """Every row start that falls inside ``piece`` (at ``start`` of the inflated data) holds a filter of 0..4."""
    values = np.frombuffer(piece, dtype=np.uint8)
    end = start + len(values)
    for offset, stride, rows in segments:
        first = max(0, -(-(start - offset) // stride))
        last = min(rows, -(-(end - offset) // stride))
        if first < last and values[offset + first * stride - start:offset + last * stride - start:stride].max() > MAX_FILTER:
            return False
    return True
