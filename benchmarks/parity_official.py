"""Parity check: this project's MGHFT (``compat="official"``) against the public reference code, same weights.

The public code (``model.py``, ``pvt_local_final.py``, ``block.py`` of the paper's repository) imports ``timm``
and ``pytorch_pretrained_bert``. Neither is needed here: ``public_code.py`` (beside this script) writes small
stand-ins for what it uses (``DropPath``, ``to_2tuple``, ``trunc_normal_``, ``register_model``, ``_cfg`` and a
``BertModel`` stub) into a temporary folder and puts it on ``sys.path`` ahead of the checkout. Nothing of the
public code is copied.

The BERT stub reads no text: token id 0 of each row indexes a fixed table of random 768-d features and every
hidden layer repeats that row, so the public forward (last-four-layer average, token mean, ``l_proj``) sees
exactly the per-view features that this project's model receives as ``text_features``.

Both models are built in float64 and eval mode (drop-path and dropout off), the public model's parameters are
randomised (normal, std ``--std``; LayerNorm weights around 1), its state dict goes through
:func:`mghft.convert_official` into ``create_model("mghft_pvt_small", compat="official")``, and both run on the
same random images. Printed: max abs differences of the logits, the visual sequence (B x 996 x 512), the text
sequence (B x 8 x 512) and the stage alignment loss (term by term in float64 with ``mghft.losses``' ``info_nce``
and ``mlce``, and as ``stage_alignment_loss`` returns it, which computes in float32). Float64 matters: with random
weights the rolled-out attention scores nearly tie and float32 rounding alone can change which local tokens are picked.

It also checks that ``compat="none"`` differs from the public code only where intended: the stage-4 local
text token (text sequence position 4), and what follows from it (the logits).

Usage (CPU, about a minute and 4 GB of memory: the public code forms a 12545 x 12545 rollout per sample)::

    git clone <public MGHFT repository> /tmp/mghft-official
    python benchmarks/parity_official.py --official-dir /tmp/mghft-official

Exit status 0 when every difference is below ``--tol`` (default 1e-9), 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from public_code import PUBLIC_ARGS, check_checkout, import_public
from torch import nn

import mghft
from mghft.losses import info_nce, mlce, stage_alignment_loss


@torch.no_grad()
def randomise(model: nn.Module, std: float, gen: torch.Generator) -> None:
    """Every parameter ~ N(0, std), LayerNorm weights ~ N(1, std): nothing trivially zero or one."""
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64) * std
            p.copy_(noise + 1 if isinstance(mod, nn.LayerNorm) and name == "weight" else noise)


def alignment_loss_f64(stage_global: torch.Tensor, stage_text: torch.Tensor) -> torch.Tensor:
    """:func:`mghft.losses.stage_alignment_loss` term by term, kept in the inputs' dtype (it casts to float32)."""
    total = stage_global.new_zeros(())
    for s in range(stage_global.shape[1]):
        g = nn.functional.normalize(stage_global[:, s], dim=-1)
        t = nn.functional.normalize(stage_text[:, s], dim=-1)
        total = total + info_nce(g, t) + 30.0 * mlce(g, t)
    return total


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official-dir", type=Path, required=True, help="checkout of the public MGHFT code")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument("--std", type=float, default=0.02, help="std of the random weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tol", type=float, default=1e-9)
    args = ap.parse_args(argv)
    if why := check_checkout(args.official_dir):
        ap.error(why)
    torch.set_num_threads(args.threads)
    B, V = args.batch, 4
    gen = torch.Generator().manual_seed(args.seed)
    features = torch.randn(B * V, 768, generator=gen, dtype=torch.float64)  # row b * V + v: view v of sample b
    images = torch.randn(B, 3, args.image_size, args.image_size, generator=gen, dtype=torch.float64)

    with tempfile.TemporaryDirectory() as tmp:
        public_model, bert = import_public(args.official_dir.resolve(), Path(tmp))
        bert.BertModel.table = features
        torch.manual_seed(args.seed)
        public = public_model.MGHFT(SimpleNamespace(**PUBLIC_ARGS)).double().eval()
    randomise(public, args.std, gen)

    converted = mghft.convert_official(public.state_dict())
    ours = {}
    for compat in ("official", "none"):
        m = mghft.create_model("mghft_pvt_small", compat=compat, text_encoder=False, image_size=args.image_size)
        m = m.double().eval()
        res = m.load_state_dict(converted, strict=False)
        if res.missing_keys != ["missing_view"] or res.unexpected_keys:
            print(f"converted weights do not fit: {res}", file=sys.stderr)
            return 1
        ours[compat] = m

    captured = {}
    public.vision_model.register_forward_hook(lambda mod, inp, out: captured.update(vision=out))
    word_id = torch.arange(B * V).reshape(B, V, 1).expand(-1, -1, 16).contiguous()
    word_mask = torch.ones_like(word_id)
    text_features = features.reshape(B, V, 768)
    with torch.no_grad():
        t0 = time.perf_counter()
        logits_pub, loss_pub = public(images, word_id, word_mask)
        t1 = time.perf_counter()
        out = {c: m(images, text_features=text_features) for c, m in ours.items()}
        t2 = time.perf_counter()
    visual_pub, _, text_pub = captured["vision"]
    o = out["official"]
    loss_ours = stage_alignment_loss(o["stage_global"], o["stage_text"])
    loss_ours64 = alignment_loss_f64(o["stage_global"], o["stage_text"])
    print(f"public forward {t1 - t0:.1f}s, ours (both compat modes) {t2 - t1:.1f}s, float64, batch {B}")

    rows = [
        ("logits", logits_pub, o["logits"]),
        ("visual seq", visual_pub, o["visual_seq"]),
        ("text seq", text_pub, o["text_seq"]),
        ("alignment loss", loss_pub, loss_ours64),
        (f"  ({str(loss_ours.dtype).removeprefix('torch.')})", loss_pub, loss_ours),
    ]
    ok = True
    print(f"{'compat=official':<18}{'shape':>16}{'max |ref|':>12}{'max abs diff':>14}")
    for name, ref, got in rows:
        d = max_diff(ref, got.to(ref.dtype))
        scale = max(1.0, ref.abs().max().item())
        tol = args.tol if got.dtype == torch.float64 else 8 * torch.finfo(got.dtype).eps
        ok &= d < tol * scale
        print(f"{name:<18}{str(tuple(ref.shape)):>16}{ref.abs().max().item():>12.4g}{d:>14.3g}")

    n = out["none"]
    same_text = [p for p in range(8) if p != 4]
    checks = [
        ("visual seq", max_diff(visual_pub, n["visual_seq"]), True),
        ("text seq, not pos 4", max_diff(text_pub[:, same_text], n["text_seq"][:, same_text]), True),
        ("text seq, pos 4", max_diff(text_pub[:, 4], n["text_seq"][:, 4]), False),
        ("logits", max_diff(logits_pub, n["logits"]), False),
    ]
    print(f"{'compat=none':<22}{'max abs diff':>14}  expected")
    for name, d, equal in checks:
        ok &= (d < args.tol) == equal
        print(f"{name:<22}{d:>14.3g}  {'equal' if equal else 'different'}")
    print("PARITY OK" if ok else "PARITY FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
