"""Turn an image file (or its bytes) into what a chat-completions request carries: a small base64 data URL.

Images are loaded with :func:`mghft.data.images.load_image` (alpha composited on white, middle frame of an
animation), shrunk so that the longer side is at most ``max_side`` pixels, and re-encoded as JPEG. A 512-pixel
image costs a vision model a fixed, small number of tokens and keeps requests a few tens of kilobytes.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from PIL import Image

from mghft.data.images import load_image
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
    """The bytes of an image input and a name for it in messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    path = Path(source)
    return path.read_bytes(), str(path)


def prepare_image(
    data: bytes, *, source: str = "<bytes>", max_side: int = DEFAULT_MAX_SIDE, quality: int = 90, sha256: str = ""
) -> PreparedImage:
    """Decode, downscale and encode an image's bytes.

    Raises:
        mghft.data.images.ImageLoadError: the bytes are not a readable image.
    """
    image = load_image(data, name=source)
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return PreparedImage(sha256=sha256 or image_sha256(data), data_url=url, image=image, source=source)
