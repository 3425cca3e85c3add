"""How costs grow with the number of stickers: time per item and peak memory at N = 1,000, 10,000, 100,000.

Generates N small stickers (48 x 48 PNG, 1,000 per folder; a larger N reuses the smaller sets' files) and a JSONL
manifest with labels and four view descriptions, then runs each part at each N in a fresh process:

* ``predict``: ``mghft predict <folders> --model <checkpoint> --out preds.jsonl`` (bare images), the checkpoint a
  random ``mghft_tiny`` at 32 px without a text encoder: the model's cost per sticker is the same at any N;
* ``interpret``: ``mghft interpret <folders> --store <new store>`` against a loopback chat-completions server
  (``mghft.interpret.loopback``, zero delay, in this process) with 8 requests in flight;
* ``features``: the text-feature cache filled with the 4 x N distinct view texts of the manifest
  (``TextFeatureCache.fill``), with a one-layer random BERT behind the packaged MiniLM tokenizer: the encoder's
  own cost is the same per text at any N, so a tiny one shows the cache's bookkeeping;
* ``readers``: ``read_manifest`` and ``validate_index`` (every image decoded, 2 threads).

Printed per part and N: seconds per item (the command's own run, after its imports; fixed start-up work such as
loading the model counts, spread over N) and the process's peak resident memory (``VmHWM``). Each part runs with
one torch thread (``--torch-threads``). The goal: time per item within +-25% across N, peak memory from 10k to 100k
up by at most 15%.

    PYTHONPATH=src python benchmarks/bench_scaling.py --sizes 1000 10000 100000 --work /tmp/scaling
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PARTS = ("predict", "interpret", "features", "readers")
PER_FOLDER = 1000
CLASSES = ("anger", "happiness", "sadness")
IMAGE_SIZE = 32
PRE_IMPORTS = {
    "predict": ("torch", "mghft.data", "mghft.serve.cli", "mghft.serve.predictor", "mghft.models.factory"),
    "interpret": ("mghft.interpret.cli", "mghft.interpret.runner", "mghft.interpret.backends", "httpx"),
}


def _generate(work: Path, n: int, images: bool = True) -> list[Path]:
    """The folders holding stickers 0..n-1 (created as needed, if ``images``) and the manifest of those n."""
    from PIL import Image, ImageDraw

    folders = []
    for f in range((n + PER_FOLDER - 1) // PER_FOLDER if images else 0):
        folder = work / "stickers" / f"{f:04d}"
        count = min(PER_FOLDER, n - f * PER_FOLDER)
        if not (folder / ".done").exists() or len(list(folder.glob("*.png"))) < count:
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(f * PER_FOLDER, f * PER_FOLDER + PER_FOLDER):
                im = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
                d = ImageDraw.Draw(im)
                c = (i * 37 % 256, i * 91 % 256, i * 53 % 256, 255)
                r = 8 + i % 13
                d.ellipse((24 - r, 24 - r, 24 + r, 24 + r), fill=c)
                d.text((4 + i % 20, 30), str(i % 1000), fill=(0, 0, 0, 255))  # every file differs
                im.save(folder / f"s{i:06d}.png")
            (folder / ".done").touch()
        folders.append(folder)
    manifest = work / f"manifest-{n}.jsonl"
    if not manifest.exists():
        with open(manifest.with_suffix(".tmp"), "w", encoding="utf-8") as fh:
            for i in range(n):
                label = CLASSES[i % 3]
                desc = {
                    "intention": f"sticker {i} says it feels {label} about message {i * 7}",
                    "style": f"flat cartoon number {i}, {label} colours",
                    "main_role": f"a round character, variant {i}",
                    "posture_expression": f"{label} face, pose {i % 13}, item {i}",
                }
                row = {"path": f"stickers/{i // PER_FOLDER:04d}/s{i:06d}.png", "label": label, "descriptions": desc}
                fh.write(json.dumps(row) + "\n")
        os.replace(manifest.with_suffix(".tmp"), manifest)
    return folders


def _checkpoint(work: Path) -> Path:
    """A random ``mghft_tiny`` at 32 px without a text encoder (as ``bench_scale_ray.py`` builds its checkpoint,
    smaller still): the model's cost per sticker is the same at any N, so a small one shows the bookkeeping."""
    folder = work / f"tiny-checkpoint-{IMAGE_SIZE}px"
    if not (folder / "model.safetensors").exists():
        import torch

        import mghft

        torch.manual_seed(0)
        model = mghft.create_model("mghft_tiny", image_size=IMAGE_SIZE, text_encoder=False)
        mghft.save_checkpoint(model, folder, class_names=list(mghft.SER30K_CLASSES))
    return folder


