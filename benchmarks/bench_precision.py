"""Inference precisions side by side in one process: float32 PyTorch, ONNX Runtime float32, bf16 and int8.

Speed (random weights: speed does not depend on them): ``--model`` (default ``mghft_pvt_small`` at 448 px) with
the explanation outputs and every view absent, at each ``--batch``; the configurations alternate round by round
so a shared machine slows them alike, and the median per configuration is reported. Per configuration:

* seconds per image;
* achieved GFLOP/s: the model's FLOPs per image (``torch.utils.flop_counter``, matrix products and convolutions)
  over the seconds per image;
* the same precision's matrix-product rate measured in the same run on the model's token-wise layer shapes
  (PyTorch: oneDNN float32 linears, bf16 linears under autocast; ONNX Runtime: a graph of the same MatMuls in
  float32, and the same graph through ``quantize_dynamic`` for int8), and the ratio of the two;
* max |dp| against float32 PyTorch on the timed (random) images.

Agreement on real stickers (``--checkpoint``, a trained checkpoint, with ``--stickers`` images, e.g. ``mghft
demo``'s): each precision against float32 PyTorch, labels kept and max |dp|; the int8 file is exported with the
checkpoint's validation split as its calibration set (``mghft export --precision int8``). bf16 is measured even on
a CPU that would refuse it (emulated), so its agreement is known; its speed is shown only where the CPU has
bfloat16 instructions.

    .venv/bin/python benchmarks/bench_precision.py --checkpoint runs/demo/train/best \\
        --stickers runs/demo/dataset/images --results benchmarks/results.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MGHFT_OFFLINE", "1")

LINEAR_SHAPES = ((64, 512), (512, 64), (128, 1024), (1024, 128), (320, 1280), (1280, 320), (512, 2048))
"""(in, out) of the model's token-wise layers (PVT-small MLPs), timed for each precision's product rate."""


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def model_flops(model, size: int) -> float:
    """FLOPs of one image's forward (the explanation path), as torch's flop counter counts them."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, size, size)
    with FlopCounterMode(display=False) as counter:  # with autograd on: its module tracker needs it
        model(x, explain=True)
    return float(counter.get_total_flops())


