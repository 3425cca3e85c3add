"""Small real sticker files of every accepted format, built in memory, and frame bombs.

Each animated builder draws frame ``i`` as a transparent 32 x 32 canvas with a centre square of ``colours[i]``, so
a test can tell which frame was decoded (the centre pixel) and that transparency became white (the corners).
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import zlib

import numpy as np
from PIL import Image

SIDE = 32
RED, GREEN, BLUE, YELLOW, CYAN = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)
COLOURS = [RED, GREEN, BLUE, YELLOW, CYAN]  # 5 frames: the policy's middle frame is 2 (blue)


def frame(colour: tuple[int, int, int], side: int = SIDE, alpha: int = 255) -> Image.Image:
    """A transparent canvas with a centre square (opaque by default)."""
    im = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    q = side // 4
    im.paste((*colour, alpha), (q, q, side - q, side - q))
    return im


def _save(frames: list[Image.Image], fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=len(frames) > 1, append_images=frames[1:], **kw)
    return buf.getvalue()


def png_still(colour: tuple[int, int, int] = RED) -> bytes:
    return _save([frame(colour)], "PNG")


def apng(colours: list[tuple[int, int, int]] = COLOURS) -> bytes:
    return _save([frame(c) for c in colours], "PNG", duration=40, loop=0, disposal=1)


def webp_still(colour: tuple[int, int, int] = RED) -> bytes:
    return _save([frame(colour)], "WEBP", lossless=True)


def webp_animated(colours: list[tuple[int, int, int]] = COLOURS) -> bytes:
    return _save([frame(c) for c in colours], "WEBP", lossless=True, duration=40, loop=0)


def gif_disposal(colours: list[tuple[int, int, int]] = COLOURS) -> bytes:
    """An animated GIF with a transparent background and disposal to background between frames."""
    pal = [0, 0, 0] + [v for c in colours for v in c]
    frames = []
    for i in range(len(colours)):
        im = Image.new("P", (SIDE, SIDE), 0)
        im.putpalette(pal + [0] * (768 - len(pal)))
        q = SIDE // 4
        im.paste(i + 1, (q, q, SIDE - q, SIDE - q))
        frames.append(im)
    return _save(frames, "GIF", duration=40, loop=0, disposal=2, transparency=0, optimize=False)


def avif(colours: list[tuple[int, int, int]] = COLOURS) -> bytes:
    return _save([frame(c) for c in colours], "AVIF", quality=100, duration=40, speed=10)


def tgs(colours: list[tuple[int, int, int]] = COLOURS, *, side: int = 64, frames_per_colour: int = 10) -> bytes:
    """A Lottie animation: a centre square that holds ``colours[k]`` for frames ``k*fpc .. (k+1)*fpc - 1``."""
    n = len(colours) * frames_per_colour
    keys = [
        {"t": k * frames_per_colour, "s": [c[0] / 255, c[1] / 255, c[2] / 255, 1], "h": 1}
        for k, c in enumerate(colours)
    ]
    still = lambda v: {"a": 0, "k": v}  # noqa: E731
    layer = {
        "ddd": 0,
        "ind": 1,
        "ty": 4,
        "nm": "square",
        "sr": 1,
        "ip": 0,
        "op": n,
        "st": 0,
        "ks": {
            "o": still(100),
            "r": still(0),
            "p": still([side / 2, side / 2, 0]),
            "a": still([0, 0, 0]),
            "s": still([100, 100, 100]),
        },
        "shapes": [
            {"ty": "rc", "d": 1, "s": still([side / 2, side / 2]), "p": still([0, 0]), "r": still(0)},
            {"ty": "fl", "c": {"a": 1, "k": keys}, "o": still(100), "r": 1},
        ],
    }
    doc = {"v": "5.5.2", "fr": 30, "ip": 0, "op": n, "w": side, "h": side, "nm": "t", "ddd": 0, "layers": [layer]}
    doc["tgs"] = 1
    return gzip.compress(json.dumps(doc).encode())


def lottie_json(doc: dict) -> bytes:
    return gzip.compress(json.dumps(doc).encode())


def webm_alpha(
    colours: list[tuple[int, int, int]] = COLOURS, *, side: int = SIDE, repeat: int = 1, alpha: int = 255
) -> bytes:
    """A VP9 WebM with an alpha channel (yuva420p), like Telegram's video stickers."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as c:
        s = c.add_stream("libvpx-vp9", rate=30)
        s.width = s.height = side
        s.pix_fmt = "yuva420p"
        s.options = {"deadline": "realtime", "cpu-used": "8", "lossless": "1"}
        for _ in range(repeat):
            for col in colours:
                vf = av.VideoFrame.from_ndarray(np.asarray(frame(col, side, alpha)), format="rgba")
                for p in s.encode(vf):
                    c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


