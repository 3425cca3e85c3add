"""Turn an image file (or its bytes) into what a chat-completions request carries: a small base64 data URL.

Images are loaded with :func:`mghft.data.images.decode_image` (the format allowlist, header checks and decode
budget; alpha composited on white; the middle frame of an animation, or with ``frames=k`` a strip of ``k`` evenly
spaced frames side by side), shrunk so that the longer side is at most ``max_side`` pixels, and re-encoded as JPEG.
A 512-pixel image costs a vision model a fixed, small number of tokens and keeps requests a few tens of kilobytes.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from PIL import Image

from mghft.data.images import DecodeLimits, decode_image, read_regular_file
from mghft.interpret.description import image_sha256

DEFAULT_MAX_SIDE = 512
"""Longer side of the image sent to the model, in pixels."""

ImageInput = str | PathLike[str] | bytes | bytearray | memoryview


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to send.

    Attributes:
        sha256: hash of the original file bytes (the store key).
        data_url: ``data:image/jpeg;base64,...`` of the downscaled image.
        image: the downscaled RGB image (for local backends).
        source: the file path, or ``<bytes>``.
    """

    sha256: str
    data_url: str
    image: Image.Image
    source: str


def read_image_bytes(source: ImageInput) -> tuple[bytes, str]:
    """The bytes of an image input and a name for it in messages.

    Raises:
        mghft.data.images.ImageLoadError: a path that is missing, not a regular file (FIFO, device) or too big.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    path = Path(source)
    return read_regular_file(path), str(path)


def frame_strip(frames: list[Image.Image], gap: int = 4) -> Image.Image:
    """Frames side by side, left to right in time order, on white with ``gap`` pixels between (one frame: itself)."""
    if len(frames) == 1:
        return frames[0]
    height = max(f.height for f in frames)
    strip = Image.new("RGB", (sum(f.width for f in frames) + gap * (len(frames) - 1), height), (255, 255, 255))
    x = 0
    for f in frames:
        strip.paste(f, (x, (height - f.height) // 2))
        x += f.width + gap
    return strip


def prepare_image(
    data: bytes,
    *,
    source: str = "<bytes>",
    max_side: int = DEFAULT_MAX_SIDE,
    quality: int = 90,
    sha256: str = "",
    frames: int = 1,
    limits: DecodeLimits | None = None,
) -> PreparedImage:
    """Decode, downscale and encode an image's bytes.

    Args:
        data: the file's bytes.
        source: the name used in errors.
        max_side: longer side of the result, pixels.
        quality: JPEG quality.
        sha256: the bytes' hash, if already known.
        frames: frames of an animation to show; more than one makes a strip of evenly spaced frames, left to right
            (a still image stays one frame).
        limits: decode limits (default: ``DecodeLimits()``).

    Raises:
        mghft.data.images.ImageLoadError: the bytes are not a readable image.
    """
    image = frame_strip(decode_image(data, frames=frames, limits=limits, name=source).frames)
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return PreparedImage(sha256=sha256 or image_sha256(data), data_url=url, image=image, source=source)
