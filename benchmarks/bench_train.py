"""Training-step throughput and peak memory: this project's way against the public code's way, same model.

- ours:   per-view text features read from the cache (no text encoder in the step), CLS-row rollout;
- public: a BERT-base-sized encoder run at every step on each of the 4 views (512 padded tokens, one call per
          view, autograd on and then detached, as the public code does), and the full rollout products.
Both train the same vision + fusion model (``mghft_pvt_small`` by default) with the same batch and image size.
Each measurement runs in its own process; memory is the peak resident size minus the size before the first
step. A BERT-base-sized encoder with random weights stands in for bert-base-uncased (same compute).

    .venv/bin/python benchmarks/bench_train.py                         # CPU: 224 px, batch 4
    PYTHONPATH=src python benchmarks/bench_train.py --device cuda --image-size 448 --batch 16 --amp bf16

On a GPU, memory is the peak allocated by torch (``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _measure(args: argparse.Namespace, way: str) -> dict:
    import torch
    from transformers import BertConfig, BertModel

    import mghft
    from mghft.losses import MGHFTObjective
    from mghft.models.text import TextEncoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    public = way == "public"
    model = mghft.create_model(
        args.model,
        text_encoder=False,
        image_size=args.image_size,
        compat="official" if public else "none",
        fusion={"rollout": "full" if public else "row"},
    ).to(device)
    B, V, L = args.batch, 4, 512
    images = torch.randn(B, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, model.cfg.num_classes, (B,), device=device)
    encoder = None
    if public:
        bert = BertModel(BertConfig(), add_pooling_layer=False).to(device)
        # Trainable config: gradients on and train mode, as the public code runs BERT (it detaches afterwards).
        encoder = TextEncoder(dataclasses.replace(model.cfg.text, trainable=True), bert, None).train()
        ids = torch.randint(1000, 30000, (B * V, L), device=device)
        mask = torch.zeros(B * V, L, dtype=torch.long, device=device)
        mask[:, :120] = 1  # descriptions of ~120 tokens padded to 512
    feats = torch.randn(B, V, model.cfg.text.dim, device=device)
    objective = MGHFTObjective()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    amp = args.amp != "off" and device.type == "cuda"
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()

    def step() -> None:
        with ctx:
            if encoder is not None:
                per_view = []
                for v in range(V):  # one encoder call per view, as the public code loops over views
                    with torch.enable_grad():
                        rows = slice(v * B, (v + 1) * B)
                        out = encoder.model(input_ids=ids[rows], attention_mask=mask[rows], output_hidden_states=True)
                        h = torch.stack(out.hidden_states[-4:]).mean(0).mean(1)  # mean over padding too
                    per_view.append(h.detach())
                text = torch.stack(per_view, dim=1)  # (B, V, 768)
            else:
                text = feats
            loss = objective(model(images, text_features=text), labels)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    before = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step()
    sync()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    sec = times[len(times) // 2]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({args.threads} threads)"
    return {"seconds": sec, "images_per_s": B / sec, "peak_mb": peak, "device": name}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mghft_pvt_small")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="off", choices=("off", "bf16"))
    p.add_argument("--results", help="append the figures as one JSON line to this file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args, args.child)))
        return 0
    rows = {}
    for way in ("public", "ours"):
        cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--child", way]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows[way] = json.loads(out.strip().splitlines()[-1])
    pub, ours = rows["public"], rows["ours"]
    print(
        f"{args.model}, {args.image_size} px, batch {args.batch}, {pub['device']}, amp {args.amp}, "
        f"median of {args.reps}"
    )
    print(f"{'':22s} {'public way':>12s} {'ours':>12s} {'ratio':>8s}")
    print(
        f"{'step seconds':22s} {pub['seconds']:12.3f} {ours['seconds']:12.3f} {pub['seconds'] / ours['seconds']:7.1f}x"
    )
    print(
        f"{'images / second':22s} {pub['images_per_s']:12.2f} {ours['images_per_s']:12.2f} "
        f"{ours['images_per_s'] / pub['images_per_s']:7.1f}x"
    )
    print(
        f"{'peak memory MB':22s} {pub['peak_mb']:12.0f} {ours['peak_mb']:12.0f} "
        f"{ours['peak_mb'] / pub['peak_mb']:7.2f}x"
    )
    if args.results:
        record = {"args": {k: v for k, v in vars(args).items() if k not in ("child", "results")}, **rows}
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
