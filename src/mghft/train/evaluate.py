"""Evaluate a checkpoint on one split of a dataset: with its views, and with every view absent."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from mghft.data import Preprocess
from mghft.data.ser30k import SER30K_CLASSES
from mghft.evaluate import bootstrap_ci, compute_metrics, write_report
from mghft.models.factory import load_model
from mghft.resources import cap_workers
from mghft.train.config import TrainConfig
from mghft.train.data import StickerDataset, load_splits
from mghft.train.loop import predict_loader, setup_distributed, split_text_inputs


def evaluate_checkpoint(
    model_path: str | Path,
    cfg: TrainConfig,
    *,
    split: str = "test",
    out: str | Path,
    batch_size: int = 32,
    bootstrap: int = 1000,
) -> dict[str, Any]:
    """Metrics of a checkpoint on ``split`` of ``cfg.data``, written as a report folder to ``out``."""
    info = setup_distributed()
    out = Path(out)
    model = load_model(model_path, text_encoder=False).to(info.device)
    classes = tuple(model.checkpoint_meta["class_names"])
    # The run's own split file, never a new one; skipped items are reported beside this evaluation.
    part = load_splits(cfg.data, Path(cfg.output), create_split=False, report_dir=out, splits=(split,))[split]
    if part.classes != classes:
        raise ValueError(f"the checkpoint's classes {classes} differ from the dataset's {part.classes}")
    feats = split_text_inputs(cfg, model, {split: part}, info)[split]
    mask = feats[1]
    pre = Preprocess.from_dict(model.checkpoint_meta["preprocess"])
    ds = StickerDataset(part, pre.transform(), *feats)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=cap_workers(cfg.workers), shuffle=False)
    y, pred, probs = predict_loader(model, loader, info, cfg.amp)
    metrics = compute_metrics(y, pred, classes, probs)
    y0, pred0, probs0 = predict_loader(model, loader, info, cfg.amp, views_absent=True)
    bare = compute_metrics(y0, pred0, classes, probs0)
    ci = bootstrap_ci(y, pred, n=bootstrap, seed=cfg.seed) if bootstrap else None
    extra = {
        "checkpoint": str(model_path),
        "split": split,
        "dataset": dataclasses.asdict(cfg.data),
        "images_without_any_view": int((~mask.any(1)).sum()),
        "views_absent": {"accuracy": bare["accuracy"], "macro_f1": bare["macro"]["f1"]},
    }
    write_report(
        out,
        metrics,
        ci=ci,
        title=f"{model.cfg.name} on {cfg.data.format} {split}",
        extra=extra,
        compare_published=classes == tuple(SER30K_CLASSES) and cfg.data.format == "ser30k" and split == "test",
    )
    return {"metrics": metrics, "ci": ci, "views_absent": bare}