def _child(args: argparse.Namespace) -> None:
    """Run one part at one N in this process; print the seconds it took as JSON."""
    work, n, part = args.work, args.n, args.child
    folders = [str(p) for p in sorted((work / "stickers").iterdir())[: (n + PER_FOLDER - 1) // PER_FOLDER]]
    run = work / "runs" / f"{part}-{n}"
    shutil.rmtree(run, ignore_errors=True)  # a fresh store, cache and output every time
    run.mkdir(parents=True)
    if part in ("predict", "interpret"):
        import importlib

        from mghft.cli import main

        # The command's imports (torch, the predictor, the HTTP client, ...) before the clock starts, as for the
        # other parts: what is timed is the command's own work, loading the model included.
        for module in PRE_IMPORTS[part]:
            importlib.import_module(module)

        if part == "predict":
            argv = ["predict", *folders, "--model", str(args.checkpoint), "--out", str(run / "preds.jsonl")]
            argv += ["--no-progress", "--batch-size", "32", "--workers", "2"]
        else:
            argv = ["interpret", *folders, "--store", str(run / "store.sqlite"), "--backend", "compatible:m"]
            argv += ["--base-url", args.base_url, "--no-progress", "--concurrency", "8"]
        t0 = time.perf_counter()
        rc = main(argv)
        seconds = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"{part} exited with {rc}")
    elif part == "features":
        import dataclasses

        from transformers import BertConfig, BertModel

        from mghft.config import TextConfig
        from mghft.features import TextFeatureCache
        from mghft.models.text import TextEncoder, load_text_backbone
        from mghft.registry import PACKAGED_MINILM

        _, tokenizer = load_text_backbone(PACKAGED_MINILM, offline=True)
        cfg = dataclasses.replace(TextConfig(encoder=PACKAGED_MINILM, max_length=64), dim=32)
        bert = BertModel(
            BertConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
            ),
            add_pooling_layer=False,
        )

        def texts() -> Any:
            with open(work / f"manifest-{n}.jsonl", encoding="utf-8") as fh:
                for line in fh:
                    yield from json.loads(line)["descriptions"].values()

        t0 = time.perf_counter()
        cache = TextFeatureCache(run / "cache", cfg, lambda: TextEncoder(cfg, bert, tokenizer))
        added = cache.fill(texts())
        seconds = time.perf_counter() - t0
        if added != 4 * n:
            raise SystemExit(f"features: {added} texts encoded, expected {4 * n}")
    else:
        from mghft.data.manifest import read_manifest
        from mghft.data.validate import validate_index

        t0 = time.perf_counter()
        report = validate_index(read_manifest(work / f"manifest-{n}.jsonl"), workers=2)
        seconds = time.perf_counter() - t0
        if report.total != n or not report.ok:
            raise SystemExit(f"readers: {report.total} samples, {len(report.problems)} problems")
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _own_peak_mb()}))


