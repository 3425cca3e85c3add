"""Heatmap overlays of an explanation: legible on light, dark and transparent stickers, and labelled.

The sticker under the heatmap is turned grey and its contrast compressed to mid-tones, so a bright colour scale
(dark violet → orange → yellow, "picked more often") stands out whatever the sticker's own colours: black line
art, saturated red or a white background left by a transparent one.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Colour scale stops (position, RGB): low scores violet, high ones orange then yellow (high luminance).
_STOPS = ((0.0, (72, 20, 130)), (0.5, (235, 90, 40)), (1.0, (255, 236, 60)))
_GREY_RANGE = (70, 190)  # the sticker's luminance inside the heatmap is mapped into this range
LEGEND = ("patches picked: rarely", "often")


class _Explained(Protocol):
    crop_box: tuple[float, float, float, float]
    heatmap: np.ndarray


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """RGB colours (..., 3) uint8 of heat values in [0, 1] on the overlay's colour scale."""
    heat = np.clip(heat, 0.0, 1.0)
    out = np.zeros((*heat.shape, 3))
    for (p0, c0), (p1, c1) in zip(_STOPS, _STOPS[1:], strict=False):
        t = np.clip((heat - p0) / (p1 - p0), 0.0, 1.0)[..., None]
        inside = ((heat >= p0) & (heat <= p1))[..., None]
        out = np.where(inside, np.asarray(c0) * (1 - t) + np.asarray(c1) * t, out)
    return out.round().astype(np.uint8)


def heatmap_overlay(image: Image.Image, explanation: _Explained, alpha: float = 0.75) -> Image.Image:
    """The image with the heatmap laid over the model's crop, as RGB of the image's size.

    Inside the crop the sticker is shown in compressed grey and every scored cell in the colour scale
    (opacity ``alpha`` at the highest score, a third of it at the lowest); outside the crop the image is unchanged.
    """
    base = image.convert("RGB")
    x0, y0, x1, y1 = (int(round(c)) for c in explanation.crop_box)
    box = (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))
    size = (box[2] - box[0], box[3] - box[1])
    lo, hi = _GREY_RANGE
    grey = np.asarray(base.crop(box).convert("L"), dtype=np.float32)
    grey = lo + grey * (hi - lo) / 255.0  # (h, w): dark stickers lifted, white backgrounds dimmed
    heat = np.asarray(
        Image.fromarray(np.clip(explanation.heatmap, 0, 1).astype(np.float32), mode="F").resize(
            size, Image.Resampling.BILINEAR
        )
    )
    colours = heat_colours(heat).astype(np.float32)  # (h, w, 3)
    weight = np.where(heat > 0.02, alpha * (1 / 3 + 2 / 3 * heat), 0.0)[..., None]
    mixed = grey[..., None] * (1 - weight) + colours * weight
    out = base.copy()
    out.paste(Image.fromarray(mixed.round().clip(0, 255).astype(np.uint8), mode="RGB"), (box[0], box[1]))
    return out


def labelled_overlay(image: Image.Image, explanation: _Explained, label: str, min_width: int = 320) -> Image.Image:
    """:func:`heatmap_overlay` with a caption strip below it: ``label`` (e.g. the prediction) and the colour legend.

    Small stickers are scaled up to ``min_width`` pixels first, so the caption stays readable.
    """
    over = heatmap_overlay(image, explanation)
    if over.width < min_width:
        scale = min_width / over.width
        over = over.resize((min_width, max(1, round(over.height * scale))), Image.Resampling.NEAREST)
    w = over.width
    font = ImageFont.load_default(size=max(12, w // 26))
    small = ImageFont.load_default(size=max(10, w // 34))
    line = font.getbbox("Ag")[3] + 6
    strip = line + small.getbbox("Ag")[3] + 18
    canvas = Image.new("RGB", (w, over.height + strip), (24, 24, 28))
    canvas.paste(over, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = over.height + 4
    draw.text((6, y), label, fill=(255, 255, 255), font=font)
    y += line
    grey = (220, 220, 220)
    draw.text((6, y), LEGEND[0], fill=grey, font=small)
    x = 6 + round(draw.textlength(LEGEND[0], font=small)) + 6
    bar_w = max(40, w // 5)
    bar = heat_colours(np.linspace(0, 1, bar_w)[None, :].repeat(max(6, line // 2), 0))
    canvas.paste(Image.fromarray(bar, mode="RGB"), (x, y + 2))
    draw.text((x + bar_w + 6, y), LEGEND[1], fill=grey, font=small)
    return canvas
