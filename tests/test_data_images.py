"""load_image on every awkward file a sticker dataset contains."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mghft.data import ImageLoadError, ImageTooLargeError, image_size, load_image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height grey pixels, with (almost) no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def test_rgba_png_is_composited_on_white(tmp_path: Path) -> None:
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    im.putpixel((1, 1), (255, 0, 0, 255))
    im.putpixel((2, 2), (255, 0, 0, 128))
    path = tmp_path / "a.png"
    im.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (4, 4)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (255, 0, 0)
    r, g, b = out.getpixel((2, 2))
    assert r == 255 and 120 <= g <= 135 and g == b  # half red over white
    assert load_image(path, background=(0, 0, 0)).getpixel((0, 0)) == (0, 0, 0)


def test_palette_png_with_trns(tmp_path: Path) -> None:
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black (transparent), 1 blue
    im.putpixel((3, 3), 1)
    path = tmp_path / "p.png"
    im.save(path, transparency=0)
    assert Image.open(path).mode == "P"
    out = load_image(path)
    assert out.getpixel((0, 0)) == (255, 255, 255)  # black but transparent -> white, not black
    assert out.getpixel((3, 3)) == (0, 0, 255)


def _animated_gif(path: Path, colours: list[tuple[int, int, int]]) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in colours]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)


def test_animated_gif_gives_middle_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    _animated_gif(path, [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    assert Image.open(path).n_frames == 3
    assert load_image(path).getpixel((4, 4)) == (0, 255, 0)  # frame 3 // 2 = 1
    path4 = tmp_path / "anim4.gif"
    _animated_gif(path4, [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)])
    assert load_image(path4).getpixel((4, 4)) == (0, 0, 255)  # frame 4 // 2 = 2


def test_multi_frame_photo_keeps_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "phone.mpo"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(
        path, save_all=True, append_images=[Image.new("RGB", (8, 8), (0, 0, 255))]
    )
    assert Image.open(path).n_frames == 2
    r, g, b = load_image(path).getpixel((4, 4))
    assert r > 240 and b < 15  # frame 0, not the "middle" frame 1


def test_animated_webp_with_alpha(tmp_path: Path) -> None:
    frames = [Image.new("RGBA", (8, 8), (0, 0, 0, 0)) for _ in range(2)]
    frames[0].putpixel((1, 1), (255, 0, 0, 255))
    frames[1].putpixel((0, 0), (0, 0, 255, 255))
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True, duration=50)
    out = load_image(path)  # frame 2 // 2 = 1: transparent with one blue pixel
    assert out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 255)


def test_still_webp_with_alpha(tmp_path: Path) -> None:
    im = Image.new("RGBA", (6, 6), (0, 0, 0, 0))
    im.putpixel((2, 2), (0, 200, 0, 255))
    path = tmp_path / "w.webp"
    im.save(path, lossless=True)
    out = load_image(path)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((2, 2)) == (0, 200, 0)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "c.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    r, g, b = load_image(path).getpixel((4, 4))
    assert r > 230 and g < 30 and b < 30


def test_wide_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.full((4, 4), 65535, dtype=np.uint16)
    arr[0, 0] = 257 * 100
    arr[0, 1] = 0
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode == "I;16"
    out = load_image(path)
    assert out.getpixel((0, 0)) == (100, 100, 100)
    assert out.getpixel((1, 0)) == (0, 0, 0)
    assert out.getpixel((2, 2)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("LA", (50, 0), (255, 255, 255)),
        ("LA", (50, 255), (50, 50, 50)),
    ],
)
def test_grey_modes(tmp_path: Path, mode: str, value: object, expected: tuple[int, int, int]) -> None:
    path = tmp_path / f"{mode}.png"
    Image.new(mode, (3, 3), value).save(path)  # type: ignore[arg-type]
    assert load_image(path).getpixel((1, 1)) == expected


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))  # stored: left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_raises_naming_the_file(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match=f"cut.{fmt.lower()}") as info:
        load_image(path)
    assert isinstance(info.value, ValueError)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "fake.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageLoadError, match=r"fake\.png: not a recognised image"):
        load_image(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="nope.png: no such file"):
        load_image(tmp_path / "nope.png")


def test_pixel_limit_checked_before_decoding(tmp_path: Path) -> None:
    # 8000 x 8000 announced, no real pixel data: decoding would fail as truncated, so TooLarge proves the
    # header was checked first.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(8000, 8000))
    assert image_size(path) == (8000, 8000)
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: 8000x8000"):
        load_image(path)
    # Beyond Pillow's own bomb limit, still our error type.
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(ImageTooLargeError, match="huge.png"):
        load_image(huge)
    # A small real image over a small limit.
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small)
    with pytest.raises(ImageTooLargeError):
        load_image(small, max_pixels=5000)
    assert load_image(small, max_pixels=10000).size == (100, 100)


def test_bytes_and_stream_sources(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (5, 5), (0, 0, 0, 0)).save(buf, "PNG")
    data = buf.getvalue()
    assert load_image(data).getpixel((0, 0)) == (255, 255, 255)
    stream = io.BytesIO(data)
    assert load_image(stream).size == (5, 5)
    assert not stream.closed
    with pytest.raises(ImageLoadError, match="<bytes>"):
        load_image(b"garbage")
    with pytest.raises(ImageLoadError, match="upload.png"):
        load_image(b"garbage", name="upload.png")


def test_result_is_independent_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.new("RGB", (3, 3), (1, 2, 3)).save(path)
    out = load_image(path)
    path.unlink()
    assert out.getpixel((0, 0)) == (1, 2, 3)
