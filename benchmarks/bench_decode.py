"""Opening animated stickers: the decode budget against frame bombs, and the cost on ordinary stickers.

For each file, side by side:

* **seek to the middle** (what the loader did before: ``Image.open``, ``seek(n_frames // 2)``, ``load``), stopped
  after ``--cap`` seconds and extrapolated from the frames reached per second (WebP frames are loaded one by one
  so that the cap can act, which adds a copy per frame: an overestimate of at most about twice);
* **decode_image** (``mghft.data.decode_image``: header checks, the decode budget, compositing on white).

Files: frame bombs (a 4000 x 4000 canvas with 8,000 one-pixel frames as GIF, APNG and WebP, built in memory) and
ordinary 512 x 512 stickers of 60 frames (GIF, APNG, WebP). CPU seconds of this process.

``--isolation`` measures instead what decoding in worker processes costs (:mod:`mghft.data.decode_pool`): stickers
per second (wall clock, one caller) and CPU time per sticker (this process and the workers)
for a folder of 512 x 512 TGS and WebM stickers decoded in this process
(``DecodeLimits(isolate=False)``) and through the pool (the default), file by file one way then the other, so that
a shared machine's load falls on both alike; the pool's workers are started before timing (their start-up is reported
apart). A PNG row shows what routing a Pillow format through the pool would cost.

    .venv/bin/python benchmarks/bench_decode.py
    .venv/bin/python benchmarks/bench_decode.py --cap 30
    .venv/bin/python benchmarks/bench_decode.py --isolation --files 40 --rounds 5
"""

from __future__ import annotations

import argparse
import io
import os
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


def _tgs_512(seed: int) -> bytes:
    """A 512 x 512 TGS with a few animated shapes (60 frames), different per seed."""
    import gzip
    import json

    def shape(i: int) -> dict:
        x, y = 64 + (seed * 37 + i * 91) % 384, 64 + (seed * 53 + i * 47) % 384
        return {
            "ty": 4, "ind": i + 1, "ip": 0, "op": 60, "st": 0, "ks": {
                "p": {"a": 1, "k": [{"t": 0, "s": [x, y, 0], "e": [512 - x, 512 - y, 0]}, {"t": 60}]},
                "a": {"a": 0, "k": [0, 0, 0]}, "s": {"a": 0, "k": [100, 100, 100]},
                "r": {"a": 1, "k": [{"t": 0, "s": [0], "e": [360]}, {"t": 60}]}, "o": {"a": 0, "k": 100},
            },
            "shapes": [
                {"ty": "rc", "p": {"a": 0, "k": [0, 0]}, "s": {"a": 0, "k": [120, 80]}, "r": {"a": 0, "k": 16}},
                {"ty": "fl", "c": {"a": 0, "k": [(i * 0.3) % 1, 0.5, 1 - (i * 0.2) % 1, 1]}, "o": {"a": 0, "k": 90}},
            ],
        }  # fmt: skip

    doc = {"v": "5.5.2", "fr": 60, "ip": 0, "op": 60, "w": 512, "h": 512, "layers": [shape(i) for i in range(6)]}
    return gzip.compress(json.dumps(doc).encode(), mtime=0)


def _in_child(expression: str) -> bytes:
    """The bytes ``expression`` (over ``tests.sticker_files as sf``) builds, made in a child process: libvpx's
    encoder leaves CPU state behind in its thread that makes later rlottie renders there about twice as fast,
    which would favour the in-process side."""
    import subprocess

    code = f"import sys; from tests import sticker_files as sf; sys.stdout.buffer.write({expression})"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *sys.path])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, env=env).stdout


def _isolation(files: int, rounds: int) -> None:
    from mghft.data import decode_pool
    from mghft.data.images import DecodeLimits, decode_image

    start = time.perf_counter()
    decode_image(_tgs_512(0))  # starts the first worker
    print(f"worker start-up (a fresh interpreter importing the decoders): {time.perf_counter() - start:.2f} s")
    sets = {
        "TGS 512x512, 60 frames": [_tgs_512(i) for i in range(files)],
        "WebM 512x512, 30 frames": [_in_child("sf.webm_alpha(side=512, repeat=6)")] * files,
    }
    inside, outside = DecodeLimits(isolate=False), DecodeLimits()

    pool = decode_pool.get_pool()

    def cpu() -> float:
        """CPU seconds of this process (all threads, ended ones too) and of the pool's live workers (the sum of
        their threads' ``/proc/PID/task/TID/schedstat``, in ns)."""
        total = 0
        for pid in pool.worker_pids():
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as fh:
                    total += int(fh.read().split()[0])
        return time.process_time() + total / 1e9

    def timed(decode: object, data: bytes) -> tuple[float, float]:
        c, t = cpu(), time.perf_counter()
        decode(data)  # type: ignore[operator]
        return time.perf_counter() - t, cpu() - c

    png = _ordinary("PNG", n=1)
    rows = [
        (name, lambda d: decode_image(d, limits=inside), lambda d: decode_image(d, limits=outside), blobs, "")
        for name, blobs in sets.items()
    ]
    rows.append(
        (
            "PNG 512x512 (still)",
            lambda d: decode_image(d),
            lambda d: pool.decode(d, "PNG", "<bytes>", 1, inside, (255, 255, 255)),
            [png] * files,
            "  (PNG stays in process)",
        )
    )
    print(f"{'folder of ' + str(files):26s} {'stickers/s: in process':>23s} {'isolated':>9s} {'ratio':>6s}"
          f" {'CPU ms/sticker: in process':>27s} {'isolated':>9s} {'ratio':>6s}")  # fmt: skip
    for name, direct, isolated, blobs, remark in rows:
        wall, cost = [0.0, 0.0], [0.0, 0.0]
        for _ in range(rounds):
            for data in blobs:  # file by file, one way then the other: both see the same load
                for k, decode in enumerate((direct, isolated)):
                    w, c = timed(decode, data)
                    wall[k] += w
                    cost[k] += c
        n = rounds * len(blobs)
        ra, rb = n / wall[0], n / wall[1]
        ca, cb = cost[0] / n * 1000, cost[1] / n * 1000
        print(f"{name:26s} {ra:23.1f} {rb:9.1f} {rb / ra:5.2f}x {ca:27.1f} {cb:9.1f} {cb / ca:5.2f}x{remark}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=10.0, help="seconds before the old way is extrapolated")
    parser.add_argument("--isolation", action="store_true", help="measure decoding in worker processes instead")
    parser.add_argument("--files", type=int, default=40, help="--isolation: stickers per folder")
    parser.add_argument("--rounds", type=int, default=5, help="--isolation: times through each folder")
    args = parser.parse_args(argv)
    if args.isolation:
        _isolation(args.files, args.rounds)
        return 0

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