def matmul_rates(tokens: int, reps: int, tmp: Path, bf16: bool) -> dict[str, float]:
    """GFLOP/s of the model's layer shapes per precision and runtime, measured now."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from mghft.models.ops import linear
    from mghft.serve.precision_setup import quantize_int8

    flops = sum(2 * tokens * i * o for i, o in LINEAR_SHAPES)
    layers = [torch.nn.Linear(i, o) for i, o in LINEAR_SHAPES]
    xs = [torch.randn(tokens, i) for i, _ in LINEAR_SHAPES]

    def torch_run() -> None:
        with torch.inference_mode():
            for x, layer in zip(xs, layers, strict=True):
                linear(x, layer)

    def torch_bf16() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            for x, layer in zip(xs, layers, strict=True):
                linear(x, layer)

    nodes, inits, inputs, outputs = [], [], [], []
    for k, ((i, o), layer) in enumerate(zip(LINEAR_SHAPES, layers, strict=True)):
        inputs.append(helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [tokens, i]))
        outputs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, [tokens, o]))
        inits.append(numpy_helper.from_array(layer.weight.detach().numpy().T.copy(), f"w{k}"))
        nodes.append(helper.make_node("MatMul", [f"x{k}", f"w{k}"], [f"y{k}"], name=f"mm{k}"))
    graph = helper.make_graph(nodes, "mm", inputs, outputs, inits)
    fp32 = tmp / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    quantize_int8(fp32, tmp / "mm.int8.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                for k, p in (("ort_fp32", fp32), ("ort_int8", tmp / "mm.int8.onnx"))}  # fmt: skip
    feeds = {f"x{k}": x.numpy() for k, x in enumerate(xs)}
    runs = {"torch_fp32": torch_run, **{k: (lambda s=s: s.run(None, feeds)) for k, s in sessions.items()}}
    if bf16:
        runs["torch_bf16"] = torch_bf16
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for k, fn in runs.items():
            times[k].append(_median_time(fn, 1))
    del np
    return {k: flops / statistics.median(v) / 1e9 for k, v in times.items()}


def speed(args: argparse.Namespace, tmp: Path) -> dict:
    import numpy as np
    import torch

    import mghft
    from mghft.export import export_model
    from mghft.precision import cpu_support
    from mghft.serve.onnx_model import OnnxModel
    from mghft.serve.precision_setup import quantize_int8

    torch.manual_seed(0)
    model = mghft.create_model(args.model, text_encoder=False, image_size=args.image_size).eval()
    size = model.cfg.image_size
    flops = model_flops(model, size)
    export_model(model, tmp / "model.onnx")
    quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx")
    ort32 = OnnxModel(tmp / "model.onnx", text_encoder=False)
    ort8 = OnnxModel(tmp / "model.int8.onnx", text_encoder=False)
    cpu = cpu_support()
    configs = {
        "pytorch fp32": ("torch_fp32", lambda x: model(x, explain=True)),
        "onnxruntime fp32": ("ort_fp32", lambda x: ort32(x, explain=True)),
        "onnxruntime int8": ("ort_int8", lambda x: ort8(x, explain=True)),
    }
    if cpu.bf16:

        def bf16(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x, explain=True)

        configs["pytorch bf16"] = ("torch_bf16", bf16)
    rows = []
    for batch in args.batch:
        x = torch.randn(batch, 3, size, size)
        with torch.inference_mode():
            outs = {k: torch.softmax(fn(x)["logits"].float(), -1).numpy() for k, (_, fn) in configs.items()}
        times: dict[str, list[float]] = {k: [] for k in configs}
        with torch.inference_mode():
            for _ in range(args.reps):
                for k, (_, fn) in configs.items():
                    times[k].append(_median_time(lambda fn=fn, x=x: fn(x), 1) / batch)
        rates = matmul_rates(args.tokens, 3, tmp, cpu.bf16)
        for k, (rate_key, _) in configs.items():
            s = statistics.median(times[k])
            achieved = flops / s / 1e9
            rows.append({
                "config": k, "batch": batch, "s_per_image": s, "all_s_per_image": times[k],
                "gflop_per_s": achieved, "matmul_gflop_per_s": rates[rate_key],
                "fraction_of_matmul": achieved / rates[rate_key],
                "speedup_vs_pytorch_fp32": statistics.median(times["pytorch fp32"]) / s,
                "max_abs_dp_random": float(np.abs(outs[k] - outs["pytorch fp32"]).max()),
            })  # fmt: skip
            print(f"  batch {batch} {k}: {s:.3f} s/image", file=sys.stderr, flush=True)
    refused = {p: cpu.refusal(p) for p in ("bf16", "int8") if cpu.refusal(p)}
    return {"model": args.model, "image_size": size, "gflop_per_image": flops / 1e9, "rows": rows,
            "refused": refused, "cpu": cpu.summary()}  # fmt: skip


def _bf16_with_fp32_picks(predictor, chunk):
    """bf16 probabilities with Local Re-Attention's patch picks taken from the float32 run of the same images."""
    import mghft.models.mghft as mm
    from mghft.serve.precision_setup import bare_probabilities

    select = mm.select_local_tokens
    picks = []
    try:
        mm.select_local_tokens = lambda *a, **k: picks.append(select(*a, **k)) or picks[-1]
        bare_probabilities(predictor, chunk, "fp32")
        replay = iter(picks)
        mm.select_local_tokens = lambda *a, **k: next(replay)
        return bare_probabilities(predictor, chunk, "bf16")
    finally:
        mm.select_local_tokens = select


