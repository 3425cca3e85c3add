"""One image-opening path: every file a sticker dataset, a folder or an upload hands us becomes RGB ``PIL.Image``\\ s.

Rules (also in ``docs/data.md``):

* **Format allowlist.** The format is sniffed from the file's first bytes (the extension is never trusted) and must
  be one of :data:`ALLOWED_FORMATS`: PNG/APNG, JPEG (JFIF, Exif, MPO), GIF, WebP (still and animated), AVIF (when
  Pillow's AVIF decoder is present), BMP, Telegram TGS (gzipped Lottie) and WebM (VP8/VP9, with alpha). Anything
  else (TIFF, ICO, EPS, PSD, ...) is refused before any decoder is chosen, so no other Pillow plugin, and never
  Ghostscript, sees the bytes.
* **Header-only checks before any decode**: canvas width × height against ``max_pixels``, the number of frames
  (counted from headers or container packets, without decoding) against ``max_frames``.
* **Frame policy** for every animated format (GIF, APNG, animated WebP/AVIF, TGS, WebM): the frame at index
  ``n_frames // 2`` (0-based), the middle of the animation, because many animated stickers open on a blank or
  fading-in frame. ``frames=k`` samples ``k`` frames instead, at indices ``floor((2i + 1) n / 2k)`` (``k = 1`` is the
  middle). Still images and other multi-frame files (an MPO photo's second exposure) give their first frame.
* **Decode budget**: reaching frame ``i`` of a GIF, APNG, WebP or WebM composites every earlier frame onto the
  canvas, so it costs ``(i + 1) × canvas pixels`` (at least :data:`MIN_FRAME_COST` a frame). The chosen frames are
  capped at ``decode_budget // canvas pixels - 1``; when the policy's frame lies beyond, an earlier frame is used
  and :attr:`DecodedImage.note` says which and why (also logged as a warning). Decoding that still runs past
  ``max_seconds`` is refused.
* **Transparency** (alpha channel, palette or a ``tRNS`` colour key at any bit depth: 1-, 2-, 4-, 8- and 16-bit
  grey, 8- and 16-bit RGB) is composited onto a solid background, white by default.
* **Modes**: palette, CMYK, YCbCr, 1-bit and grey become RGB; 16- and 32-bit integer grey are scaled from
  0..65535 to 0..255; float grey is read as 0..1.
* **EXIF orientation** is applied, so a phone photo stands upright; EXIF/XMP that Pillow cannot parse means no
  orientation, and :attr:`DecodedImage.note` says so (metadata never refuses a decodable image). An animation whose
  frames break off gives the last frame before the damage, with a note.
* **Native decoders in worker processes**: TGS, WebM and AVIF (:data:`~mghft.data.decode_pool.ISOLATED_FORMATS`)
  decode in :mod:`mghft.data.decode_pool`'s workers under wall-time, CPU-time and address-space limits, so a crash,
  hang or memory blow-up raises :class:`ImageLoadError` naming the file and the process goes on.
* **Errors**: :class:`ImageLoadError` (a ``ValueError`` and a :class:`~mghft.errors.MghftError`) whose message starts
  with the file's name and says what is wrong in the user's terms (:func:`damage_reason`); a decoder's exception
  text is never passed on.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError, features

from mghft.data.decode_pool import AVAILABLE as _POOL_AVAILABLE
from mghft.data.decode_pool import ISOLATED_FORMATS
from mghft.errors import MghftError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 50_000_000
"""Default pixel limit (width × height of the canvas): about 7071 × 7071, far above any sticker."""
DEFAULT_MAX_FRAMES = 10_000
"""Default frame limit: Telegram allows 180 frames, a long GIF has a few hundred."""
DEFAULT_DECODE_BUDGET = 40_000_000
"""Default decode budget in canvas pixels × frames composited: 152 frames of a 512 × 512 sticker, about half a
second of GIF or WebP decoding on one core."""
MIN_FRAME_COST = 128 * 128
"""What one frame counts against the decode budget at the least, in canvas pixels (the per-frame overhead)."""
DEFAULT_MAX_SECONDS = 10.0
"""Wall-clock limit for decoding one file's frames."""
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
"""Largest file read from disk, bytes."""
DEFAULT_MAX_MEMORY = 2 * 1024 * 1024 * 1024
"""Address space a decode worker may add to its start-up size while decoding one file, bytes (enough for a
:data:`DEFAULT_MAX_PIXELS` AVIF: its YUV planes, RGBA and RGB copies)."""