# --- PNGs written chunk by chunk (bit depths Pillow cannot write) ---------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_raw(width: int, height: int, depth: int, colour_type: int, rows: list[bytes], trns: bytes = b"") -> bytes:
    """A PNG from already packed rows (filter byte 0 is added)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    body = zlib.compress(b"".join(b"\x00" + r for r in rows))
    extra = _chunk(b"tRNS", trns) if trns else b""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def png_1bit_trns() -> bytes:
    """1-bit grey, 8 x 8: black background (0) marked transparent by tRNS, a white (1) centre."""
    rows = [bytes([0b00111100 if 2 <= y < 6 else 0]) for y in range(8)]
    return png_raw(8, 8, 1, 0, rows, trns=struct.pack(">H", 0))


def png_16bit_grey_trns() -> bytes:
    """16-bit grey, 4 x 4: key 0x1234 transparent, a 0x8080 grey centre pixel."""
    px = [[0x1234] * 4 for _ in range(4)]
    px[1][1] = 0x8080
    rows = [b"".join(struct.pack(">H", v) for v in row) for row in px]
    return png_raw(4, 4, 16, 0, rows, trns=struct.pack(">H", 0x1234))


def png_16bit_rgb_trns() -> bytes:
    """16-bit RGB, 4 x 4: key (0x0101, 0x0202, 0x0303) transparent, a red centre pixel."""
    key = (0x0101, 0x0202, 0x0303)
    px = [[key] * 4 for _ in range(4)]
    px[1][1] = (0xFFFF, 0, 0)
    rows = [b"".join(struct.pack(">HHH", *p) for p in row) for row in px]
    return png_raw(4, 4, 16, 2, rows, trns=struct.pack(">HHH", *key))


def png_2bit_grey_trns() -> bytes:
    """2-bit grey, 4 x 4: value 1 transparent, value 3 (white) elsewhere except a black (0) centre pixel."""
    vals = [[1, 1, 1, 1], [1, 0, 3, 1], [1, 3, 3, 1], [1, 1, 1, 1]]
    rows = [bytes([(r[0] << 6) | (r[1] << 4) | (r[2] << 2) | r[3]]) for r in vals]
    return png_raw(4, 4, 2, 0, rows, trns=struct.pack(">H", 1))


def cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def exif_rotated_jpeg() -> bytes:
    """40 x 20 stored (left red, right blue) with EXIF orientation 6: upright it is 20 x 40, red on top."""
    im = Image.new("RGB", (40, 20), RED)
    im.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif, quality=95)
    return buf.getvalue()


# --- bombs ---------------------------------------------------------------------------------------------------------


def gif_bomb(width: int = 4000, height: int = 4000, n: int = 8000) -> bytes:
    """A GIF with a huge canvas and ``n`` frames of 1 x 1 pixel (184 KB for the defaults)."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
    for i in range(n):
        out += b"\x21\xf9\x04\x08\x01\x00\x00\x00"  # graphic control: dispose to background
        out += b"\x2c" + struct.pack("<HHHHB", i % width, 0, 1, 1, 0)
        out += b"\x02\x02\x44\x01\x00"
    out += b"\x3b"
    return bytes(out)


def apng_bomb(width: int = 4000, height: int = 4000, n: int = 8000) -> bytes:
    """An APNG whose default image fills a huge canvas and whose ``n - 1`` further frames are 1 x 1."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", ihdr), _chunk(b"acTL", struct.pack(">II", n, 0))]
    seq = 0
    out.append(_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, width, height, 0, 0, 1, 25, 0, 0)))
    seq += 1
    out.append(_chunk(b"IDAT", idat))
    tiny = zlib.compress(b"\x00\xff")
    for i in range(1, n):
        out.append(_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, 1, 1, i % width, 0, 1, 25, 0, 0)))
        out.append(_chunk(b"fdAT", struct.pack(">I", seq + 1) + tiny))
        seq += 2
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def webp_bomb(width: int = 4000, height: int = 4000, n: int = 8000) -> bytes:
    """An animated WebP with a huge canvas and ``n`` frames of 1 x 1 pixel, written chunk by chunk."""
    buf = io.BytesIO()
    Image.new("RGBA", (1, 1), (255, 0, 0, 255)).save(buf, "WEBP", lossless=True)
    still = buf.getvalue()
    vp8l = still[12:]  # the VP8L chunk (header + payload + padding)

    def chunk(kind: bytes, data: bytes) -> bytes:
        pad = b"\x00" if len(data) % 2 else b""
        return kind + struct.pack("<I", len(data)) + data + pad

    def u24(v: int) -> bytes:
        return struct.pack("<I", v)[:3]

    vp8x = bytes([0x12, 0, 0, 0]) + u24(width - 1) + u24(height - 1)  # animation + alpha flags
    parts = [chunk(b"VP8X", vp8x), chunk(b"ANIM", b"\xff\xff\xff\xff\x00\x00")]
    for i in range(n):
        header = u24((i % width) // 2) + u24(0) + u24(0) + u24(0) + u24(40) + b"\x00"
        parts.append(chunk(b"ANMF", header + vp8l))
    body = b"WEBP" + b"".join(parts)
    return b"RIFF" + struct.pack("<I", len(body)) + body
