"""The one image decoder: encoded bytes (or a PIL image) -> an upright (3, H, W) uint8 RGB tensor.

Training, ``resnetkit eval``, ``predict``, ``serve`` and export calibration all decode through here, so
one file is one image everywhere. The rules, each applied the same way whichever library decodes:

- EXIF orientation applied: a phone photo stored on its side is seen upright.
- Transparency is composited on white, as browsers and viewers show it (``RGBA``, ``LA``, palettes with a
  transparent index): PIL's plain RGBA->RGB would expose whatever colour hidden pixels store (often black).
- 16-bit samples become 8-bit by rounding ``v / 257``, the exact inverse of the 8->16 expansion
  ``v * 257``: an 8-bit image saved at 16 bits decodes to its original bytes.
- Palettes, grayscale, bilevel, CMYK, YCbCr, LAB ... become RGB; an animation gives its first frame.
- Images over ``PIL.Image.MAX_IMAGE_PIXELS`` are refused before their pixels are decoded (bomb guard).

- A PNG whose image data is not whole (truncated, corrupt, a wrong CRC) is refused, saying why
  (``png.png_damage``): PIL would fill the missing rows with black, torchvision would crash the process.

JPEG is decoded by torchvision (libjpeg-turbo: about 3x faster than PIL on small JPEGs), and so are 16-bit
colour PNGs (PIL keeps only their high bytes); everything else, and any file torchvision cannot read, by PIL.
Both feed the same conversion below, so the rules cannot diverge.
"""

from __future__ import annotations

import functools
import io
import os
import re
import stat
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .png import png_damage, png_header

try:
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # pragma: no cover - a future torchvision without image decoding
    decode_image = None
# torchvision 0.29 deprecates its decoders in favour of TorchCodec and warns on every call; the
# decoders still work and TorchCodec is not a dependency, so silence exactly that message.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

BACKGROUND = 255  # transparent pixels show as white
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# The formats opened at all: what image folders list (extensions in tree.py) and AVIF. PIL's other plugins are
# not: ICO/CUR decode their embedded PNG while "reading the header" (a 700 kB icon became 700 MB before the pixel
# limit could refuse it) and EPS hands the file to Ghostscript.
READ_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "BMP", "GIF", "TIFF", "PPM")  # AVIF: Pillow 11.2 and later
NOT_AN_IMAGE = ("not an image file resnetkit reads (JPEG, PNG, WebP, AVIF, BMP, GIF, TIFF, PNM), or its header is "
                "corrupt; convert it to PNG or JPEG")
BAND_PIXELS = 1 << 18  # pixels per band of rows in ``to_rgb8``: about 5 MB of temporaries for RGBA


class ImageLoadError(ValueError):
    """An input that is not a usable image; the message names it (when a name is known) and says why."""


def _fail(name: str | None, reason: str) -> ImageLoadError:
    return ImageLoadError(f"{name}: {reason}" if name else reason)


def decode_rgb(data: bytes, *, name: str | None = None) -> torch.Tensor:
    """Encoded image bytes -> (3, H, W) uint8 RGB, by the rules above.

    Raises ``ImageLoadError`` (a ``ValueError``) saying why, prefixed with ``name`` when given.
    """
    if not data:
        raise _fail(name, "empty (0 bytes)")
    try:
        header = open_header(data)
    except Image.DecompressionBombError as error:
        raise _bomb(name, str(error).rstrip(".")) from None
    except UnidentifiedImageError:
        raise _fail(name, NOT_AN_IMAGE) from None
    except Exception as error:  # noqa: BLE001 - PIL raises many types for damaged headers
        raise _fail(name, f"damaged image data ({type(error).__name__}: {error})") from None
    with header:
        check_pixel_count(header.width, header.height, name=name)
        damage = png_damage(data) if header.format == "PNG" else None
        if damage:
            raise _fail(name, f"damaged image data ({damage})")
        torchvision_error = ""
        if decode_image is not None and (header.format == "JPEG" or (header.format == "PNG" and _deep_color(data))):
            try:
                return _from_torchvision(data, jpeg=header.format == "JPEG")
            except RuntimeError as error:  # a variant libjpeg/libpng reject; PIL may still read it
                torchvision_error = re.sub(r"^\S+, \S+:\d+, ", "", str(error).strip())  # drop C++ file:line
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                header.load()
        except Exception as error:  # noqa: BLE001 - truncated or corrupt pixel data
            detail = f"; torchvision: {torchvision_error}" if torchvision_error else ""
            raise _fail(name, f"damaged image data ({type(error).__name__}: {error}{detail})") from None
        return pil_to_rgb(header, name=name)