# The allowlist: our format name -> the Pillow plugins allowed to open it ("" = a reader of our own).
_AVIF = features.check("avif")
_PILLOW_PLUGINS: dict[str, tuple[str, ...]] = {
    "PNG": ("PNG",),
    "JPEG": ("JPEG",),  # Pillow's JPEG plugin hands MPO files to its MPO class itself
    "GIF": ("GIF",),
    "WEBP": ("WEBP",),
    "BMP": ("BMP",),
    **({"AVIF": ("AVIF",)} if _AVIF else {}),
}
_OWN_READERS = {"TGS": (".tgs",), "WEBM": (".webm",)}
ALLOWED_FORMATS: tuple[str, ...] = (*_PILLOW_PLUGINS, *_OWN_READERS)
"""Formats the loader opens (sniffed from content). AVIF is listed only where Pillow was built with it."""
ANIMATED_FORMATS = frozenset({"GIF", "PNG", "WEBP", "AVIF", "TGS", "WEBM"})
"""Formats whose extra frames are an animation (the frame policy applies)."""


def _extensions() -> tuple[str, ...]:
    Image.init()
    pillow = {f for plugins in _PILLOW_PLUGINS.values() for f in plugins} | {"MPO"}
    found = {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in pillow}
    for exts in _OWN_READERS.values():
        found.update(exts)
    return tuple(sorted(found))


IMAGE_EXTENSIONS: tuple[str, ...] = _extensions()
"""File extensions folder searches treat as images (lower case): those Pillow registers for the allowed formats
(``.png .apng .jpg .jpeg .jpe .jfif .mpo .gif .webp .bmp`` and ``.avif .avifs`` with AVIF) plus ``.tgs .webm``.
The loader itself goes by content, not by extension."""

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
_KEY_MODES = ("1", "L", "RGB", *_WIDE_GREY_MODES)
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)


