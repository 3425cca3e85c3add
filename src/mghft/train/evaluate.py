"""Evaluate a checkpoint on one split of a dataset: with its views, and with every view absent.

The checkpoint's provenance (:mod:`mghft.provenance`) is read back: the views it was trained with are applied, its
selection (``val`` or ``test``) is shown, and conditions that differ from training (split file, description
writers, text encoder) are listed at the top of the report.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mghft.data import Preprocess
from mghft.data.ser30k import SER30K_CLASSES
from mghft.evaluate import (
    bootstrap_ci,
    bootstrap_method,
    compute_metrics,
    index_groups,
    published_split_problem,
    ser30k_split_sizes,
    write_report,
)
from mghft.models.factory import load_model
from mghft.provenance import differences, selected_on, training_views, view_keep
from mghft.resources import cap_workers
from mghft.train.config import TrainConfig
from mghft.train.data import StickerDataset, load_splits
from mghft.train.loop import predict_loader, setup_distributed, split_text_inputs
from mghft.train.provenance import data_fingerprint, data_provenance, encoder_provenance, read_fingerprint


def evaluate_checkpoint(
    model_path: str | Path,
    cfg: TrainConfig,
    *,
    split: str = "test",
    out: str | Path,
    batch_size: int = 32,
    bootstrap: int = 1000,
) -> dict[str, Any]:
    """Metrics of a checkpoint on ``split`` of ``cfg.data``, written as a report folder to ``out``.

    Returns:
        ``{"metrics", "ci", "views_absent", "views", "selected_on", "warnings", "provenance"}``.
    """
    info = setup_distributed()
    out = Path(out)
    model = load_model(model_path, text_encoder=False).to(info.device)
    meta = model.checkpoint_meta
    trained = meta.get("provenance") or {}
    classes = tuple(meta["class_names"])
    # The run's own split file, never a new one; skipped items are reported beside this evaluation.
    parts = load_splits(cfg.data, Path(cfg.output), create_split=False, report_dir=out, splits=(split,))
    part = parts[split]
    if part.classes != classes:
        raise ValueError(f"the checkpoint's classes {classes} differ from the dataset's {part.classes}")
    descriptions: dict[str, Any] = {}
    texts: dict[str, Any] = {}
    feats = split_text_inputs(cfg, model, {split: part}, info, record=descriptions, descriptions_out=texts)[split]
    fingerprint = data_fingerprint({split: part}, texts)
    mask = feats[1]
    views = training_views(meta)
    keep = torch.tensor(view_keep(views))
    pre = Preprocess.from_dict(meta["preprocess"])
    ds = StickerDataset(part, pre.transform(), *feats)
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        num_workers=cap_workers(cfg.workers, asked=cfg.workers_set()),
        shuffle=False,
    )
    y, pred, probs = predict_loader(model, loader, info, cfg.amp, keep=keep)
    metrics = compute_metrics(y, pred, classes, probs)
    y0, pred0, probs0 = predict_loader(model, loader, info, cfg.amp, views_absent=True)
    bare = compute_metrics(y0, pred0, classes, probs0)
    groups, group_name = index_groups(part, cfg.data.format)
    ci = bootstrap_ci(y, pred, n=bootstrap, seed=cfg.seed, groups=groups) if bootstrap else None
    now = {
        "data": data_provenance(cfg, parts, fingerprint),
        "descriptions": descriptions,
        "text_encoder": encoder_provenance(
            model.cfg.text, bool((trained.get("text_encoder") or {}).get("fine_tuned")), bool(mask.any())
        ),
    }
    run_folder = Path(model_path).parent  # the run's data_fingerprint.json lists items; a hub id has none
    warnings = differences(trained, now, read_fingerprint(run_folder) if run_folder.is_dir() else None, fingerprint)
    selection = selected_on(meta)
    extra = {
        "checkpoint": str(model_path),
        "split": split,
        "selected_on": selection,
        "selected_epoch": (trained.get("selection") or {}).get("epoch"),
        "views": list(views),
        "dataset": dataclasses.asdict(cfg.data),
        "images_without_any_view": int((~(mask & keep).any(1)).sum()),
        "views_absent": {"accuracy": bare["accuracy"], "macro_f1": bare["macro"]["f1"]},
    }
    write_report(
        out,
        metrics,
        ci=ci,
        title=f"{model.cfg.name} on {cfg.data.format} {split} (selected on {selection})",
        extra=extra,
        compare_published=classes == tuple(SER30K_CLASSES) and cfg.data.format == "ser30k",
        not_compared=published_split_problem(ser30k_split_sizes(cfg.data), len(part), split),
        selected_on=selection,
        provenance={"training": trained, "evaluation": now},
        warnings=warnings,
        bootstrap=bootstrap_method(groups, bootstrap, group_name),
    )
    _add_calibration(out, model.checkpoint_meta, split, y, probs, probs0, (mask & keep).any(1).numpy(), model_path)
    from mghft.experiments.predictions import write_predictions  # per-item, for `mghft compare`

    write_predictions(out, part, y, pred, probs)
    return {
        "metrics": metrics,
        "ci": ci,
        "views_absent": bare,
        "views": views,
        "selected_on": selection,
        "warnings": warnings,
        "provenance": trained,
    }


def _add_calibration(
    out: Path, meta: dict[str, Any], split: str, y: Any, probs: Any, probs0: Any, has_views: Any, model_path: Any
) -> None:
    """The report's calibration section: the probabilities before (T = 1) and after the checkpoint's calibration
    record on this split, each item at its input condition's temperature and every item bare, or a line saying
    the checkpoint has no record."""
    from mghft.calibration import CalibrationRecord
    from mghft.train.calibrate import SplitPredictions, add_to_report, describe_splits

    if not meta.get("calibration"):
        report = out / "report.md"
        note = "\n## Calibration\n\nThis checkpoint has no fitted temperature: its probabilities are uncalibrated "
        note += "(`mghft calibrate CHECKPOINT` fits one on val).\n"
        report.write_text(report.read_text(encoding="utf-8").rstrip("\n") + "\n" + note, encoding="utf-8")
        return
    record = CalibrationRecord.from_dict(meta["calibration"])
    sp = SplitPredictions(y, probs, probs0, has_views)
    sections, diagrams = describe_splits(record, {split: sp}, produced_by=f"checkpoint {model_path}")
    add_to_report(out, sections, diagrams)