def open_header(data: bytes) -> Image.Image:
    """PIL's image of ``data`` with its header read (size, mode, format) and its pixels not yet decoded, for the
    formats of ``READ_FORMATS`` only (``UnidentifiedImageError`` for others); ``DecompressionBombError`` over twice
    PIL's pixel limit (between 1x and 2x PIL only warns: ``check_pixel_count`` refuses instead, naming the file)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=_known_formats())


@functools.cache
def _known_formats() -> tuple[str, ...]:
    """``READ_FORMATS`` this Pillow has a plugin for (an unknown name in ``formats=`` is a KeyError that stops
    the search: with Pillow 11.1, "AVIF" made every BMP, GIF and TIFF unreadable)."""
    Image.init()
    return tuple(name for name in READ_FORMATS if name in Image.OPEN)


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header of ``data``, as ``open_header`` reads it (nothing kept open)."""
    with open_header(data) as image:
        return image.size


def read_image_file(path: str | os.PathLike[str], *, name: str | None = None) -> bytes:
    """The bytes of an image file for ``decode_rgb``, refusing before reading it what cannot be an image: not a
    regular file (a folder, a device, a pipe that would block), empty, or larger than ``max_file_bytes()``.

    Raises ``ImageLoadError`` naming ``name`` (when given) and saying why; what the bytes hold is for
    ``decode_rgb`` to say.
    """
    try:
        info = os.stat(path)  # before open(): opening a named pipe would wait for a writer
        if not stat.S_ISREG(info.st_mode):
            raise _fail(name, "not a regular file; give an image file")
        if info.st_size == 0:
            raise _fail(name, "empty file (0 bytes)")
        check_file_size(info.st_size, name=name)
        with open(path, "rb") as handle:
            return handle.read(info.st_size)  # not more than was checked, even from a file growing meanwhile
    except OSError as error:
        raise _fail(name, f"cannot be read ({error.strerror or error})") from None


def max_file_bytes() -> int | None:
    """The largest image file read: what an uncompressed image at PIL's pixel limit could take (8 bytes a pixel,
    16-bit RGBA, plus 1 MiB of headers), so one setting, ``PIL.Image.MAX_IMAGE_PIXELS``, bounds both the file and
    the decoded image; None when that limit is switched off."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else int(limit) * 8 + 2**20


def check_file_size(size: int, *, name: str | None = None) -> None:
    """Refuse an image file or tar member over ``max_file_bytes()`` before it is read."""
    limit = max_file_bytes()
    if limit is not None and size > limit:
        raise _fail(name, f"{size / 2**20:,.1f} MiB is more than an image within PIL's limit of "
                          f"{Image.MAX_IMAGE_PIXELS:,} pixels can take ({limit / 2**20:,.0f} MiB); check it is the image "
                          "you meant; if you trust this file, raise PIL.Image.MAX_IMAGE_PIXELS")


def _bomb(name: str | None, detail: str) -> ImageLoadError:
    return _fail(name, f"refused as a possible decompression bomb: {detail}; if you trust this file, "
                       "raise PIL.Image.MAX_IMAGE_PIXELS")


def check_pixel_count(width: int, height: int, *, name: str | None = None) -> None:
    """Refuse an image over ``PIL.Image.MAX_IMAGE_PIXELS`` before its pixels are decoded."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise _bomb(name, f"{width}x{height} = {width * height:,} pixels is over the limit of {limit:,}")


def _deep_color(png: bytes) -> bool:
    """A 16-bit RGB, RGBA or gray + alpha PNG (whose low bytes PIL would drop)."""
    header = png_header(png)
    return header is not None and header[2] == 16 and header[3] in (2, 4, 6)


def _from_torchvision(data: bytes, *, jpeg: bool) -> torch.Tensor:
    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    # JPEG: RGB mode converts grayscale and CMYK (JPEG has no alpha). PNG: UNCHANGED keeps the alpha channel
    # and all 16 bits, which ``to_rgb8`` then handles like PIL's decodes.
    mode = ImageReadMode.RGB if jpeg else ImageReadMode.UNCHANGED
    return to_rgb8(decode_image(encoded, mode=mode, apply_exif_orientation=True))