class ImageLoadError(MghftError, ValueError):
    """An image could not be loaded; the message names the file and the reason.

    Attributes:
        source: the file name (or ``<bytes>``/``<stream>``) the error is about.
        reason: what is wrong, without the name.
    """

    def __init__(self, source: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{source}: {reason}", hint=hint)
        self.source = source
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        # Travels intact from a DataLoader worker process (the default would call cls(message) and fail).
        return (type(self), (self.source, self.reason), {"hint": self.hint})


class ImageTooLargeError(ImageLoadError):
    """The image's header announces more pixels or frames than allowed; nothing was decoded."""


class ImageFormatError(ImageLoadError):
    """The file's content is not one of :data:`ALLOWED_FORMATS` (whatever its extension)."""


class DecodeBudgetError(ImageLoadError):
    """Decoding ran past its time limit and was stopped."""


@dataclass(frozen=True)
class DecodeLimits:
    """Resource limits for opening one file.

    Attributes:
        max_pixels: most canvas pixels (width × height), read from the header; ``None`` disables the check
            (Pillow's own decompression-bomb limit still applies).
        max_frames: most frames an animation may declare or hold.
        decode_budget: most canvas pixels × frames composited to reach the chosen frames.
        max_seconds: wall-clock limit for the decode itself.
        max_bytes: largest file read from a path.
        max_memory: address space, bytes, a decode worker may add for one file (formats decoded out of process).
        isolate: decode TGS, WebM and AVIF in worker processes (:mod:`mghft.data.decode_pool`), so that a crash,
            hang or memory blow-up of their native decoders costs only the file; ``False`` decodes them in this
            process (faster by a few percent, see ``docs/security.md``; only for trusted files).
    """

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_frames: int = DEFAULT_MAX_FRAMES
    decode_budget: int = DEFAULT_DECODE_BUDGET
    max_seconds: float = DEFAULT_MAX_SECONDS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_memory: int = DEFAULT_MAX_MEMORY
    isolate: bool = True


@dataclass
class DecodedImage:
    """What :func:`decode_image` read.

    Attributes:
        frames: the chosen frames, RGB, transparency composited, EXIF orientation applied.
        format: the sniffed format (one of :data:`ALLOWED_FORMATS`).
        n_frames: frames in the file (1 for a still image).
        indices: 0-based index of each returned frame.
        canvas: width and height of the canvas as stored (before orientation).
        note: empty, or why the frame policy was not followed (decode budget).
    """

    frames: list[Image.Image]
    format: str
    n_frames: int
    indices: list[int]
    canvas: tuple[int, int]
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def image(self) -> Image.Image:
        """The first returned frame (the policy's frame when one was asked for)."""
        return self.frames[0]


# --- sniffing ------------------------------------------------------------------------------------------------------


def sniff_format(head: bytes) -> str | None:
    """The allowed format of a file from its first bytes (at least 64 are needed for AVIF and WebM), or ``None``."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if (
        head[:2] == b"BM"
        and len(head) >= 18
        and struct.unpack_from("<I", head, 14)[0] in (12, 40, 52, 56, 64, 108, 124)
    ):
        return "BMP"
    if head[4:8] == b"ftyp" and _AVIF:
        size = struct.unpack_from(">I", head, 0)[0]
        brands = {head[i : i + 4] for i in range(8, min(size, len(head)) - 3, 4) if i != 12}
        if brands & {b"avif", b"avis"}:
            return "AVIF"
        return None
    if head.startswith(b"\x1f\x8b"):
        return "TGS"
    if head.startswith(b"\x1a\x45\xdf\xa3") and b"webm" in head[:64]:
        return "WEBM"
    return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _refusal(data: bytes) -> tuple[type[ImageLoadError], str, str | None]:
    """Why a file that sniffs as no allowed format is refused, in the user's terms: class, reason, hint."""
    head = data[:64]
    accepted = f"accepted formats: {', '.join(ALLOWED_FORMATS)}"
    if head[1:4] == b"PNG" and head[:8] != _PNG_SIGNATURE:
        if head[4:8].count(b"\r") != 1 or b"\n" not in head[4:8] or b"\r\r" in head[:10] or head[:10].count(b"\n") > 2:
            return (
                ImageLoadError,
                "damaged PNG file: its signature has the line ends changed, as a text-mode (CR/LF) transfer does",
                "copy or download the file again in binary mode (FTP: `binary`; git: mark *.png binary)",
            )
        return ImageLoadError, "damaged PNG file: its first 8 bytes (the PNG signature) are wrong", None
    if head.startswith(b"PK\x03\x04"):
        if b"manifest.json" in data[:65536] and (b"animations/" in data or b".json" in data[:65536]):
            return (
                ImageFormatError,
                "a dotLottie (.lottie) file: this format is not supported",
                "export the animation as a Telegram TGS sticker or as Lottie JSON gzipped into a .tgs "
                "(gzip -c anim.json > anim.tgs)",
            )
        return ImageFormatError, "a ZIP archive, not an image", accepted
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"{") and b'"layers"' in data[: 1 << 20] and b'"v"' in data[: 1 << 20]:
        return (
            ImageFormatError,
            "uncompressed Lottie JSON: stickers are read as TGS (gzipped Lottie JSON)",
            "gzip it into a TGS: gzip -c anim.json > anim.tgs",
        )
    seen = _describe_unknown(head)
    reason = f"{seen} is not an accepted image format" if seen else "not a recognised image file"
    return ImageFormatError, reason, accepted


def _describe_unknown(head: bytes) -> str:
    """A short name for a refused format (for the error message), from well-known signatures."""
    known = {
        b"II*\x00": "TIFF",
        b"MM\x00*": "TIFF",
        b"\x00\x00\x01\x00": "ICO",
        b"%!PS": "PostScript/EPS",
        b"\xc5\xd0\xd3\xc6": "EPS",
        b"%PDF": "PDF",
        b"8BPS": "PSD",
        b"<svg": "SVG",
        b"<?xm": "XML/SVG",
    }
    for sig, fmt in known.items():
        if head.startswith(sig):
            return fmt
    if head[4:8] == b"ftyp":
        return "ISO media (HEIC/MP4)" if _AVIF else "ISO media (AVIF/HEIC/MP4; this Pillow has no AVIF decoder)"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "Matroska video (not WebM)"
    return ""


# --- reading the bytes ---------------------------------------------------------------------------------------------


