"""Fit a checkpoint's temperature on the validation split, store it, and report calibration before and after.

Runs at the end of every training run (on the selected checkpoint) and as ``mghft calibrate CHECKPOINT`` for
checkpoints that have none. The checkpoint's ``config.json`` gets ``calibration`` (the temperature, the split and
item count it was fitted on, NLL and ECE before/after) and ``emoji`` (class -> emoji, :mod:`mghft.emoji`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mghft.calibration import (
    Calibration,
    as_logits,
    calibration_section,
    fit_temperature,
    markdown_section,
    reliability_diagram,
)
from mghft.emoji import emoji_map
from mghft.errors import MghftError, UsageError
from mghft.hub import CONFIG_NAME, update_checkpoint_meta


def bound_warning(cal: Calibration) -> str:
    """What to tell the user when the fitted temperature sits at a limit."""
    return (
        f"the temperature fit stopped at its limit (T = {cal.temperature:.3g}, fitted on {cal.items} {cal.fitted_on} "
        "items): too few or confidently wrong validation predictions; the calibrated probabilities are unreliable"
    )


def store_calibration(
    folder: str | Path, calibration: Calibration, class_names: Sequence[str], emoji: Mapping[str, str] | None = None
) -> None:
    """Write ``calibration`` and the emoji map (defaults, with ``emoji`` overrides, where every class has one)."""
    fields: dict[str, Any] = {"calibration": calibration.to_dict()}
    try:
        fields["emoji"] = emoji_map(class_names, emoji)
    except UsageError:
        if emoji:
            raise
    update_checkpoint_meta(folder, **fields)


def add_to_report(report_dir: str | Path, sections: Sequence[Mapping[str, Any]], diagrams: Mapping[str, Any]) -> None:
    """Append the calibration table to ``report.md``, the numbers to ``metrics.json`` and write one reliability
    diagram per split (``reliability_<split>.png``) into an evaluation folder written by ``write_report``."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    for s in sections:
        probs, y = diagrams[s["split"]]
        reliability_diagram(probs, y, out / f"reliability_{s['split']}.png", title=f"Reliability on {s['split']}")
    md = out / "report.md"
    if md.exists():
        md.write_text(md.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + markdown_section(sections), "utf-8")
    mj = out / "metrics.json"
    payload = json.loads(mj.read_text(encoding="utf-8")) if mj.exists() else {}
    payload["calibration"] = list(sections)
    mj.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=float) + "\n", encoding="utf-8")


