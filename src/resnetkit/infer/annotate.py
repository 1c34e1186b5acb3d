"""Draw a prediction's label and probability on its image."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

# Small images (CIFAR is 32x32) are enlarged before drawing, so the text stays readable.
MIN_SIDE = 256
MAX_ENLARGED_SIDE = 4096  # ... but a long thin strip is not blown up to gigabytes


def enlarge(image: Image.Image, min_side: int = MIN_SIDE, max_side: int = MAX_ENLARGED_SIDE) -> Image.Image:
    """``image`` scaled up (nearest neighbour, pixels stay visible) so its shorter side is at least ``min_side``.

    The longer side is never scaled past ``max_side``: a 5000x1 strip stays as it is, not 1,280,000x256.
    """
    short = min(image.size)
    if short >= min_side:
        return image
    factor = min(-(-min_side // short), max(1, max_side // max(image.size)))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def draw_label(image: Image.Image, text: str) -> Image.Image:
    """A copy of ``image`` (enlarged if small) with ``text`` in white on a dark band along the top."""
    canvas = enlarge(image.convert("RGB")).copy()
    font_size = max(12, min(canvas.size) // 16)
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(canvas, "RGBA")
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, font_size // 4)
    draw.rectangle((0, 0, canvas.width, bottom - top + 2 * pad), fill=(0, 0, 0, 170))
    draw.text((pad - left, pad - top), text, fill=(255, 255, 255, 255), font=font)
    return canvas


def label_text(label: str | None, probability: float | None) -> str:
    return f"{label}  {100 * (probability or 0.0):.1f}%"