def _source_name(source: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    return str(getattr(source, "name", "<stream>"))


def read_regular_file(path: str | Path, *, label: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a regular file (symbolic links followed), refusing FIFOs, devices, folders and oversize files.

    The type is checked before the file is opened, so a FIFO never blocks and ``/dev/zero`` is never read.

    Raises:
        ImageLoadError: missing, not a regular file, larger than ``max_bytes``, or unreadable.
    """
    label = label or str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageLoadError(label, "no such file" if not os.path.islink(path) else "broken symbolic link") from None
    except OSError as exc:
        raise ImageLoadError(label, f"cannot read ({exc.strerror or type(exc).__name__})") from None
    kind = special_file_kind(st.st_mode)
    if kind:
        raise ImageLoadError(label, f"not a regular file ({kind})")
    if st.st_size > max_bytes:
        raise ImageTooLargeError(label, f"{st.st_size} bytes exceeds the file size limit of {max_bytes}")
    try:
        # O_NONBLOCK: should a FIFO be swapped in after the check, opening it still returns at once.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ImageLoadError(label, "not a regular file")
            data = read_capped(fh, max_bytes)
    except OSError as exc:
        raise ImageLoadError(label, f"cannot read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > max_bytes:
        raise ImageTooLargeError(label, f"more than {max_bytes} bytes (the file size limit)")
    return data


def read_capped(stream: BinaryIO, max_bytes: int, chunk: int = 1 << 20) -> bytes:
    """Up to ``max_bytes + 1`` bytes of a stream, read in chunks (``read(n)`` would reserve n bytes up front)."""
    parts: list[bytes] = []
    total = 0
    while total <= max_bytes:
        part = stream.read(min(chunk, max_bytes + 1 - total))
        if not part:
            break
        parts.append(part)
        total += len(part)
    return b"".join(parts)


def special_file_kind(mode: int) -> str:
    """``""`` for a regular file, else what it is: ``folder``, ``FIFO``, ``socket``, ``device`` or ``special file``."""
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _read_source(source: ImageSource, label: str, limits: DecodeLimits) -> bytes:
    if isinstance(source, str | Path):
        return read_regular_file(source, label=label, max_bytes=limits.max_bytes)
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    data = source.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(label, f"more than {limits.max_bytes} bytes (the file size limit)")
    return data


# --- frame policy and budget ---------------------------------------------------------------------------------------


def policy_indices(n_frames: int, count: int = 1) -> list[int]:
    """The frames the policy picks: ``count`` evenly spaced indices ``floor((2i + 1) n / 2 count)``, no repeats.

    ``count = 1`` gives the middle frame ``n // 2``; a still image gives ``[0]``.
    """
    n, k = max(1, n_frames), max(1, count)
    if k >= n:
        return list(range(n))
    return sorted({((2 * i + 1) * n) // (2 * k) for i in range(k)})


def plan_frames(
    n_frames: int, canvas: tuple[int, int], count: int, limits: DecodeLimits, *, sequential: bool = True
) -> tuple[list[int], str]:
    """The frame indices to decode under the budget, and a note when the policy's frames were moved earlier.

    Args:
        n_frames: frames in the file.
        canvas: width, height.
        count: frames wanted.
        limits: the budget.
        sequential: reaching frame ``i`` costs ``i + 1`` canvases (GIF, APNG, WebP, AVIF, WebM); otherwise each
            frame costs one (TGS renders any frame directly).
    """
    wanted = policy_indices(n_frames, count)
    pixels = max(MIN_FRAME_COST, canvas[0] * canvas[1])  # a frame costs at least a small canvas (per-frame overhead)
    if sequential:
        reachable = max(0, limits.decode_budget // pixels - 1)
        chosen = sorted({min(i, reachable) for i in wanted})
    else:
        affordable = max(1, limits.decode_budget // pixels)
        chosen = wanted[:affordable]
    if chosen == wanted:
        return chosen, ""
    what = f"frame {chosen[-1]}" if len(chosen) == 1 else f"frames {chosen}"
    policy = f"the middle frame {wanted[0]}" if len(wanted) == 1 else f"frames {wanted}"
    note = (
        f"{what} instead of {policy}: {n_frames} frames of {canvas[0]}x{canvas[1]} exceed the decode budget "
        f"of {limits.decode_budget} canvas pixels"
    )
    return chosen, note


class Deadline:
    """Raises :class:`DecodeBudgetError` once ``seconds`` have passed since creation (checked between frames)."""

    def __init__(self, label: str, seconds: float) -> None:
        self.label, self.seconds, self.start = label, seconds, time.monotonic()

    def check(self, done: int) -> None:
        """Call between frames; ``done`` is how many frames were decoded so far."""
        if time.monotonic() - self.start > self.seconds:
            raise DecodeBudgetError(
                self.label, f"decoding stopped after {self.seconds:g} s ({done} frames decoded): over the time limit"
            )


# --- pixels --------------------------------------------------------------------------------------------------------


def _wide_grey_to_l(arr: np.ndarray, mode: str) -> np.ndarray:
    """16/32-bit integer or float grey -> 8-bit grey, scaling instead of clipping (Pillow clips)."""
    if mode == "F":
        out = np.clip(arr.astype(np.float64) * 255.0, 0, 255)
    else:
        out = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
    return np.rint(out).astype(np.uint8)


def _key_mask(im: Image.Image, key: object, png_depth: int | None) -> np.ndarray | None:
    """Boolean (H, W) mask of the pixels equal to a ``tRNS`` colour key, in the key's own units, or ``None``."""
    arr = np.asarray(im)
    mode = im.mode
    try:
        if mode == "1":
            return arr == bool(int(key))  # type: ignore[call-overload]
        if mode == "L":
            k = int(key)  # type: ignore[call-overload]
            if png_depth is not None and png_depth < 8:  # Pillow scales 1/2/4-bit grey up to 0..255, not the key
                k = k * 255 // ((1 << png_depth) - 1)
            return arr == k
        if mode in _WIDE_GREY_MODES:
            return arr.astype(np.int64) == int(key)  # type: ignore[call-overload]
        if mode == "RGB":
            k3 = tuple(int(v) for v in key)  # type: ignore[union-attr]
            if png_depth == 16:  # Pillow keeps the high byte of 16-bit samples; the key is in 16-bit units
                k3 = tuple(v >> 8 for v in k3)
            return np.all(arr[..., :3] == np.array(k3, dtype=arr.dtype), axis=-1)
    except (TypeError, ValueError):
        return None
    return None


def to_rgb(
    im: Image.Image, background: tuple[int, int, int] = (255, 255, 255), *, png_depth: int | None = None
) -> Image.Image:
    """Any single frame -> a new RGB image, transparency (alpha, palette, colour key) composited on ``background``.

    Args:
        im: the decoded frame.
        background: RGB colour for transparent pixels.
        png_depth: the PNG's bit depth, when ``im`` came from a PNG (colour keys of 1/2/4/16-bit images are in
            the file's units, not Pillow's).
    """
    mode = im.mode
    key = im.info.get("transparency") if mode in _KEY_MODES else None
    mask = _key_mask(im, key, png_depth) if key is not None else None
    if mode in _WIDE_GREY_MODES:
        im = Image.fromarray(_wide_grey_to_l(np.asarray(im), mode), mode="L")
    if mask is not None:
        rgb = np.asarray(im.convert("RGB")).copy()
        rgb[mask] = background
        return Image.fromarray(rgb, mode="RGB")
    if mode in _ALPHA_MODES or mode == "P":
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im.copy()


def _orient(images: list[Image.Image], orientation: int) -> list[Image.Image]:
    transpose = _ORIENTATION_TO_TRANSPOSE.get(orientation)
    return images if transpose is None else [im.transpose(transpose) for im in images]


def _orientation(im: Image.Image, fmt: str) -> tuple[int, str]:
    """The EXIF orientation (1: as stored) and a note when the metadata could not be read.

    Metadata never refuses a decodable image: an unreadable EXIF or XMP block (a Pillow error while parsing it)
    means no orientation is applied, and the note says so. Pixels are not read here except for PNG, where
    Pillow reads the first frame to find an ``eXIf`` chunk after the pixel data; a damage there is a decode error.
    """
    if fmt == "PNG":
        im.load()
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # Pillow parses EXIF/XMP with struct, bytes.fromhex, XML ...: any of them may raise
        return 1, "the file's EXIF/XMP metadata is unreadable: its orientation was not applied"
    return (value if isinstance(value, int) else 1), ""  # 0 and other values outside 1..8 mean "as stored"


# --- Pillow formats ------------------------------------------------------------------------------------------------


def gif_frame_count(data: bytes, stop_after: int) -> int:
    """Frames in a GIF counted from its block structure (no pixel decoded), stopping once past ``stop_after``.

    Raises:
        ValueError: the block structure is broken before the first frame.
    """
    pos = 13
    if len(data) < pos:
        raise ValueError("truncated GIF header")
    flags = data[10]
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)
    frames = 0

    def skip_sub_blocks(p: int) -> int:
        while p < len(data):
            size = data[p]
            p += 1 + size
            if size == 0:
                return p
        return p

    while pos < len(data) and frames <= stop_after:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos = skip_sub_blocks(pos + 2)
        elif block == 0x2C:  # image descriptor (10 bytes), optional local colour table, LZW size, sub-blocks
            if pos + 10 > len(data):
                break
            local = data[pos + 9]
            pos += 10
            if local & 0x80:
                pos += 3 << ((local & 7) + 1)
            pos = skip_sub_blocks(pos + 1)
            frames += 1
        else:
            break  # garbage after the last frame: Pillow stops there too
    if frames == 0:
        raise ValueError("no image in the GIF")
    return frames


def _png_header(data: bytes) -> tuple[int, int] | None:
    """Bit depth and colour type from a PNG's IHDR."""
    if len(data) >= 26 and data[12:16] == b"IHDR":
        return data[24], data[25]
    return None


def _webp_with_alpha(data: bytes) -> bytes:
    """An animated WebP with its alpha flag set, so that canvas areas no frame covers stay transparent.

    libwebp's encoder crops frames to their changed area and sets the alpha flag only when a stored frame has
    alpha; the uncovered canvas is still transparent, but a decoder honouring the flag paints it black.
    """
    if data[12:16] == b"VP8X" and len(data) > 20 and data[20] & 0x02 and not data[20] & 0x10:
        patched = bytearray(data)
        patched[20] |= 0x10
        return bytes(patched)
    return data


def _decode_pillow(
    data: bytes, fmt: str, label: str, count: int, limits: DecodeLimits, background: tuple[int, int, int]
) -> DecodedImage:
    if fmt == "WEBP":
        data = _webp_with_alpha(data)
    try:
        im = Image.open(io.BytesIO(data), formats=_PILLOW_PLUGINS[fmt])
    except Image.DecompressionBombError:
        raise ImageTooLargeError(label, _BOMB) from None
    except UnidentifiedImageError:
        raise ImageLoadError(label, f"not a readable {fmt} file (damaged header)") from None
    with im:
        width, height = im.size
        if limits.max_pixels is not None and width * height > limits.max_pixels:
            raise ImageTooLargeError(
                label, f"{width}x{height} = {width * height} pixels exceeds the limit of {limits.max_pixels}"
            )
        animated = fmt in ANIMATED_FORMATS
        if fmt == "GIF":
            n_frames = gif_frame_count(data, limits.max_frames)
        elif animated:
            n_frames = int(getattr(im, "n_frames", 1))  # PNG: acTL; WebP/AVIF: container header
        else:
            n_frames = 1  # MPO and the like: the first image is the picture
        if n_frames > limits.max_frames:
            raise ImageTooLargeError(label, f"more than {limits.max_frames} frames (the frame limit)")
        orientation, meta_note = _orientation(im, fmt)
        depth = _png_header(data)
        png_depth = depth[0] if fmt == "PNG" and depth else None
        indices, note = plan_frames(n_frames, (width, height), count, limits)
        note = "; ".join(n for n in (note, meta_note) if n)
        deadline = Deadline(label, limits.max_seconds)
        got, broken = _collect(im, indices, deadline, background, png_depth)
    if broken is not None:  # a damaged animation: keep the frames before the damage, and say so
        at, exc = broken
        if at - 1 not in {i for i, _ in got}:
            with Image.open(io.BytesIO(data), formats=_PILLOW_PLUGINS[fmt]) as again:
                again.load()
                more, _ = _collect(again, [at - 1], Deadline(label, limits.max_seconds), background, png_depth)
            got = sorted({**dict(got), **dict(more)}.items())
        damage = note_damage(fmt, data, exc, at, n_frames, [i for i, _ in got], indices)
        note = "; ".join(n for n in (note, damage) if n)
        indices = [i for i, _ in got]
    frames = [f for _, f in got]
    return DecodedImage(_orient(frames, orientation), fmt, n_frames, indices, (width, height), note)


def _collect(
    im: Image.Image,
    indices: list[int],
    deadline: Deadline,
    background: tuple[int, int, int],
    png_depth: int | None,
) -> tuple[list[tuple[int, Image.Image]], tuple[int, BaseException] | None]:
    """The frames at ``indices`` (sorted), reached frame by frame; stops at the first frame after 0 that cannot
    be read and returns its index and error (frame 0's errors, the deadline and bomb checks propagate)."""
    out: list[tuple[int, Image.Image]] = []
    want = set(indices)
    for i in range(indices[-1] + 1):
        try:
            if i:
                deadline.check(i)
                im.seek(i)
            if i in want:
                im.load()
                out.append((i, to_rgb(im, background, png_depth=png_depth)))
        except (ImageLoadError, Image.DecompressionBombError, MemoryError):
            raise
        except Exception as exc:  # Pillow's errors on a damaged frame: OSError, SyntaxError, EOFError, ...
            if i == 0:
                raise
            return out, (i, exc)
    return out, None


def note_damage(
    fmt: str, data: bytes, exc: BaseException, at: int, n_frames: int, used: list[int], wanted: list[int]
) -> str:
    """The decode note for an animation that breaks off at frame ``at``."""
    what = f"frame {used[-1]}" if len(used) == 1 else f"frames {used}"
    policy = f"the middle frame {wanted[0]}" if len(wanted) == 1 else f"frames {wanted}"
    return f"{what} instead of {policy}: frame {at} of {n_frames} cannot be read ({damage_reason(fmt, data, exc)})"


# --- the entry points ----------------------------------------------------------------------------------------------


def _decoder(fmt: str) -> Callable[..., DecodedImage]:
    if fmt == "TGS":
        from mghft.data.lottie import decode_tgs

        return decode_tgs
    if fmt == "WEBM":
        from mghft.data.video import decode_webm

        return decode_webm
    return _decode_pillow


def decode_image(
    source: ImageSource,
    *,
    frames: int = 1,
    limits: DecodeLimits | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    name: str | None = None,
) -> DecodedImage:
    """Open any allowed image or sticker file and decode the frames the policy picks, within the limits.

    Args:
        source: a path (regular files only; symbolic links followed), the file's bytes, or a binary file object
            (read from its current position, not closed).
        frames: how many frames to sample from an animation (1: the middle frame).
        limits: resource limits (default :class:`DecodeLimits`).
        background: RGB colour transparent pixels are composited onto.
        name: how to call the source in error messages (default: the path, the file object's name, or ``<bytes>``).

    Returns:
        The decoded frames and what was read. ``note`` is set (and a warning logged) when the budget moved the
        chosen frames earlier.

    Raises:
        ImageFormatError: the content is not an allowed format.
        ImageTooLargeError: the header announces more pixels or frames than allowed, or the file is too big.
        DecodeBudgetError: decoding ran past ``limits.max_seconds``.
        ImageLoadError: the file is missing, not a regular file, truncated or damaged.
    """
    limits = limits or DecodeLimits()
    label = _source_name(source, name)
    data = _read_source(source, label, limits)
    if not data:
        raise ImageLoadError(label, "empty file")
    fmt = sniff_format(data[:64])
    if fmt is None:
        cls, reason, hint = _refusal(data)
        raise cls(label, reason, hint=hint)
    if limits.isolate and fmt in ISOLATED_FORMATS and _POOL_AVAILABLE:
        from mghft.data.decode_pool import decode_isolated

        decoded = decode_isolated(data, fmt, label, max(1, frames), limits, background)
    else:
        decoded = decode_sniffed(data, fmt, label, max(1, frames), limits, background)
    if decoded.note:
        log.warning("%s: %s", label, decoded.note)
    return decoded


def decode_sniffed(
    data: bytes, fmt: str, label: str, count: int, limits: DecodeLimits, background: tuple[int, int, int]
) -> DecodedImage:
    """Decode bytes already sniffed as ``fmt`` in this process (the decode pool's workers call this too).

    Raises:
        ImageLoadError: as :func:`decode_image`; a decoder's own exception becomes a reason in the user's terms.
    """
    try:
        return _decoder(fmt)(data, fmt, label, count, limits, background)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLargeError(label, _BOMB) from None
    except MemoryError:
        raise ImageTooLargeError(label, "out of memory while decoding") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, EOFError ... on damaged files
        raise ImageLoadError(label, damage_reason(fmt, data, exc)) from None


_BOMB = "more pixels than Pillow's decompression-bomb check allows (PIL.Image.MAX_IMAGE_PIXELS)"


def _is_apng(data: bytes) -> bool:
    idat = data.find(b"IDAT")
    actl = data.find(b"acTL")
    return actl >= 0 and (idat < 0 or actl < idat)


def damage_reason(fmt: str, data: bytes, exc: BaseException) -> str:
    """What a decoder's exception on ``data`` means for the user (never the exception's own text)."""
    text = str(exc).lower()
    name = "APNG animation" if fmt == "PNG" and _is_apng(data) else f"{fmt} file"
    if fmt == "PNG" and b"IDAT" not in data:
        return f"damaged {name}: it has no image data (no IDAT chunk)"
    actl = data.find(b"acTL")
    if name.startswith("APNG") and data[actl + 4 : actl + 8] == b"\0\0\0\0":
        return f"damaged {name}: its acTL chunk declares 0 frames"
    if fmt == "AVIF":  # libavif's reasons name ISOBMFF items and properties, not what the user can act on
        return "an AVIF file this AVIF decoder cannot decode (damaged, or uses a feature it does not support)"
    if "unsupported" in text or "not supported" in text:
        return f"a {fmt} variant this decoder does not support (its compression, bit depth or layout)"
    if "too large" in text and "text" in text:
        return f"refused {name}: a compressed text chunk expands beyond Pillow's limit (a decompression bomb)"
    if fmt == "PNG" and ("sequence" in text or "apng" in text or "fctl" in text or "fdat" in text):
        return f"damaged {name}: its frame chunks (fcTL/fdAT) are missing, repeated or out of order"
    if "crc" in text or "checksum" in text:
        return f"damaged {name}: a chunk's checksum does not match its data (altered or damaged in transfer)"
    if "truncated" in text or isinstance(exc, EOFError) or "end of file" in text or "not enough data" in text:
        return f"truncated {name}: the data ends before the image does"
    if "decompress" in text or "zlib" in text or "data stream" in text or "invalid" in text and "code " in text:
        return f"damaged {name}: its compressed pixel data is corrupt"
    if fmt == "PNG" and "chunk" in text:
        return f"damaged {name}: a chunk is broken or of an unknown kind where the image needs one"
    if "mode" in text or "bit depth" in text or "colour type" in text or "color type" in text:
        return f"damaged {name}: its header declares an impossible colour type or bit depth"
    return f"damaged {name}: the {fmt} decoder stopped on its data"


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
    name: str | None = None,
    limits: DecodeLimits | None = None,
) -> Image.Image:
    """Load any allowed image as one RGB image (the policy's frame of an animation), following the module's rules.

    Args:
        source: a path, the file's bytes, or a binary file object (read from its current position, not closed).
        max_pixels: most pixels (width × height) allowed, checked from the header before decoding; ``None``
            disables the check (Pillow's own decompression-bomb limit still applies). Ignored when ``limits``
            is given.
        background: RGB colour transparent pixels are composited onto.
        name: how to call the source in error messages.
        limits: all resource limits (default: :class:`DecodeLimits` with ``max_pixels``).

    Returns:
        A loaded RGB image independent of the source.

    Raises:
        ImageLoadError: see :func:`decode_image` (subclasses name the kind: format, too large, budget).
    """
    limits = limits or DecodeLimits(max_pixels=max_pixels)
    return decode_image(source, limits=limits, background=background, name=name).image