def calibrate_predictions(
    val: tuple[np.ndarray, np.ndarray],
    evaluated: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[Calibration, list[dict[str, Any]], dict[str, Any]]:
    """Fit T on ``val`` (labels, probabilities) and describe it on val and every ``evaluated`` split.

    Returns:
        (the calibration, report sections per split, split -> (probability sets, labels) for the diagrams).

    Raises:
        MghftError: the validation split is empty.
    """
    y_val, p_val = val
    if len(y_val) == 0:
        raise MghftError("the validation split is empty: no temperature can be fitted", hint="give val items")
    cal = fit_temperature(as_logits(p_val), y_val, fitted_on="val")
    sections, diagrams = [], {}
    for split, (y, p) in {"val": val, **evaluated}.items():
        section, curves = calibration_section(as_logits(p), y, cal.temperature, split)
        sections.append(section)
        diagrams[split] = (curves, y)
    return cal, sections, diagrams


def calibrate_checkpoint(
    model_path: str | Path,
    cfg: Any,
    *,
    split: str = "val",
    out: str | Path | None = None,
    batch_size: int = 32,
    emoji: Mapping[str, str] | None = None,
) -> Calibration:
    """Fit the temperature of a checkpoint folder on ``split`` of ``cfg.data`` and store it in the folder.

    Args:
        model_path: a checkpoint folder (it is updated in place).
        cfg: the run's :class:`~mghft.train.config.TrainConfig` (its data section and split file are used).
        split: the split to fit on; ``val`` unless there is a reason (never ``test``: that would tune on it).
        out: a folder for the report (``calibration.json``, reliability diagram); default ``<checkpoint>/calibration``.
        batch_size: images per forward pass.
        emoji: class -> emoji overrides to store with it.

    Raises:
        UsageError: ``split`` is ``test``, or the folder is not a local checkpoint.
    """
    from torch.utils.data import DataLoader

    from mghft.data import Preprocess
    from mghft.models.factory import load_model
    from mghft.train.data import StickerDataset, load_splits
    from mghft.train.loop import predict_loader, setup_distributed, split_text_inputs

    if split == "test":
        raise UsageError("--split test would fit the temperature on the test split", hint="use --split val")
    folder = Path(model_path)
    if not (folder / CONFIG_NAME).is_file():
        raise UsageError(f"{folder} is not a local checkpoint folder (no {CONFIG_NAME})")
    info = setup_distributed()
    model = load_model(folder, text_encoder=False).to(info.device)
    classes = tuple(model.checkpoint_meta["class_names"])
    part = load_splits(cfg.data, Path(cfg.output), create_split=False, log=False)[split]
    if part.classes != classes:
        raise UsageError(f"the checkpoint's classes {classes} differ from the dataset's {part.classes}")
    feats = split_text_inputs(cfg, model, {split: part}, info)[split]
    pre = Preprocess.from_dict(model.checkpoint_meta["preprocess"])
    loader = DataLoader(StickerDataset(part, pre.transform(), *feats), batch_size=batch_size, shuffle=False)
    import torch

    from mghft.provenance import training_views, view_keep

    keep = torch.tensor(view_keep(training_views(model.checkpoint_meta)))  # the views it was trained with
    y, _, probs = predict_loader(model, loader, info, cfg.amp, keep=keep)
    cal = fit_temperature(as_logits(probs), y, fitted_on=split)
    store_calibration(folder, cal, classes, emoji)
    section, curves = calibration_section(as_logits(probs), y, cal.temperature, split)
    report = Path(out) if out else folder / "calibration"
    report.mkdir(parents=True, exist_ok=True)
    (report / "calibration.json").write_text(json.dumps({"calibration": cal.to_dict(), "sections": [section]},
                                                         indent=2, default=float) + "\n", encoding="utf-8")  # fmt: skip
    (report / "report.md").write_text(markdown_section([section]), encoding="utf-8")
    reliability_diagram(curves, y, report / f"reliability_{split}.png", title=f"Reliability on {split}")
    return cal


__all__ = ["add_to_report", "calibrate_checkpoint", "calibrate_predictions", "store_calibration"]


def calibrate_after_training(
    best: str | Path,
    report_dir: str | Path,
    classes: Sequence[str],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """The end of a training run: fit T on val, store it in the selected checkpoint, add the before/after
    calibration of val and test to the test report. Returns what ``results.json`` records under ``calibration``
    (``{"skipped": reason}`` when val is empty: the checkpoint then stays uncalibrated, and says so)."""
    if len(val[0]) == 0:
        reason = "the validation split is empty"
        print(f"not calibrated: {reason}")
        return {"skipped": reason}
    cal, sections, diagrams = calibrate_predictions(val, {"test": test})
    if cal.at_bound:
        print(f"warning: {bound_warning(cal)}")
    store_calibration(best, cal, classes)
    add_to_report(report_dir, sections, diagrams)
    t = next(s for s in sections if s["split"] == "test")
    print(
        f"calibration: T = {cal.temperature:.3f} (fitted on val); test ECE {100 * t['before']['ece']:.2f}% -> "
        f"{100 * t['after']['ece']:.2f}%, NLL {t['before']['nll']:.4f} -> {t['after']['nll']:.4f}"
    )
    return {**cal.to_dict(), "sections": sections}
