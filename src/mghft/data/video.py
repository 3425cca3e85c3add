"""Video stickers (``.webm``, Telegram): VP9 or VP8 in WebM, with an alpha channel, decoded with PyAV (``av``).

FFmpeg's built-in VP9 decoder ignores the alpha plane that WebM carries beside each frame (``BlockAdditional``), so
transparent corners would come out black. Frames are therefore decoded with ``libvpx-vp9`` (``libvpx`` for VP8),
which returns ``yuva420p``, and composited on the background like any other image.

The reader demuxes the container first (packets only, nothing decoded) to count the frames, checks the canvas and
the count against the limits, then decodes from the first frame up to the last one the policy picks, within the
decode budget (each decoded frame costs a canvas) and the time limit.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from mghft.data.images import (
    Deadline,
    DecodedImage,
    DecodeLimits,
    ImageLoadError,
    ImageTooLargeError,
    plan_frames,
    to_rgb,
)

_DECODERS = {"vp9": "libvpx-vp9", "vp8": "libvpx"}


def decode_webm(
    data: bytes, fmt: str, label: str, count: int, limits: DecodeLimits, background: tuple[int, int, int]
) -> DecodedImage:
    """Decode the policy's frames of a WebM sticker (see the module docstring); arguments as ``decode_image``'s."""
    try:
        import av
    except ImportError:
        raise ImageLoadError(label, "WebM stickers need the av package", hint="pip install 'mghft[stickers]'") from None
    try:
        container = av.open(io.BytesIO(data), mode="r", format="matroska")
    except av.FFmpegError:
        raise ImageLoadError(label, "not a readable WebM file (damaged container)") from None
    with container:
        if not container.streams.video:
            raise ImageLoadError(label, "WebM file without a video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec not in _DECODERS:
            raise ImageLoadError(label, f"WebM video in {codec}, not VP8 or VP9")
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_pixels(label, width, height, limits)
        packets: list[Any] = []
        for packet in container.demux(stream):
            if packet.size:
                packets.append(packet)
                if len(packets) > limits.max_frames:
                    raise ImageTooLargeError(label, f"more than {limits.max_frames} frames (the frame limit)")
        if not packets:
            raise ImageLoadError(label, "WebM file without frames")
        indices, note = plan_frames(len(packets), (width, height), count, limits)
        frames = _decode(packets, _DECODERS[codec], indices, label, limits, background)
    if len(frames) < len(indices):  # fewer frames decoded than packets: keep what there is, say so
        got = [i for i, _ in frames]
        note = (note + "; " if note else "") + f"only {len(got)} of the chosen frames decoded ({got})"
        indices = got
    if not frames:
        raise ImageLoadError(label, "no frame of the WebM video could be decoded")
    return DecodedImage([im for _, im in frames], fmt, len(packets), indices, (width, height), note)


def _check_pixels(label: str, width: int, height: int, limits: DecodeLimits) -> None:
    if width < 1 or height < 1:
        raise ImageLoadError(label, "WebM video without a frame size")
    if limits.max_pixels is not None and width * height > limits.max_pixels:
        raise ImageTooLargeError(
            label, f"{width}x{height} = {width * height} pixels exceeds the limit of {limits.max_pixels}"
        )


def _decode(
    packets: list[Any],
    decoder: str,
    indices: list[int],
    label: str,
    limits: DecodeLimits,
    background: tuple[int, int, int],
) -> list[tuple[int, Image.Image]]:
    import av

    ctx = av.CodecContext.create(decoder, "r")
    want, last = set(indices), indices[-1]
    deadline = Deadline(label, limits.max_seconds)
    out: list[tuple[int, Image.Image]] = []
    shown = 0
    for packet in packets:
        deadline.check(shown)
        try:
            decoded = ctx.decode(packet)
        except av.FFmpegError:
            break  # a damaged packet ends the usable video
        for frame in decoded:
            _check_pixels(label, frame.width, frame.height, limits)
            if shown in want:
                rgba = Image.fromarray(frame.to_ndarray(format="rgba"), mode="RGBA")
                out.append((shown, to_rgb(rgba, background)))
            shown += 1
        if shown > last:
            return out
    try:  # frames the decoder still holds
        for frame in ctx.decode(None):
            if shown in want:
                rgba = Image.fromarray(frame.to_ndarray(format="rgba"), mode="RGBA")
                out.append((shown, to_rgb(rgba, background)))
            shown += 1
    except av.FFmpegError:
        pass
    return out