def _own_peak_mb() -> float:
    """This process's peak resident memory since it started its program (``VmHWM``), in MB.

    Not ``ru_maxrss``: Linux carries the parent's resident size at the fork into the child's ``ru_maxrss``, so a
    parent grown large (the loopback server keeps every request it was sent) would show in every later part.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(args: argparse.Namespace, part: str, n: int, extra: list[str]) -> dict[str, Any]:
    """Run one part at one N in a child process: its seconds and its own peak resident memory."""
    import tempfile

    cmd = [sys.executable, __file__, "--work", str(args.work), "--child", part, "--n", str(n), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.torch_threads), "MKL_NUM_THREADS": str(args.torch_threads)}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        out = proc.stdout.read()  # type: ignore[union-attr]
        _, status = os.waitpid(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.stderr.write(err.read()[-3000:])
            raise SystemExit(f"{part} at N={n} failed (exit {proc.returncode})")
    got = json.loads(out.strip().splitlines()[-1])
    seconds = got["seconds"]
    return {"seconds": seconds, "ms_per_item": 1000 * seconds / n, "peak_rss_mb": got["peak_rss_mb"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--work", type=Path, default=Path("/tmp/mghft-scaling"), help="generated data and outputs")
    p.add_argument("--results", type=Path, help="append the figures as one JSON line to this file")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads per part (default 1: on a shared machine, tiny models on two threads wait on each "
        "other's time slices, which measures the machine's load rather than the bookkeeping)",
    )
    p.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if any(n < PER_FOLDER or n % PER_FOLDER for n in args.sizes):
        p.error(f"--sizes must be multiples of {PER_FOLDER} (the stickers come {PER_FOLDER} to a folder)")
    os.environ.setdefault("MGHFT_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        _child(args)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"generating up to {max(args.sizes)} stickers under {args.work} ...", file=sys.stderr, flush=True)
    for n in sorted(args.sizes):
        _generate(args.work, n, images=bool(set(args.parts) - {"features"}))  # the cache reads the manifest only
    extra: list[str] = []
    if "predict" in args.parts:
        extra += ["--checkpoint", str(_checkpoint(args.work))]
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    server = None
    if "interpret" in args.parts:
        from mghft.interpret.loopback import LoopbackServer

        server = LoopbackServer(delay=0.0).start()
        extra += ["--base-url", server.url]
    try:
        for part in args.parts:
            for n in sorted(args.sizes):
                print(f"{part} at N={n} ...", file=sys.stderr, flush=True)
                if server is not None:
                    server.requests.clear()  # the server keeps what it was sent; only this process holds it
                r = rows.setdefault(part, {})[n] = _measure(args, part, n, extra)
                print(f"{part} N={n}: {r['ms_per_item']:.3f} ms/item, peak {r['peak_rss_mb']:.0f} MB", flush=True)
    finally:
        if server is not None:
            server.stop()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {args.torch_threads} torch thread(s)")
    print(
        "| part | "
        + " | ".join(f"N = {n:,}" for n in sorted(args.sizes))
        + " | time/item spread | memory 10k -> 100k |"
    )
    print("|---|" + "---:|" * len(args.sizes) + "---:|---:|")
    for part, by_n in rows.items():
        cells = [f"{r['ms_per_item']:.2f} ms, {r['peak_rss_mb']:.0f} MB" for _, r in sorted(by_n.items())]
        per = [r["ms_per_item"] for r in by_n.values()]
        mid = (max(per) + min(per)) / 2
        spread = f"+-{100 * (max(per) - min(per)) / 2 / mid:.0f}%"
        grow = "-"
        if 10000 in by_n and 100000 in by_n:
            grow = f"{100 * (by_n[100000]['peak_rss_mb'] / by_n[10000]['peak_rss_mb'] - 1):+.0f}%"
        print(f"| {part} | " + " | ".join(cells) + f" | {spread} | {grow} |")
    if args.results:
        record = {
            "benchmark": "bench_scaling",
            "command": "python benchmarks/bench_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "sizes": args.sizes,
            "load_average": os.getloadavg()[0],
            "torch_threads": args.torch_threads,
            "image_size": IMAGE_SIZE,
            "time": time.strftime("%Y-%m-%d %H:%M"),
            "rows": rows,
        }
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
