"""Predictor latency and throughput on CPU, and the exported model (ONNX Runtime, TorchScript) beside PyTorch.

For each variant (random weights: speed does not depend on them):

* **single image**: ``predictor.predict([png_bytes])``, end to end (decode, preprocess, forward with the
  explanation, heatmap), median over repeats;
* **throughput**: ``predictor.predict(list_of_n, batch_size=B)``, images per second;
* **model only, batch B**: the PyTorch forward (with explanation outputs) beside the exported ONNX file run by
  ONNX Runtime and the TorchScript file, on the same inputs, with the largest difference of probabilities.

Bare images (views absent): the paper variant's BERT is not needed, so this runs offline. ``--with-views`` adds a
tiny-variant run whose four view texts go through its MiniLM encoder (feature cache cleared every call).

    .venv/bin/python benchmarks/bench_predict.py                              # mghft_tiny and mghft_pvt_small
    .venv/bin/python benchmarks/bench_predict.py --variants mghft_tiny --threads 4 --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MGHFT_OFFLINE", "1")


def _sticker_bytes(seed: int, size: int = 512) -> bytes:
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        w, h = (int(v) for v in rng.integers(size // 8, size // 2, 2))
        x1, y1 = x0 + w, y0 + h
        d.ellipse((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)) + (255,))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_variant(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    import torch

    import mghft
    from mghft.export import ExportedModel, ExportWrapper, compare_outputs, example_inputs, export_model
    from mghft.serve.predictor import Predictor

    torch.manual_seed(0)
    with_text = name in args.with_views
    model = mghft.create_model(name, text_encoder=with_text).eval()
    with torch.no_grad():
        # Random weights give near-uniform attention whose top-k picks tie and flip on float rounding alone;
        # sharper queries and keys (as a trained model has) make the exported-vs-PyTorch comparison meaningful.
        for pname, p in model.named_parameters():
            if pname.endswith(("attn.q.weight", "attn.kv.weight")):
                p.mul_(6.0)
            if "cls_token" in pname:
                p.normal_(0.0, 1.0)
    classes = list(mghft.SER30K_CLASSES)[: model.cfg.num_classes]
    predictor = Predictor(model, class_names=classes, batch_size=args.batch)
    images = [_sticker_bytes(i) for i in range(args.images)]
    row: dict = {"variant": name, "image_size": model.cfg.image_size, "threads": args.threads}

    row["single_image_ms"] = 1000 * _median_time(lambda: predictor.predict([images[0]]), args.repeats)
    t = _median_time(lambda: predictor.predict(images, batch_size=args.batch), max(1, args.repeats // 3))
    row["throughput_img_s"] = len(images) / t
    if with_text:
        from mghft.views import VIEWS

        desc = {v: f"the {v.replace('_', ' ')} of sticker number {{}} is described here" for v in VIEWS}

        def with_views(k: int) -> None:
            predictor._feat_cache.clear()  # encode the texts every call: the cost of fresh descriptions
            predictor.predict([images[0]], [{v: s.format(k) for v, s in desc.items()}])

        row["single_image_with_views_ms"] = 1000 * _median_time(lambda: with_views(0), args.repeats)

    # model only: PyTorch vs exported files, same inputs
    model.text_encoder = None
    inputs = example_inputs(model, batch=args.batch, seed=1)
    wrapper = ExportWrapper(model).eval()

    def torch_forward() -> None:
        with torch.inference_mode():
            wrapper(*inputs)

    row[f"pytorch_batch{args.batch}_ms"] = 1000 * _median_time(torch_forward, args.repeats)
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        if fmt not in args.formats:
            continue
        t0 = time.perf_counter()
        path = export_model(model, workdir / f"{name}{suffix}", class_names=classes)
        row[f"{fmt}_export_s"] = time.perf_counter() - t0
        row[f"{fmt}_file_mb"] = path.stat().st_size / 1e6
        exported = ExportedModel(path, threads=args.threads)
        arrays = [x.numpy() for x in inputs]
        row[f"{fmt}_batch{args.batch}_ms"] = 1000 * _median_time(lambda e=exported, a=arrays: e(*a), args.repeats)
        report = compare_outputs(model, exported, inputs)
        row[f"{fmt}_max_prob_diff"] = report["probabilities"]
        row[f"{fmt}_patches_equal"] = min(v for k, v in report.items() if k.startswith("patches"))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=["mghft_tiny", "mghft_pvt_small"])
    p.add_argument("--with-views", nargs="*", default=["mghft_tiny"], help="variants also timed with view texts")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for PyTorch and ONNX Runtime (1: on a small shared machine, more threads "
                   "than free cores make PyTorch spin-wait and run many times slower)")  # fmt: skip
    p.add_argument("--batch", type=int, default=8, help="batch size for throughput and the model-only runs")
    p.add_argument("--images", type=int, default=32, help="images in the throughput run")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--formats", nargs="*", default=["onnx", "torchscript"])
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants:
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows.append(bench_variant(name, args, Path(tmp)))
    env = {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or "cpu"}
    print(f"\nCPU, {args.threads} threads, torch {env['torch']}; batch {args.batch}; images 512 x 512 PNG")
    keys = sorted(
        {k for r in rows for k in r} - {"variant"}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99
    )
    print("| measure | " + " | ".join(r["variant"] for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in keys:
        vals = []
        for r in rows:
            v = r.get(k, "")
            vals.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        print(f"| {k} | " + " | ".join(vals) + " |")
    if args.json:
        args.json.write_text(json.dumps({"env": env, "args": vars(args) | {"json": str(args.json)}, "rows": rows},
                                        indent=2, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
