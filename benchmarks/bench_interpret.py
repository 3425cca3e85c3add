"""Interpreter throughput against loopback chat-completions servers with a fixed per-request delay.

With ``c`` requests in flight and a server that takes ``d`` seconds per answer, the best possible rate is ``c / d``
images per second; this benchmark reports the measured rate and its fraction of that bound. The servers run in
their own processes, so the client's cost (image preparation, JSON, HTTP, store commits) is what is measured.

    python benchmarks/bench_interpret.py --delay 1.0 --rounds 8 --concurrency 8 32 64

Each concurrency level describes ``rounds x concurrency`` images into a fresh store, so the ideal run takes
``rounds x delay`` seconds at every level.

Not a test: nothing is asserted; the numbers go to stdout as JSON lines (and a table on stderr).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from mghft.interpret import DescriptionStore, RetryPolicy, WorkItem, build_backend, run_batch


def _make_images(folder: Path, n: int, side: int) -> list[WorkItem]:
    items = []
    for i in range(n):
        img = Image.new("RGB", (side, side), (i % 256, (i // 256) % 256, 128))
        img.putpixel((0, 0), (255 - i % 256, 0, 0))
        path = folder / f"{i:05d}.png"
        img.save(path)
        items.append(WorkItem(path.name, path))
    return items


def _start_server(delay: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mghft.interpret.loopback", "--delay", str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = proc.stdout.readline().strip() if proc.stdout else ""
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError("loopback server did not start")
    return proc, url


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints one JSON line per concurrency."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="images per run = rounds x concurrency")
    parser.add_argument("--side", type=int, default=256, help="image side in pixels (sent as is below 512)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds per answer at the server")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--endpoints", type=int, default=1, help="server processes (one pool)")
    args = parser.parse_args(argv)

    servers = [_start_server(args.delay) for _ in range(args.endpoints)]
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            all_items = _make_images(Path(tmp), args.rounds * max(args.concurrency), args.side)
            for concurrency in args.concurrency:
                items = all_items[: args.rounds * concurrency]
                backend = build_backend(
                    "compatible:loopback", base_urls=[url for _, url in servers], retry=RetryPolicy(max_attempts=3)
                )
                with DescriptionStore(Path(tmp) / f"store-{concurrency}.sqlite") as store:
                    started = time.perf_counter()
                    summary = run_batch(items, backend, store, concurrency=concurrency, progress=False)
                    wall = time.perf_counter() - started
                rate = summary.described / summary.elapsed_s
                bound = concurrency / args.delay
                row = {
                    "images": len(items),
                    "delay_s": args.delay,
                    "concurrency": concurrency,
                    "endpoints": args.endpoints,
                    "described": summary.described,
                    "failed": summary.failed,
                    "describe_s": round(summary.elapsed_s, 3),
                    "wall_s_with_planning": round(wall, 3),
                    "images_per_s": round(rate, 2),
                    "bound_images_per_s": round(bound, 2),
                    "fraction_of_bound": round(rate / bound, 3),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(10)
    print(f"{'concurrency':>11} {'images/s':>9} {'bound':>7} {'fraction':>8}", file=sys.stderr)
    for r in results:
        print(
            f"{r['concurrency']:>11} {r['images_per_s']:>9} {r['bound_images_per_s']:>7} {r['fraction_of_bound']:>8}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
