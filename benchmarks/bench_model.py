"""Forward and training-step time and peak memory of an MGHFT variant beside its backbone alone, on CPU.

Each measurement runs in a fresh subprocess so that peak resident memory (ru_maxrss) belongs to it alone;
the reported memory is the peak minus the resident size just before the first measured step (model, optimizer
and inputs already built). The text side uses cached per-view features, as training does.

    .venv/bin/python benchmarks/bench_model.py                       # mghft_pvt_small, 448 px, batch 2
    .venv/bin/python benchmarks/bench_model.py --model mghft_tiny --image-size 64 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _measure(model_name: str, image_size: int, batch: int, part: str, mode: str, reps: int, threads: int) -> dict:
    import torch

    import mghft

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = mghft.create_model(model_name, text_encoder=False, image_size=image_size)
    cfg = model.cfg
    net = model if part == "mghft" else model.backbone
    images = torch.randn(batch, 3, image_size, image_size)
    feats = torch.randn(batch, 4, cfg.text.dim)
    labels = torch.randint(0, cfg.num_classes, (batch,))
    head = torch.nn.Linear(cfg.model_dim, cfg.num_classes)  # for the backbone alone as a classifier
    params = [p for p in net.parameters() if p.requires_grad] + ([] if part == "mghft" else list(head.parameters()))
    opt = torch.optim.AdamW(params, lr=1e-4)
    objective = mghft.losses.MGHFTObjective()

    def step() -> None:
        if mode == "forward":
            net.eval()
            with torch.no_grad():
                model(images, text_features=feats) if part == "mghft" else net.forward_stages(images, False)
            return
        net.train()
        if part == "mghft":
            loss = objective(model(images, text_features=feats), labels)["loss"]
        else:
            # The backbone alone as an image classifier: its ImageNet forward plus a linear head.
            loss = torch.nn.functional.cross_entropy(head(net.forward_features(images)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    before = _rss_mb()
    step()  # warm-up; also the step whose peak memory is read
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    return {"seconds": times[len(times) // 2], "peak_mb": peak - before}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mghft_pvt_small")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("PART", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        res = _measure(args.model, args.image_size, args.batch, *args.child, args.reps, args.threads)
        print(json.dumps(res))
        return 0
    rows = {}
    for part in ("backbone", "mghft"):
        for mode in ("forward", "train"):
            cmd = [sys.executable, __file__, "--model", args.model, "--image-size", str(args.image_size)]
            cmd += ["--batch", str(args.batch), "--reps", str(args.reps), "--threads", str(args.threads)]
            out = subprocess.run(cmd + ["--child", part, mode], check=True, capture_output=True, text=True).stdout
            rows[(part, mode)] = json.loads(out.strip().splitlines()[-1])
    print(f"{args.model}, {args.image_size} px, batch {args.batch}, {args.threads} CPU threads, median of {args.reps}")
    print(f"{'':10s} {'backbone':>22s} {'MGHFT':>22s} {'MGHFT / backbone':>18s}")
    for mode in ("forward", "train"):
        b, m = rows[("backbone", mode)], rows[("mghft", mode)]
        print(
            f"{mode + ' s':10s} {b['seconds']:22.3f} {m['seconds']:22.3f} {m['seconds'] / b['seconds']:18.2f}\n"
            f"{mode + ' MB':10s} {b['peak_mb']:22.0f} {m['peak_mb']:22.0f} {m['peak_mb'] / max(b['peak_mb'], 1):18.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
