"""Side by side with the public MGHFT code itself: training step and inference, time, memory and FLOP rate.

The public code runs from a checkout (``--official-dir``: its ``model.py``, ``pvt_local_final.py`` and
``block.py`` under the stand-ins of ``public_code.py``, as ``parity_official.py`` runs it); this project's model
runs from its source. Each side runs in its own process, one after the other in one run, with the same model
size, batch, image size and thread count, and reports the same quantities:

* **train**: one optimisation step (forward, loss, backward, AdamW).
  Public: its forward with word ids, cross-entropy with label smoothing 0.2 + 0.5 x its alignment loss, as its
  ``engine.py`` does. Its BERT is the stub of ``public_code.py`` (fixed per-view features, no compute), so the
  public figures leave out the BERT-base forward the public code runs over 4 x 512 tokens at every step: they
  are a lower bound of its cost. ``--public-bert`` runs a BERT-base encoder (random weights) there instead.
  Ours: cached per-view text features (what ``mghft train`` reads), ``MGHFTObjective`` and the training loop's
  optimizer (fused AdamW, its parameter groups).
* **predict**: one forward pass in eval mode without gradients. Public: its evaluation forward (word ids through
  the stub; its ``inference=True`` path does not run). Ours: per-view features at hand and ``explain=True``
  (view weights and picked patches, as the predictor asks for).

Per side: the median time of ``--reps`` steps after one warm-up; the **whole-process peak resident memory**
(``ru_maxrss``: interpreter, imports, weights, optimizer state, activations) over the warm-up and the timed steps
and the resident size just before the first step; the step's FLOPs by torch's flop counter, in one more step after
the peak is read (``torch.utils.flop_counter``: matrix products, convolutions, attention; this project's oneDNN
linear counted as ``addmm``) and the achieved rate, FLOPs / median time, as a fraction of the float32 rate of a
``--matmul`` x ``--matmul`` matrix product timed in the same process right after each step (median), so that load
from other processes weighs on both alike; its matrices are made after the step and freed before the next, so they
never raise the step's peak memory. The load average is printed with the figures.

Without ``--official-dir`` only this project's side is measured, and the output says so: no ratios.

    git --git-dir <mirror of the public repository> archive HEAD | tar -x -C /tmp/official
    PYTHONPATH=src python benchmarks/bench_official.py --official-dir /tmp/official --results benchmarks/results.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

TARGETS = {"train": (15.0, 0.4), "predict": (13.0, 0.3)}  # at least this much faster, at most this much memory
MATMUL_TARGET = 0.7  # fraction of the same process's matrix-product rate


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _public_step(args: argparse.Namespace, task: str, images: Any, labels: Any) -> Callable[[], None]:
    import torch
    from public_code import PUBLIC_ARGS, import_public

    V, B = 4, images.shape[0]
    model_module, bert = import_public(args.official_dir.resolve(), Path(tempfile.mkdtemp(prefix="standins-")))
    bert.BertModel.table = torch.randn(B * V, 768)  # row b * V + v: the features of view v of sample b
    model = model_module.MGHFT(SimpleNamespace(**{**PUBLIC_ARGS, "drop_path": 0.1}))
    word_id = torch.arange(B * V).reshape(B, V, 1).expand(-1, -1, args.text_len).contiguous()
    word_mask = torch.ones_like(word_id)
    if args.public_bert:  # the public code's BERT-base over every view at every step (random weights)
        from transformers import BertConfig, BertModel

        bert.BertModel.encoder = BertModel(BertConfig(), add_pooling_layer=False).train(task == "train")
        word_id = torch.randint(1000, 30000, (B, V, args.text_len))
        word_mask = torch.zeros_like(word_id)
        word_mask[..., : args.text_tokens] = 1  # a description of this many tokens, padded
    if task == "predict":
        model.eval()

        def infer() -> None:
            with torch.no_grad():
                model(images, word_id, word_mask)

        return infer
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.2)

    def train() -> None:
        logits, loss_cm = model(images, word_id, word_mask)
        loss = ce(logits, labels) + 0.5 * loss_cm
        opt.zero_grad()
        loss.backward()
        opt.step()

    return train


def _our_step(args: argparse.Namespace, task: str, images: Any, labels: Any) -> Callable[[], None]:
    import torch

    import mghft

    if args.no_onednn:
        from mghft.models.ops import use_onednn_linear

        use_onednn_linear(False)  # F.linear throughout, to measure what oneDNN's linear brings
    model = mghft.create_model(args.model, text_encoder=False, image_size=images.shape[-1])
    feats = torch.randn(images.shape[0], 4, model.cfg.text.dim)
    if task == "predict":
        model.eval()

        def infer() -> None:
            with torch.inference_mode():
                model(images, text_features=feats, explain=True)

        return infer
    from mghft.losses import MGHFTObjective
    from mghft.train.loop import make_optimizer

    model.train()
    opt = make_optimizer(model, 0.05, 1e-3)
    objective = MGHFTObjective()

    def train() -> None:  # the training loop's order: gradients are dropped right after the update
        loss = objective(model(images, text_features=feats), labels)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return train


def _child(args: argparse.Namespace, side: str, task: str) -> None:
    """One side of one task, driven over stdin/stdout: set up, then one timed step per ``step`` line."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def say(obj: dict[str, Any]) -> None:
        print(json.dumps(obj), flush=True)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size, batch = (args.train_size, args.train_batch) if task == "train" else (args.predict_size, args.predict_batch)
    images = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, 7, (batch,))
    step = (_public_step if side == "public" else _our_step)(args, task, images, labels)
    rss_before = _rss_mb()
    step()  # warm-up
    n = args.matmul

    def matmul_rates() -> list[float]:
        # The matrices live only here, between steps, so they never add to the step's peak memory.
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        rates = []
        for _ in range(3):
            t0 = time.perf_counter()
            torch.mm(a, b)
            rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
        return rates

    say({"rss_before_step_mb": rss_before, "size": size, "batch": batch})
    for line in sys.stdin:
        if line.strip() != "step":
            break
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        step()
        sec = time.perf_counter() - t0
        say({"seconds": sec, "matmul_gflop_per_s": matmul_rates(), "load_average": load})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the steps' peak, before the count below
    with FlopCounterMode(display=False) as counter:  # its bookkeeping would add to the peak: counted last
        step()
    say({"peak_rss_mb": peak, "gflops": counter.get_total_flops() / 1e9})


