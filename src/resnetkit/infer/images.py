"""Turn whatever a user has (a path, URL, upload, PIL image, array or tensor) into an upright RGB image.

Real-world files come in every mode PIL knows; each is converted the way an image viewer shows it,
so a prediction never depends on how the file happened to be stored. Failures raise ``ImageLoadError``
with the file's name, so a batch can report them and carry on.
"""

from __future__ import annotations

import glob
import io
import os
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..data.tree import IMAGE_EXTENSIONS

# What ``predict`` accepts for one image.
ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray, torch.Tensor]

URL_SCHEMES = ("http", "https", "file")
MAX_DOWNLOAD_BYTES = 100 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 30.0
# Transparent pixels are shown on white, as browsers and viewers do; PIL's plain RGBA->RGB conversion
# would expose whatever colour the transparent pixels happen to store (often black).
BACKGROUND = (255, 255, 255)


class ImageLoadError(ValueError):
    """An input that is not a usable image; the message names it and says why."""


def is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in URL_SCHEMES


def describe(source: Any, index: int) -> str:
    """A short name for an input, used in results and error messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Image.Image) and getattr(source, "filename", ""):
        return str(source.filename)
    kind = {bytes: "bytes", np.ndarray: "array", torch.Tensor: "tensor"}.get(type(source), "image")
    return f"<{kind} #{index}>"


def load_image(source: ImageInput, *, name: str | None = None) -> Image.Image:
    """An RGB PIL image from any supported input, EXIF-rotated upright.

    Float arrays and tensors are taken to be in [0, 1]; uint8 ones in [0, 255]. Tensors are CHW,
    arrays HWC (or HW for grayscale).
    """
    name = name or describe(source, 0)
    if isinstance(source, Image.Image):
        return to_rgb(source, name=name)
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
    if isinstance(source, torch.Tensor):
        if source.ndim == 3 and source.shape[0] in (1, 3, 4):
            return _from_array(source.detach().cpu().permute(1, 2, 0).numpy(), name)
        if source.ndim == 2:
            return _from_array(source.detach().cpu().numpy(), name)
        raise ImageLoadError(f"{name}: a tensor of shape {tuple(source.shape)}; expected one image as CHW "
                             "with 1, 3 or 4 channels")
    if isinstance(source, bytes):
        if not source:
            raise ImageLoadError(f"{name}: empty (0 bytes)")
        return open_image(io.BytesIO(source), name=name)
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if is_url(text):
            return open_image(io.BytesIO(download(text)), name=name)
        path = Path(text)
        if not path.exists():
            raise ImageLoadError(f"{name}: no such file")
        if path.is_dir():
            raise ImageLoadError(f"{name}: is a folder; pass the images inside it (the CLI expands folders)")
        if path.stat().st_size == 0:
            raise ImageLoadError(f"{name}: empty file (0 bytes)")
        with open(path, "rb") as f:
            return open_image(f, name=name)
    raise ImageLoadError(f"{name}: a {type(source).__name__} is not an image; pass a path, URL, bytes, "
                         "PIL image, HWC numpy array or CHW tensor")


def open_image(file: Any, *, name: str) -> Image.Image:
    """Decode an encoded image file object, guarding against decompression bombs and damage."""
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x the limit PIL only warns; we refuse below instead, with the file's name.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
            _check_pixels(image, name)
            image.load()
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"{name}: refused as a possible decompression bomb: {str(e).rstrip('.')}; "
                             "if you trust this file, "
                             "raise PIL.Image.MAX_IMAGE_PIXELS") from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(f"{name}: not an image file PIL can read (unknown format or corrupt header)") from e
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageLoadError):
            raise
        raise ImageLoadError(f"{name}: damaged image data ({e})") from e
    return to_rgb(image, name=name)


def _check_pixels(image: Image.Image, name: str) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise ImageLoadError(f"{name}: refused as a possible decompression bomb: {width}x{height} = "
                             f"{width * height:,} pixels is over the limit of {limit:,}; if you trust this file, "
                             "raise PIL.Image.MAX_IMAGE_PIXELS")


def to_rgb(image: Image.Image, *, name: str) -> Image.Image:
    """Upright 8-bit RGB, whatever the mode: L, 1, P, RGBA, LA, CMYK, I;16, I, F, YCbCr, LAB ..."""
    try:
        image = ImageOps.exif_transpose(image) or image
    except Exception:  # a damaged EXIF block should not lose the picture
        pass
    if image.width < 1 or image.height < 1:
        raise ImageLoadError(f"{name}: has no pixels ({image.width}x{image.height})")
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image), mode)).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale a high-bit-depth grayscale image to 0..255 by its type's range, not by its content."""
    values = values.astype(np.float64)
    if mode.startswith("I;16"):
        scale = 255.0 / 65535.0
    elif mode == "F":
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
    else:  # "I": 32-bit ints, in practice 16-bit data (older Pillow opens 16-bit PNGs this way)
        scale = 255.0 / 65535.0 if values.size and values.max() > 255 else 1.0
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageLoadError(f"{name}: an array of shape {array.shape}; expected HWC with 3 or 4 channels, or HW")
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating):
        pixels = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    elif array.dtype == np.bool_:
        pixels = array.astype(np.uint8) * 255
    else:
        raise ImageLoadError(f"{name}: pixels of dtype {array.dtype}; use uint8 (0..255) or float (0..1)")
    return to_rgb(Image.fromarray(np.ascontiguousarray(pixels)), name=name)


def download(url: str, *, max_bytes: int = MAX_DOWNLOAD_BYTES, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """The body at ``url`` (http, https or file), refusing more than ``max_bytes``."""
    request = urllib.request.Request(url, headers={"User-Agent": "resnetkit"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(max_bytes + 1)
    except Exception as e:  # URLError, HTTPError, timeouts, OSError ...
        raise ImageLoadError(f"{url}: download failed ({e})") from e
    if len(data) > max_bytes:
        raise ImageLoadError(f"{url}: larger than {max_bytes // (1024 * 1024)} MiB; download it yourself if intended")
    return data


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files, folders (searched recursively for images), glob patterns and URLs, as a flat list.

    Named files and URLs are kept even if they do not exist or are not images, so they get an error
    result naming them rather than vanishing; folders and globs contribute only image files.
    """
    expanded: list[str] = []
    for item in inputs:
        if is_url(item):
            expanded.append(item)
        elif os.path.isdir(item):
            expanded.extend(_images_under(Path(item)))
        elif glob.has_magic(item):
            for match in sorted(glob.glob(item, recursive=True)):
                if os.path.isdir(match):
                    expanded.extend(_images_under(Path(match)))
                elif Path(match).suffix.lower() in IMAGE_EXTENSIONS:
                    expanded.append(match)
        else:
            expanded.append(item)
    return list(dict.fromkeys(expanded))  # a file named twice (folder and glob) is predicted once


def _images_under(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
