"""Turn whatever a user has (a path, URL, upload, PIL image, array or tensor) into an upright RGB image.

Encoded files go through the one decoder of the data package (``data.image.decode_rgb``), so predict
and serve see a file exactly as training and ``resnetkit eval`` do: EXIF orientation, transparency on
white, 16-bit rounded to 8 bits, palettes, CMYK, first frames and the decompression-bomb guard are
decided there. Failures raise ``ImageLoadError`` with the input's name, so a batch can report them and
carry on.
"""

from __future__ import annotations

import glob
import os
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from ..data.image import ImageLoadError, decode_rgb, pil_to_rgb, read_image_file, to_pil
from ..data.tree import IMAGE_EXTENSIONS, is_macos_metadata
from ..files import file_url_path, is_url, walk_files

__all__ = ["ImageInput", "ImageLoadError", "describe", "download", "expand_inputs", "is_url", "load_image",
           "load_pixels"]

# What ``predict`` accepts for one image.
ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray, torch.Tensor]

MAX_DOWNLOAD_BYTES = 100 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 30.0  # for the whole download
DOWNLOAD_CHUNK = 1 << 16
FLOAT_SLACK = 0.25  # float pixels a bicubic resize pushed past 0..1 (about 5%) are clipped; 0..255 or normalised


def describe(source: Any, index: int) -> str:
    """A short name for an input, used in results and error messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Image.Image) and getattr(source, "filename", ""):
        return str(source.filename)
    kind = {bytes: "bytes", np.ndarray: "array", torch.Tensor: "tensor"}.get(type(source), "image")
    return f"<{kind} #{index}>"


def load_pixels(source: ImageInput, *, name: str | None = None) -> torch.Tensor:
    """A (3, H, W) uint8 RGB tensor from any supported input, EXIF-rotated upright.

    Float arrays and tensors are taken to be in [0, 1]; uint8 ones in [0, 255]. Tensors are CHW,
    arrays HWC (or HW for grayscale).
    """
    name = name or describe(source, 0)
    if isinstance(source, Image.Image):
        return pil_to_rgb(source, name=name)
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
        return decode_rgb(source, name=name)
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        local = file_url_path(text)  # a file:// URL is read as its path is
        if local is None and is_url(text):
            return decode_rgb(download(text), name=name)
        path = Path(local or text)
        if not path.exists():
            raise ImageLoadError(f"{name}: no such file")
        if path.is_dir():
            raise ImageLoadError(f"{name}: is a folder; pass the images inside it (the CLI expands folders)")
        return decode_rgb(read_image_file(path, name=name), name=name)
    raise ImageLoadError(f"{name}: a {type(source).__name__} is not an image; pass a path, URL, bytes, "
                         "PIL image, HWC numpy array or CHW tensor")


def load_image(source: ImageInput, *, name: str | None = None) -> Image.Image:
    """``load_pixels`` as a PIL RGB image (for drawing and saving)."""
    return to_pil(load_pixels(source, name=name))


def _from_array(array: np.ndarray, name: str) -> torch.Tensor:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageLoadError(f"{name}: an array of shape {array.shape}; expected HWC with 3 or 4 channels, or HW")
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError(f"{name}: pixels include NaN or infinity; pass finite values (floats in 0..1)")
        low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
        if low < -FLOAT_SLACK or high > 1 + FLOAT_SLACK:  # 0..255 floats, or an already normalised tensor
            raise ImageLoadError(f"{name}: float pixels from {low:.3g} to {high:.3g}; give floats in 0..1 (divide "
                                 "0..255 values by 255) or uint8, not a normalised tensor: the predictor normalises "
                                 "with the model's own mean and std")
        pixels = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    elif array.dtype == np.bool_:
        pixels = array.astype(np.uint8) * 255
    else:
        raise ImageLoadError(f"{name}: pixels of dtype {array.dtype}; use uint8 (0..255) or float (0..1)")
    return pil_to_rgb(Image.fromarray(np.ascontiguousarray(pixels)), name=name)


def download(url: str, *, max_bytes: int = MAX_DOWNLOAD_BYTES, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """The body at ``url`` (http, https or file), refusing more than ``max_bytes`` or taking more than ``timeout``
    seconds in all (urlopen's timeout bounds each read: a server sending a byte every few seconds never ends)."""
    deadline = time.monotonic() + timeout
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "resnetkit"})  # a malformed URL raises here
        with urllib.request.urlopen(request, timeout=timeout) as response:
            chunks, size = [], 0
            read = getattr(response, "read1", response.read)  # read1: what one receive brings, without waiting for more
            while size <= max_bytes:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not finished after {timeout:g} s")
                chunk = read(min(DOWNLOAD_CHUNK, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
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
    imageless: list[str] = []  # folders and patterns that name no image: said, not passed over in silence
    for item in inputs:
        before = len(expanded)
        if is_url(item):
            expanded.append(item)
        elif os.path.isdir(item):
            expanded.extend(_images_under(Path(item)))
        elif glob.has_magic(item) and not os.path.lexists(item):  # "x[1].png" that exists is that file, not x1.png
            for match in sorted(glob.glob(item, recursive=True)):
                if os.path.isdir(match):
                    expanded.extend(_images_under(Path(match)))
                elif Path(match).suffix.lower() in IMAGE_EXTENSIONS:
                    expanded.append(match)
        else:
            expanded.append(item)
        if len(expanded) == before:
            imageless.append(item)
    if imageless and expanded:  # with nothing at all, the caller refuses naming the inputs
        warnings.warn(f"no images found in {', '.join(imageless)}; the other inputs are predicted", stacklevel=2)
    return list(dict.fromkeys(expanded))  # a file named twice (folder and glob) is predicted once


def _images_under(folder: Path) -> list[str]:
    """The image files under a folder, found as training and eval find them (linked folders followed, each
    real folder once); an entry named as an image that is not a regular file (a pipe, a dangling link) is kept, so
    that it gets an error naming it."""
    return sorted(p for p in walk_files(folder) if Path(p).suffix.lower() in IMAGE_EXTENSIONS
                  and not is_macos_metadata(Path(p).relative_to(folder).as_posix()))