def _measure(argv: list[str], sides: list[str], task: str, reps: int, log: Any) -> dict[str, dict[str, Any]]:
    """Start one process per side, then time their steps in turn (A B A B ...), so both meet the same load."""
    procs = {
        side: subprocess.Popen(
            [sys.executable, __file__, *argv, "--child", f"{side}:{task}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        for side in sides
    }

    def read(side: str) -> dict[str, Any]:
        line = procs[side].stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit(f"the {side} {task} process failed (exit {procs[side].wait()}); see {log.name}")
        return json.loads(line)

    def send(side: str, text: str) -> None:
        procs[side].stdin.write(text + "\n")  # type: ignore[union-attr]
        procs[side].stdin.flush()  # type: ignore[union-attr]

    rows = {side: read(side) for side in sides}
    steps: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for _ in range(reps):
        for side in sides:
            send(side, "step")
            steps[side].append(read(side))
    for side in sides:
        send(side, "end")
        rows[side].update(read(side))
        procs[side].wait()
        row = rows[side]
        row["all_seconds"] = [s["seconds"] for s in steps[side]]
        row["seconds"] = statistics.median(row["all_seconds"])
        row["matmul_gflop_per_s"] = statistics.median(r for s in steps[side] for r in s["matmul_gflop_per_s"])
        row["gflop_per_s"] = row["gflops"] / row["seconds"]
        row["matmul_fraction"] = row["gflop_per_s"] / row["matmul_gflop_per_s"]
        row["load_average"] = [s["load_average"] for s in steps[side]]
    return rows


def _table(task: str, args: argparse.Namespace, rows: dict[str, dict[str, Any]]) -> list[str]:
    ours, pub = rows["ours"], rows.get("public")
    what = "training step" if task == "train" else "inference"
    loads = [x for r in rows.values() for x in r["load_average"]]
    lines = [
        f"{what}: {args.model}, {ours['size']} px, batch {ours['batch']}, {args.threads} threads, median of "
        f"{args.reps}; load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores",
        f"{'':28s} {'public code':>12s} {'mghft':>12s} {'ratio':>14s}",
    ]

    def row(label: str, key: str, fmt: str, ratio: str | None = None) -> None:
        p = format(pub[key], fmt) if pub else "-"
        r = ""
        if pub and ratio == "faster":
            r = f"{pub[key] / ours[key]:.1f}x faster"
        elif pub and ratio == "times":
            r = f"{ours[key] / pub[key]:.2f}x"
        lines.append(f"{label:28s} {p:>12s} {format(ours[key], fmt):>12s} {r:>14s}")

    row("step, s", "seconds", ".3f", "faster")
    row("peak resident memory, MB", "peak_rss_mb", ".0f", "times")
    row("  resident before step, MB", "rss_before_step_mb", ".0f", "times")
    row("GFLOPs per step", "gflops", ".1f", "times")
    row("achieved GFLOP/s", "gflop_per_s", ".1f")
    row("matmul GFLOP/s, same process", "matmul_gflop_per_s", ".1f")
    row("fraction of matmul rate", "matmul_fraction", ".2f")
    speed_t, mem_t = TARGETS[task]
    verdicts = [f"matmul fraction {ours['matmul_fraction']:.2f} (target >= {MATMUL_TARGET}): "
                f"{'met' if ours['matmul_fraction'] >= MATMUL_TARGET else 'NOT met'}"]  # fmt: skip
    if pub:
        speed, mem = pub["seconds"] / ours["seconds"], ours["peak_rss_mb"] / pub["peak_rss_mb"]
        verdicts.insert(0, f"speed {speed:.1f}x (target >= {speed_t:g}x): {'met' if speed >= speed_t else 'NOT met'}")
        verdicts.insert(1, f"memory {mem:.2f}x (target <= {mem_t:g}x): {'met' if mem <= mem_t else 'NOT met'}")
    lines.append("; ".join(verdicts))
    return lines


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    p.add_argument("--official-dir", type=Path, help="checkout of the public MGHFT code (without it: ours only)")
    p.add_argument("--tasks", nargs="+", choices=("train", "predict"), default=["train", "predict"], help="to time")
    p.add_argument("--model", default="mghft_pvt_small", help="this project's model variant")
    p.add_argument("--train-size", type=int, default=224, help="training image size, px")
    p.add_argument("--train-batch", type=int, default=4, help="training batch")
    p.add_argument("--predict-size", type=int, default=448, help="inference image size, px")
    p.add_argument("--predict-batch", type=int, default=1, help="inference batch")
    p.add_argument("--text-len", type=int, default=512, help="word ids per view on the public side")
    p.add_argument("--public-bert", action="store_true",
                   help="run a BERT-base encoder (random weights) in the public code's BERT stand-in, as the "
                   "public code runs BERT over every view at every step; default: the stub (no text cost)")  # fmt: skip
    p.add_argument("--text-tokens", type=int, default=120, help="with --public-bert: real tokens per view")
    p.add_argument("--no-onednn", action="store_true", help="this project's side with F.linear, not oneDNN's linear")
    p.add_argument("--reps", type=int, default=3, help="timed steps per side (median reported)")
    p.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    p.add_argument("--matmul", type=int, default=2048, help="size of the square matrix product for the peak rate")
    p.add_argument("--results", type=Path, help="append the figures as one JSON line to this file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.child:
        side, task = args.child.split(":")
        _child(args, side, task)
        return 0
    if args.official_dir is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from public_code import check_checkout

        if why := check_checkout(args.official_dir):
            p.error(why)
    else:
        print("no --official-dir given: the public code is not measured, only this project's side (no ratios)")
    record: dict[str, Any] = {
        "benchmark": "bench_official",
        "command": "python benchmarks/bench_official.py " + shlex.join(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "tasks": {},
    }
    sides = ["public", "ours"] if args.official_dir else ["ours"]
    with tempfile.NamedTemporaryFile("w", prefix="bench_official-", suffix=".log", delete=False) as log:
        for task in args.tasks:
            print(f"measuring {task}: {' and '.join(sides)} ...", file=sys.stderr, flush=True)
            rows = _measure(argv, sides, task, args.reps, log)
            print("\n".join(_table(task, args, rows)) + "\n", flush=True)
            record["tasks"][task] = rows
    if args.results:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