def agreement(args: argparse.Namespace, tmp: Path) -> dict:
    import numpy as np

    import mghft
    from mghft.data.walk import find_images
    from mghft.precision import compare_probabilities
    from mghft.serve.precision_setup import bare_probabilities, export_with_precision, load_calibration_images
    from mghft.serve.predictor import load_predictor

    files = sorted(find_images([args.stickers], as_str=True).files)[: args.max_stickers]
    model = mghft.load_model(args.checkpoint, text_encoder=False)
    exported = {}
    for p in ("fp32", "int8"):
        a = export_with_precision(model, tmp / f"ck.{p}.onnx", p, checkpoint=args.checkpoint)
        exported[p] = a.to_dict() if a else None
    ref = load_predictor(args.checkpoint, device="cpu", text_encoder=False)
    images = load_calibration_images(ref, files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = {
            "pytorch fp32": (ref, "fp32"),
            "pytorch bf16": (ref, "bf16"),  # emulated where the CPU lacks bf16: agreement only
            "onnxruntime fp32": (load_predictor(tmp / "ck.fp32.onnx", text_encoder=False), "fp32"),
            "onnxruntime int8": (load_predictor(tmp / "ck.int8.onnx", text_encoder=False, precision="int8"), "int8"),
        }
        # diagnostics: int8 with full-range (8-bit) weights; bf16 given float32's patch picks
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        from mghft.serve.precision_setup import activation_matmuls

        logging.getLogger().setLevel(logging.ERROR)
        fp32_file = tmp / "ck.fp32.onnx"
        quantize_dynamic(str(fp32_file), str(tmp / "ck.int8full.onnx"), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=activation_matmuls(fp32_file),
                         per_channel=True, reduce_range=False)  # fmt: skip
        runs["diagnostic: int8, 8-bit weights"] = (load_predictor(tmp / "ck.int8full.onnx", text_encoder=False), "fp32")
    probs = {}
    for k, (pred, prec) in runs.items():
        probs[k] = np.concatenate([bare_probabilities(pred, images[i : i + 16], prec if prec == "bf16" else "fp32")
                                   for i in range(0, len(images), 16)])  # fmt: skip
    probs["diagnostic: bf16 with fp32's patch picks"] = np.concatenate(
        [_bf16_with_fp32_picks(ref, images[i : i + 16]) for i in range(0, len(images), 16)]
    )
    rows = {k: compare_probabilities(probs["pytorch fp32"], v, k).to_dict() for k, v in probs.items()}
    return {"checkpoint": str(args.checkpoint), "stickers": str(args.stickers), "images": len(files),
            "rows": rows, "export_calibration": exported}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mghft_pvt_small")
    ap.add_argument("--image-size", type=int, default=None, help="default: the variant's (448 for mghft_pvt_small)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reps", type=int, default=3, help="rounds of the alternating timing")
    ap.add_argument("--tokens", type=int, default=3136, help="rows of the matrix-product rate measurement")
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    ap.add_argument("--checkpoint", type=Path, help="a trained checkpoint for the agreement table")
    ap.add_argument("--stickers", type=Path, help="sticker images for the agreement table")
    ap.add_argument("--max-stickers", type=int, default=1000)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--results", type=Path, help="append the record to this JSONL file")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    record: dict = {"benchmark": "bench_precision", "command": "python " + " ".join(sys.argv),
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "cpus": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average_before": os.getloadavg()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_speed:
            record["speed"] = speed(args, Path(tmp))
        if args.checkpoint:
            record["agreement"] = agreement(args, Path(tmp))
    record["load_average_after"] = os.getloadavg()
    import onnxruntime

    record["onnxruntime"] = onnxruntime.__version__
    if "speed" in record:
        sp = record["speed"]
        print(f"\n{sp['model']} at {sp['image_size']} px, random weights, {sp['gflop_per_image']:.1f} GFLOP/image, "
              f"{record['threads']} threads; refused here: {sp['refused'] or 'none'}")  # fmt: skip
        print(
            "| configuration | batch | s/image | x fp32 PyTorch | GFLOP/s | own matmul GFLOP/s | share | max abs dp |"
        )  # noqa: E501
        print("|---|---|---|---|---|---|---|---|")
        for r in sp["rows"]:
            print(f"| {r['config']} | {r['batch']} | {r['s_per_image']:.3f} | {r['speedup_vs_pytorch_fp32']:.2f} | "
                  f"{r['gflop_per_s']:.1f} | {r['matmul_gflop_per_s']:.1f} | {r['fraction_of_matmul']:.0%} | "
                  f"{r['max_abs_dp_random']:.2g} |")  # fmt: skip
    if "agreement" in record:
        ag = record["agreement"]
        print(f"\nagreement with float32 PyTorch: {ag['checkpoint']} on {ag['images']} stickers from {ag['stickers']}")
        print("| configuration | labels kept | max abs dp | mean abs dp | passes |")
        print("|---|---|---|---|---|")
        for k, a in ag["rows"].items():
            print(f"| {k} | {a['labels_kept']:.1%} | {a['max_abs_dp']:.3g} | {a['mean_abs_dp']:.2g} | {a['passed']} |")
    if args.results:
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
