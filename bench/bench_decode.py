"""Decoding cost of the one decoder against the bare torchvision decode it wraps, side by side.

``resnetkit.data.decode_rgb`` reads each file's header with PIL first (size for the decompression-bomb
guard, format and mode for the route) and converts the result (16-bit, alpha); before issue 11 training
decoded with ``torchvision.io.decode_image(..., mode=RGB)`` alone. This times both on the same encoded
images, one thread, interleaved round by round so background load falls on both alike.

    PYTHONPATH=src python bench/bench_decode.py [--tar PATH] [--images 5000] [--rounds 5]
    PYTHONPATH=src python bench/bench_decode.py --photo 500x375 [--images 200]   # synthetic JPEG photos
    PYTHONPATH=src python bench/bench_decode.py --photo 500x375 --format png     # synthetic 8-bit PNG photos

For PNG, decode_rgb first checks the file (``data/png.py``: chunk CRCs, the image data inflated to its expected
length) because torchvision's PNG decoder kills the process on damaged data, then decodes 8-bit PNG with PIL;
the PNG table adds bare PIL, the decoder that does the work, so the check's own cost shows.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from resnetkit.device import describe_machine
from resnetkit.data import decode_rgb

warnings.filterwarnings("ignore", category=DeprecationWarning)
DEFAULT_TAR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-train-jpeg.tar"


def read_members(tar: Path, count: int) -> list[bytes]:
    found = []
    with tarfile.open(tar) as archive:
        for member in archive:
            if member.isfile() and member.name.lower().endswith((".jpg", ".jpeg", ".png")):
                found.append(archive.extractfile(member).read())  # type: ignore[union-attr]
                if len(found) == count:
                    break
    return found


def synthetic_photos(width: int, height: int, count: int, fmt: str = "jpeg") -> list[bytes]:
    """Smooth gradients plus noise saved as quality-90 JPEGs (or PNGs): roughly the bytes per pixel of a photo."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    found = []
    for _ in range(count):
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {}))
        found.append(buffer.getvalue())
    return found


def bare_torchvision(data: bytes) -> torch.Tensor:
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                        apply_exif_orientation=True)


def bare_pil(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tar", type=Path, default=DEFAULT_TAR, help="a tar of JPEG/PNG images")
    parser.add_argument("--photo", default=None, metavar="WxH", help="decode synthetic JPEG photos of this size "
                        "instead of the tar's images (default: the tar)")
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg", help="with --photo: the synthetic "
                        "photos' format (default: %(default)s)")
    parser.add_argument("--images", type=int, default=5000, help="how many images to decode per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each decodes every image once)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.photo:
        width, height = map(int, args.photo.split("x"))
        images = synthetic_photos(width, height, args.images, args.format)
        where = f"synthetic {args.photo} {args.format.upper()} photos"
    else:
        images, where = read_members(args.tar, args.images), args.tar.name
    for data in images[:50]:  # same pixels, or the comparison means nothing
        assert torch.equal(decode_rgb(data), bare_torchvision(data))
    variants = {"torchvision decode_image (before)": bare_torchvision, "resnetkit decode_rgb (one decoder)": decode_rgb}
    if any(data.startswith(b"\x89PNG") for data in images):
        assert all(torch.equal(decode_rgb(data), bare_pil(data)) for data in images[:50])
        variants["PIL decode (what decode_rgb calls for 8-bit PNG)"] = bare_pil
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, decode in variants.items():
            start = time.perf_counter()
            for data in images:
                decode(data)
            seconds[name].append(time.perf_counter() - start)
    print(f"{len(images)} images ({where}, {sum(map(len, images)) / len(images) / 1e3:.1f} kB each), {args.rounds} interleaved rounds, 1 thread; "
          f"{describe_machine()}, load average "
          + " ".join(f"{v:.1f}" for v in os.getloadavg()))
    print("| decoder | median s per round | best s per round | us per image (median) |")
    print("|---|---:|---:|---:|")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"| {name} | {median:.3f} | {min(times):.3f} | {median / len(images) * 1e6:.0f} |")


if __name__ == "__main__":
    main()