def pil_to_rgb(image: Image.Image, *, name: str | None = None) -> torch.Tensor:
    """An opened PIL image (any mode; its current frame) -> (3, H, W) uint8 RGB, upright, by the rules above."""
    try:
        image = ImageOps.exif_transpose(image) or image
    except Exception:  # noqa: BLE001 - a damaged EXIF block should not lose the picture
        pass
    if image.width < 1 or image.height < 1:
        raise _fail(name, f"has no pixels ({image.width}x{image.height})")
    mode = image.mode
    if mode in HIGH_BIT_MODES or mode == "I":  # "I": 32-bit ints, in practice 16-bit data (16-bit PGM), by that range
        pixels = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)  # whatever its content: a dark image stays so
        transparent = image.info.get("transparency")
        if isinstance(transparent, int) and pixels.ndim == 2:  # a 16-bit grey PNG's transparent level: on white
            pixels = np.stack([pixels, np.where(pixels == transparent, 0, 65535).astype(np.uint16)], axis=-1)
    elif mode == "F":  # floats: 0..1, as every image library writes them (values outside are clipped)
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():  # NaN would cast to an arbitrary level: no picture to classify
            raise _fail(name, "a floating-point image whose pixels include NaN or infinity; save it with finite values")
        pixels = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    elif mode in ("L", "RGB") and "transparency" in image.info:  # a PNG's one transparent colour (tRNS): on white,
        pixels = np.asarray(image.convert("LA" if mode == "L" else "RGBA"))  # as a palette's transparent index is
    elif mode in ("L", "RGB", "LA", "RGBA"):
        pixels = np.asarray(image)
    elif mode == "1":
        pixels = np.asarray(image.convert("L"))
    elif mode in ("P", "PA", "RGBa", "La"):
        has_alpha = mode != "P" or "transparency" in image.info  # a palette may mark one index transparent
        pixels = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    else:  # CMYK, YCbCr, LAB, HSV ...
        pixels = np.asarray(image.convert("RGB"))
    tensor = torch.from_numpy(np.array(pixels))  # a copy: PIL's arrays are read-only
    return to_rgb8(tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1))


def to_rgb8(pixels: torch.Tensor) -> torch.Tensor:
    """(C, H, W) with C = 1 (gray), 2 (gray, alpha), 3 (RGB) or 4 (RGBA), uint8 or uint16 -> (3, H, W) uint8.

    A 4-D input (an animation's frames) gives its first frame.
    """
    if pixels.dim() == 4:
        pixels = pixels[0]
    if pixels.dtype not in (torch.uint8, torch.uint16):
        raise ValueError(f"pixels of dtype {pixels.dtype}; expected uint8 or uint16")
    channels, height, width = pixels.shape
    if channels not in (1, 2, 3, 4):
        raise ValueError(f"an image with {channels} channels; expected 1 to 4")
    if pixels.dtype == torch.uint8 and channels == 3:
        return pixels  # torchvision's (3, H, W) is a view of HWC memory: left so, whoever stores it copies once
    if pixels.dtype != torch.uint8 or channels in (2, 4):
        # Integer arithmetic needs wider temporaries (4 bytes a sample); doing it a band of rows at a time keeps
        # them small, so a large 16-bit RGBA image costs its 8-bit result and no more.
        out = torch.empty((3 if channels >= 3 else 1, height, width), dtype=torch.uint8)
        rows = max(1, BAND_PIXELS // max(1, width))
        for top in range(0, height, rows):
            out[:, top:top + rows] = _band_to_rgb8(pixels[:, top:top + rows])
        pixels = out
    if pixels.shape[0] == 1:
        return pixels.expand(3, -1, -1).contiguous()
    return pixels


def _band_to_rgb8(pixels: torch.Tensor) -> torch.Tensor:
    """The arithmetic of ``to_rgb8`` on a few rows, in place: 16 -> 8 bits, then alpha composited on white."""
    values = pixels.to(torch.int32)  # uint16 * 255 + 32767 < 2**31
    if pixels.dtype == torch.uint16:
        # round(v / 257) in integers: (v * 255 + 32767) // 65535.
        values.mul_(255).add_(32767).floor_divide_(65535)
    if values.shape[0] in (2, 4):
        color, alpha = values[:-1], values[-1:]
        # color * a + white * (1 - a), rounded: (c*a + 255*(255-a) + 127) // 255.
        white = (255 - alpha).mul_(BACKGROUND).add_(127)
        values = color.mul_(alpha).add_(white).floor_divide_(255)
    return values.to(torch.uint8)


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """A (3, H, W) uint8 tensor as a PIL RGB image (for drawing and saving)."""
    return Image.fromarray(np.ascontiguousarray(pixels.permute(1, 2, 0).numpy()))  # HxWx3 uint8 is RGB
