"""Robust image loading: every file a sticker dataset or a user may hand us becomes one RGB ``PIL.Image``.

Rules (also in ``docs/data.md``):

* **Transparency** (RGBA, LA, PA, palette or grey/RGB with a ``tRNS`` colour) is composited onto a solid background,
  white by default. Stickers are drawn for light chat backgrounds; the public code's ``fromarray(..., 'RGB')`` on
  such files crashes or garbles colours.
* **Animated images** (GIF, APNG, WebP) give the frame ``n_frames // 2`` (0-based), the middle of the animation:
  many animated stickers open on a blank or fading frame, the middle one shows the content. A still image is its
  own single frame; other multi-frame files (MPO photos, multi-page TIFF) give their first frame.
* **Modes**: palette, CMYK, YCbCr, 1-bit and grey become RGB; 16-bit and 32-bit integer grey (``I;16*``, ``I``)
  are scaled from the 0..65535 range to 0..255; float grey (``F``) is read as 0..1.
* **EXIF orientation** is applied, so a phone photo stands upright.
* **Pixel limit**: width × height is read from the header and checked *before* any pixel is decoded
  (a decompression bomb costs nothing); over ``max_pixels`` raises ``ImageTooLargeError``.
* **Broken input** (truncated file, not an image, missing file, unsupported mode) raises ``ImageLoadError``, a
  ``ValueError`` whose message starts with the file's name.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from mghft.errors import MghftError

DEFAULT_MAX_PIXELS = 50_000_000
"""Default pixel limit (width × height of the canvas): about 7071 × 7071, far above any sticker."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
"""File extensions the folder reader treats as images (compared case-insensitively)."""

ImageSource = str | Path | bytes | bytearray | memoryview | BinaryIO

# EXIF orientation tag value -> the transpose that makes the image upright.
_ORIENTATION_TO_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
# Formats whose extra frames are an animation. Other multi-frame files keep frame 0: an MPO photo's second frame is
# another exposure or a preview, a TIFF's second page another picture.
_ANIMATION_FORMATS = frozenset({"GIF", "PNG", "WEBP"})


class ImageLoadError(MghftError, ValueError):
    """An image could not be loaded; the message names the file.

    Attributes:
        source: the file name (or ``<bytes>``/``<stream>``) the error is about.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ImageTooLargeError(ImageLoadError):
    """The image's header announces more pixels than allowed; nothing was decoded."""


def _source_name(source: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    return str(getattr(source, "name", "<stream>"))


def _wide_grey_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey -> 8-bit grey, scaling instead of clipping (Pillow clips)."""
    arr = np.asarray(im)
    if im.mode == "F":
        out = np.clip(arr.astype(np.float64) * 255.0, 0, 255)
    else:
        out = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
    return Image.fromarray(np.rint(out).astype(np.uint8), mode="L")


def _to_rgb(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any single-frame image -> RGB, transparency composited onto ``background``."""
    if im.mode in _WIDE_GREY_MODES:
        im = _wide_grey_to_l(im)
    has_alpha = im.mode in _ALPHA_MODES or im.mode == "P" or (im.mode in ("L", "RGB") and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
    name: str | None = None,
) -> Image.Image:
    """Load any image file as a fully decoded RGB image, following the module's rules.

    Args:
        source: a path, the file's bytes, or a binary file object (read from its current position, not closed).
        max_pixels: most pixels (width × height) allowed, checked from the header before decoding; ``None``
            disables the check (Pillow's own decompression-bomb limit still applies).
        background: RGB colour transparent pixels are composited onto.
        name: how to call the source in error messages (default: the path, the file object's name, or ``<bytes>``).

    Returns:
        A loaded RGB image independent of the source.

    Raises:
        ImageTooLargeError: the header announces more than ``max_pixels`` pixels.
        ImageLoadError: the file is missing, not an image, truncated or in an unsupported mode.
    """
    label = _source_name(source, name)
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise ImageLoadError(label, "no such file")
        if not path.is_file():
            raise ImageLoadError(label, "not a file")
        fp: str | Path | BinaryIO = path
    elif isinstance(source, bytes | bytearray | memoryview):
        fp = io.BytesIO(bytes(source))
    else:
        fp = source
    try:
        with Image.open(fp) as im:
            width, height = im.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    label, f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
                )
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            n_frames = getattr(im, "n_frames", 1)
            if n_frames > 1 and im.format in _ANIMATION_FORMATS:
                im.seek(n_frames // 2)
            im.load()
            rgb = _to_rgb(im, background)
            if rgb is im:
                rgb = im.copy()
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(label, f"refused by Pillow's decompression-bomb check ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(label, "not a recognised image file") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, ... on damaged files
        reason = str(exc) or type(exc).__name__
        raise ImageLoadError(label, f"cannot decode image ({reason})") from exc
    transpose = _ORIENTATION_TO_TRANSPOSE.get(orientation)
    if transpose is not None:
        rgb = rgb.transpose(transpose)
    return rgb


def image_size(source: str | Path) -> tuple[int, int]:
    """Width and height from the file's header, without decoding pixels (EXIF orientation not applied).

    Raises:
        ImageLoadError: the file is missing or not an image.
    """
    label = str(source)
    try:
        with Image.open(source) as im:
            return im.size
    except FileNotFoundError as exc:
        raise ImageLoadError(label, "no such file") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(label, "not a recognised image file") from exc
    except Exception as exc:
        raise ImageLoadError(label, f"cannot read image header ({exc})") from exc
