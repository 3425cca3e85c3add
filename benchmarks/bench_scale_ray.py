"""The price of the Ray Data engine, measured: N generated stickers through ``mghft predict`` and
``mghft interpret`` locally and with ``--engine ray`` on this machine, side by side in one run.

Each run is its own process (so each peak resident memory is its own): the local command, then the Ray one
(a local Ray started by the command; its workers are other processes, so "driver" memory is the command's own).
Prints throughput, peak driver memory, the time of a Ray rerun with nothing left to label, and whether both
engines gave the same labels (predict) and described the same stickers (interpret), then appends a record to
``benchmarks/results.jsonl``. The Ray runs write the Delta Lake table (:mod:`mghft.scale.table`).

    .venv/bin/python benchmarks/bench_scale_ray.py --n 2000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_data(root: Path, n: int) -> tuple[Path, Path]:
    """n small generated stickers and a random-weight mghft_tiny checkpoint."""
    sys.path.insert(0, str(ROOT))
    from mghft.hub import save_checkpoint
    from mghft.models.factory import create_model
    from tests import synthetic

    rng = random.Random(0)
    images = root / "stickers"
    for i in range(n):
        label = synthetic.CLASSES[i % len(synthetic.CLASSES)]
        p = images / f"{i // 500:03d}" / f"{i:06d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        synthetic.sticker(label, rng).save(p)
    model = create_model("mghft_tiny", num_classes=len(synthetic.CLASSES), text_encoder=False)
    save_checkpoint(model, root / "ck", class_names=list(synthetic.CLASSES))
    return images, root / "ck"


def child(argv: list[str]) -> None:
    """Run one mghft command in this process; print its wall time and peak resident memory as JSON."""
    from mghft.cli import main

    t0 = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"code": code, "seconds": seconds, "peak_mb": peak_mb}))


def run(argv: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MGHFT_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="stickers (default 2000)")
    ap.add_argument("--actors", type=int, default=2, help="Ray actors (default 2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results.jsonl")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, ck = make_data(tmp, args.n)
        common = ["--model", str(ck), "--batch-size", str(args.batch_size), "--no-progress"]
        results = {}
        results["predict local"] = run(["predict", str(images), *common, "--out", str(tmp / "local.jsonl")])
        ray_predict = ["predict", str(images), *common, "--engine", "ray", "--out", str(tmp / "ray"),
                       "--actors", str(args.actors), "--cpus-per-actor", "0.5"]  # fmt: skip
        results["predict ray"] = run(ray_predict)
        results["predict ray rerun"] = run(ray_predict)  # every sticker already labelled by this model: skipped
        rows = [json.loads(line) for line in (tmp / "local.jsonl").read_text(encoding="utf-8").splitlines()]
        local = {r["path"]: r["label"] for r in rows}
        sys.path.insert(0, str(ROOT / "src"))
        from mghft.interpret.loopback import LoopbackServer
        from mghft.scale.ray_engine import read_output

        table = read_output(tmp / "ray")
        ray_labels = dict(zip(table.column("path").to_pylist(), table.column("label").to_pylist(), strict=True))
        same = sum(local.get(p) == lab for p, lab in ray_labels.items())

        with LoopbackServer(delay=0.0) as server:
            backend = ["--backend", "vllm:loopback", "--base-url", server.url, "--concurrency", "16", "--no-progress"]
            results["interpret local"] = run(["interpret", str(images), "--store", str(tmp / "d.sqlite"), *backend])
            results["interpret ray"] = run(["interpret", str(images), "--engine", "ray", "--out", str(tmp / "d"),
                                            "--actors", str(args.actors), *backend])  # fmt: skip
        described = read_output(tmp / "d").num_rows

    print(f"{args.n} stickers, {os.cpu_count()} CPUs, {args.actors} Ray actors")
    print(f"{'run':<18}{'seconds':>9}{'stickers/s':>12}{'peak driver MB':>16}")
    for name, r in results.items():
        print(f"{name:<18}{r['seconds']:>9.1f}{args.n / r['seconds']:>12.1f}{r['peak_mb']:>16.0f}")
    print(f"predict ray rerun (all {args.n} skipped): {results['predict ray rerun']['seconds']:.1f} s")
    for what in ("predict", "interpret"):
        lo, ra = results[f"{what} local"], results[f"{what} ray"]
        print(
            f"{what}: ray / local throughput {lo['seconds'] / ra['seconds']:.2f}x, "
            f"peak driver memory {ra['peak_mb'] / lo['peak_mb']:.2f}x"
        )
    print(f"predict: {same} of {len(local)} labels identical between engines; interpret: {described} rows")
    if not args.no_record:
        record = {"benchmark": "bench_scale_ray", "n": args.n, "actors": args.actors, "results": results,
                  "same_labels": same, "described": described, "time": time.strftime("%Y-%m-%d")}  # fmt: skip
        with open(ROOT / "benchmarks" / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