def load_frames(
    source: ImageSource,
    count: int,
    *,
    background: tuple[int, int, int] = (255, 255, 255),
    name: str | None = None,
    limits: DecodeLimits | None = None,
) -> list[Image.Image]:
    """Up to ``count`` evenly spaced frames of an animation (one for a still image), RGB, in order.

    Raises:
        ImageLoadError: see :func:`decode_image`.
    """
    return decode_image(source, frames=count, limits=limits, background=background, name=name).frames


def image_size(source: str | Path) -> tuple[int, int]:
    """Width and height from the file's header, without decoding pixels (EXIF orientation not applied).

    Works for the Pillow formats of the allowlist (TGS and WebM need their readers: use :func:`decode_image`).

    Raises:
        ImageLoadError: the file is missing, not a regular file, or not an allowed image.
    """
    label = str(source)
    data = read_regular_file(source, label=label)
    fmt = sniff_format(data[:64])
    if fmt not in _PILLOW_PLUGINS:
        raise ImageFormatError(label, "not a recognised image file" if fmt is None else f"{fmt}: size not in header")
    try:
        with Image.open(io.BytesIO(data), formats=_PILLOW_PLUGINS[fmt]) as im:
            return im.size
    except Exception as exc:
        raise ImageLoadError(label, damage_reason(fmt, data, exc)) from None
