"""glibc's allocator settings side by side: step time and peak memory of inference and training on CPU.

Each setting runs in its own process (``mallopt`` acts once per process), one after the other in one run:

* ``default``: glibc as it starts (large buffers by ``mmap`` with a threshold that rises as they are freed);
* ``mmap-256k``: a fixed 256 KiB ``mmap`` threshold (what ``MALLOC_MMAP_THRESHOLD_=262144`` sets): every large
  buffer is mapped and unmapped, so its pages are faulted in and zeroed again at every step;
* ``mmap-32m``: a fixed 32 MiB threshold (the rising threshold's ceiling, from the start);
* ``trim``: the default, plus ``malloc_trim(0)`` after every step.

Printed per setting: the median and the minimum step time after a warm-up, the resident size after each step,
and the process's peak resident memory. ``mghft_pvt_small`` with cached text features; inference at 448 px,
batch 1; training (forward, loss, backward, AdamW) at 224 px, batch 4; 2 threads.

    PYTHONPATH=src python benchmarks/bench_allocator.py
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time

SETTINGS = {"default": None, "mmap-256k": 256 * 1024, "mmap-32m": 32 * 2**20, "trim": None}


def _child(setting: str, task: str, steps: int, threads: int) -> None:
    import torch

    import mghft

    libc = ctypes.CDLL("libc.so.6")
    if SETTINGS[setting] is not None:
        libc.mallopt(-3, SETTINGS[setting])  # M_MMAP_THRESHOLD
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if task == "predict":
        model = mghft.create_model("mghft_pvt_small", text_encoder=False, image_size=448).eval()
        images, feats = torch.randn(1, 3, 448, 448), torch.randn(1, 4, model.cfg.text.dim)

        def step() -> None:
            with torch.inference_mode():
                model(images, text_features=feats, explain=True)

    else:
        from mghft.losses import MGHFTObjective
        from mghft.train.loop import make_optimizer

        model = mghft.create_model("mghft_pvt_small", text_encoder=False, image_size=224).train()
        images, feats = torch.randn(4, 3, 224, 224), torch.randn(4, 4, model.cfg.text.dim)
        labels = torch.randint(0, 7, (4,))
        opt, objective = make_optimizer(model, 0.05, 1e-3), MGHFTObjective()

        def step() -> None:
            objective(model(images, text_features=feats), labels)["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    seconds, rss = [], []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - t0)
        if setting == "trim":
            libc.malloc_trim(0)
        with open("/proc/self/statm") as f:
            rss.append(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds[1:], "rss_mb": rss, "peak_mb": peak}))


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    p.add_argument("--steps", type=int, default=6, help="timed steps per setting (after one warm-up)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--results", help="append the figures as one JSON line to this file")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.steps, args.threads)
        return 0
    if not sys.platform.startswith("linux"):
        p.error("glibc's mallopt: Linux only")
    record: dict = {"benchmark": "bench_allocator", "command": " ".join(["python", *sys.argv]), "rows": {}}
    for task in ("predict", "train"):
        print(f"{task}: {'setting':10s} {'median s':>9s} {'min s':>7s} {'peak MB':>8s}  resident after each step, MB")
        base = None
        for setting in SETTINGS:
            cmd = [sys.executable, __file__, "--steps", str(args.steps), "--threads", str(args.threads)]
            out = subprocess.run([*cmd, "--child", setting, task], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            record["rows"][f"{task} {setting}"] = r
            med = statistics.median(r["seconds"])
            base = base or (med, r["peak_mb"])
            print(
                f"{task}: {setting:10s} {med:9.3f} {min(r['seconds']):7.3f} {r['peak_mb']:8.0f}  "
                f"{[round(x) for x in r['rss_mb']]}  ({med / base[0]:.2f}x time, {r['peak_mb'] / base[1]:.2f}x peak)"
            )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    record["load_average"] = os.getloadavg()[0]
    if args.results:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
