"""The same sticker, the same answer: Local Re-Attention's picks and the probabilities of each image computed
alone, in batches of 8 and 32, and through the ONNX Runtime and TorchScript exports.

    PYTHONPATH=src python benchmarks/selection_invariance.py --images runs/demo/dataset/images --n 64 \
        --model runs/demo/train/best --model random

For every model it prints how many images got other patches than alone (per path) and the largest probability
difference from the image alone. ``random``: ``mghft_tiny`` with seed-0 random weights. Bare images (no views).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from mghft.export import ExportedModel, ExportWrapper, checkpoint_temperature, export_model
from mghft.serve.predictor import Predictor, load_predictor
from mghft.views import VIEWS


def _predictor(spec: str, n_classes: int) -> Predictor:
    if spec != "random":
        return load_predictor(spec, device="cpu")
    import mghft

    torch.manual_seed(0)
    model = mghft.create_model("mghft_tiny", num_classes=n_classes, text_encoder=False)
    return Predictor(model, class_names=[str(i) for i in range(n_classes)])


def _outputs(fn, images: torch.Tensor, batch: int, dim: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Probabilities (N, C) and per-stage patch indices [(N, K)] in chunks of ``batch``."""
    probs, patches = [], []
    for s in range(0, len(images), batch):
        x = images[s : s + batch]
        feats, mask = torch.zeros(len(x), len(VIEWS), dim), torch.zeros(len(x), len(VIEWS), dtype=torch.bool)
        out = fn(x, feats, mask)
        probs.append(np.asarray(out[1]))
        patches.append([np.asarray(o) for o in out[3:]])
    return np.concatenate(probs), [np.concatenate(stage) for stage in zip(*patches, strict=True)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True, help="folder of images (searched recursively)")
    ap.add_argument("--n", type=int, default=64, help="how many images (sorted by path)")
    ap.add_argument("--model", action="append", required=True, help="checkpoint folder, or 'random' (repeatable)")
    args = ap.parse_args(argv)
    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".webp"))[: args.n]
    for spec in args.model:
        pred = _predictor(spec, 7)
        model = pred.model.eval()
        images = torch.stack([pred.load(p).tensor for p in paths])
        dim = model.cfg.text.dim
        wrapper = ExportWrapper(model, checkpoint_temperature(model)).eval()

        def torch_fn(x, f, m, wrapper=wrapper):
            with torch.no_grad():
                return [t.numpy() for t in wrapper(x, f, m)]

        ref_p, ref_idx = _outputs(torch_fn, images, 1, dim)
        paths_out = {"batch 8": _outputs(torch_fn, images, 8, dim), "batch 32": _outputs(torch_fn, images, 32, dim)}
        with tempfile.TemporaryDirectory() as tmp:
            for name, file in (("ONNX Runtime", "m.onnx"), ("TorchScript", "m.pt")):
                exported = ExportedModel(export_model(model, Path(tmp) / file))

                def run(x, f, m, exported=exported):
                    return list(exported(x.numpy(), f.numpy(), m.numpy()).values())

                for batch in (1, 8):
                    paths_out[f"{name}, batch {batch}"] = _outputs(run, images, batch, dim)
        print(f"{spec}: {len(paths)} images from {args.images}")
        for name, (p, idx) in paths_out.items():
            other = sum(
                any(not np.array_equal(a[i], b[i]) for a, b in zip(idx, ref_idx, strict=True)) for i in range(len(p))
            )
            print(
                f"  {name:22s} other patches than alone: {other:3d}   max |p - p_alone| {np.abs(p - ref_p).max():.2e}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
