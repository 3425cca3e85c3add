"""Opening animated stickers: the decode budget against frame bombs, and the cost on ordinary stickers.

For each file, side by side:

* **seek to the middle** (what the loader did before: ``Image.open``, ``seek(n_frames // 2)``, ``load``), stopped
  after ``--cap`` seconds and extrapolated from the frames reached per second (WebP frames are loaded one by one
  so that the cap can act, which adds a copy per frame: an overestimate of at most about twice);
* **decode_image** (``mghft.data.decode_image``: header checks, the decode budget, compositing on white).

Files: frame bombs (a 4000 x 4000 canvas with 8,000 one-pixel frames as GIF, APNG and WebP, built in memory) and
ordinary 512 x 512 stickers of 60 frames (GIF, APNG, WebP). CPU seconds of this process.

    .venv/bin/python benchmarks/bench_decode.py
    .venv/bin/python benchmarks/bench_decode.py --cap 30
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/sticker_files.py builds the bombs


def _seek_middle(data: bytes, cap: float) -> tuple[float, bool]:
    """CPU seconds to reach and load the middle frame the old way; ``True`` when extrapolated past ``cap``."""
    from PIL import Image

    start = time.process_time()
    with Image.open(io.BytesIO(data)) as im:
        target = getattr(im, "n_frames", 1) // 2
        im.load()
        lazy = im.format in ("WEBP", "AVIF")  # these decode on load(): load each step so the cap can act
        for i in range(1, target + 1):
            im.seek(i)
            if lazy:
                im.load()
            elapsed = time.process_time() - start
            if elapsed > cap:
                return elapsed * target / i, True
        im.load()
    return time.process_time() - start, False


def _ordinary(fmt: str, n: int = 60, side: int = 512) -> bytes:
    from PIL import Image, ImageDraw

    frames = []
    for i in range(n):
        im = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        d = ImageDraw.Draw(im)
        r = side // 4 + (i % 10) * 4
        d.ellipse((side // 2 - r, side // 2 - r, side // 2 + r, side // 2 + r), fill=(240, 200, 20, 255))
        frames.append(im)
    buf = io.BytesIO()
    kw = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=40, loop=0, **kw)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=10.0, help="seconds before the old way is extrapolated")
    args = parser.parse_args(argv)

    from mghft.data.images import decode_image
    from tests import sticker_files as sf

    cases = [
        ("GIF bomb 4000x4000, 8000 frames", sf.gif_bomb()),
        ("APNG bomb 4000x4000, 8000 frames", sf.apng_bomb()),
        ("WebP bomb 4000x4000, 8000 frames", sf.webp_bomb()),
        ("GIF 512x512, 60 frames", _ordinary("GIF")),
        ("APNG 512x512, 60 frames", _ordinary("PNG")),
        ("WebP 512x512, 60 frames", _ordinary("WEBP")),
    ]
    print(f"{'file':36s} {'KB':>6s} {'seek to middle':>16s} {'decode_image':>13s} {'ratio':>8s}  frame chosen")
    for name, data in cases:
        old, extrapolated = _seek_middle(data, args.cap)
        start = time.process_time()
        decoded = decode_image(data)
        new = time.process_time() - start
        old_text = f"{'~' if extrapolated else ''}{old:.2f} s"
        chosen = f"{decoded.indices[0]} of {decoded.n_frames}" + (" (budget)" if decoded.note else " (middle)")
        print(f"{name:36s} {len(data) // 1024:6d} {old_text:>16s} {new:11.2f} s {old / max(new, 1e-6):7.1f}x  {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
