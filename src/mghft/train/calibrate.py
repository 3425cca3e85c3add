"""Fit a checkpoint's temperatures on the validation split, store them, and report calibration before and after.

Runs at the end of every training run (on the selected checkpoint) and as ``mghft calibrate CHECKPOINT`` for
checkpoints that have none. One temperature per input condition (:mod:`mghft.calibration`): ``views`` fitted on
the val items that have a view, with their views; ``bare`` on every val item with every view absent. The
checkpoint's ``config.json`` gets ``calibration`` (its calibration record: per condition the temperature, the split
and item count it was fitted on, NLL and ECE before/after, and why it is not applied when it is unreliable) and
``emoji`` (class -> emoji, :mod:`mghft.emoji`).

Only the validation split is fitted on: ``test`` would tune on the figures reported, and ``train`` holds the items
the model was fitted to, on which it is more confident than on new ones (a temperature fitted there undercorrects
exactly the overconfidence it is meant to remove).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mghft.calibration import (
    CONDITION_TITLES,
    CONDITIONS,
    Calibration,
    CalibrationRecord,
    as_logits,
    calibration_section,
    fit_temperature,
    markdown_section,
    not_fitted,
    reliability_diagram,
)
from mghft.emoji import emoji_map
from mghft.errors import MghftError, UsageError
from mghft.hub import CONFIG_NAME, update_checkpoint_meta

FIT_SPLIT = "val"
"""The only split temperatures are fitted on (see the module's docstring for why not train or test)."""


@dataclass(frozen=True)
class SplitPredictions:
    """A model's predictions on one split under both input conditions.

    Attributes:
        labels: (N,) class indices.
        probs: (N, C) probabilities with the views each item has (masked to the trained views).
        probs_bare: (N, C) probabilities of the same items with every view absent.
        has_views: (N,) whether the item has at least one trained view (its condition is ``views``, else ``bare``).
    """

    labels: np.ndarray
    probs: np.ndarray
    probs_bare: np.ndarray
    has_views: np.ndarray

    def conditions(self) -> list[str]:
        """Per item the condition a request for it would be under."""
        return ["views" if h else "bare" for h in np.asarray(self.has_views, dtype=bool)]


def unreliable_warning(cal: Calibration) -> str:
    """What to tell the user when a fitted temperature is not applied."""
    t = "no fit" if cal.temperature != cal.temperature else f"fitted T = {cal.temperature:.3g}"
    where = CONDITION_TITLES[cal.condition]
    return f"the temperature for stickers {where} is not applied ({t}; T = 1 used): {cal.unreliable}"


def fit_conditions(val: SplitPredictions, produced_by: str = "the model") -> CalibrationRecord:
    """One temperature per input condition, fitted on ``val``: ``views`` on the items that have a view (with
    them), ``bare`` on every item with every view absent. A condition without items or with an unreliable fit is
    recorded with the reason (and applies T = 1).

    Raises:
        MghftError: the validation split is empty.
        mghft.calibration.NonFiniteLogitsError: NaN or infinite outputs (naming ``produced_by`` and the condition).
    """
    y = np.asarray(val.labels)
    if len(y) == 0:
        raise MghftError("the validation split is empty: no temperature can be fitted", hint="give val items")
    has = np.asarray(val.has_views, dtype=bool)
    if has.any():
        views = fit_temperature(as_logits(np.asarray(val.probs)[has]), y[has], fitted_on=FIT_SPLIT,
                                condition="views", produced_by=f"{produced_by} on {FIT_SPLIT} with views")  # fmt: skip
    else:
        views = not_fitted("views", f"no {FIT_SPLIT} item has a view the model was trained with: nothing to fit on")
    bare = fit_temperature(as_logits(val.probs_bare), y, fitted_on=FIT_SPLIT, condition="bare",
                           produced_by=f"{produced_by} on {FIT_SPLIT} with every view absent")  # fmt: skip
    return CalibrationRecord({"views": views, "bare": bare})


def store_calibration(
    folder: str | Path, record: CalibrationRecord, class_names: Sequence[str], emoji: Mapping[str, str] | None = None
) -> None:
    """Write the calibration record and the emoji map (defaults, with ``emoji`` overrides, where every class has
    one) into a checkpoint folder's ``config.json``."""
    if not isinstance(record, CalibrationRecord):
        raise TypeError(f"store_calibration takes a CalibrationRecord (one fit per condition), got {type(record)}")
    fields: dict[str, Any] = {"calibration": record.to_dict()}
    try:
        fields["emoji"] = emoji_map(class_names, emoji)
    except UsageError:
        if emoji:
            raise
    update_checkpoint_meta(folder, **fields)


def add_to_report(report_dir: str | Path, sections: Sequence[Mapping[str, Any]], diagrams: Mapping[str, Any]) -> None:
    """Append the calibration table to ``report.md``, the numbers to ``metrics.json`` and write one reliability
    diagram per section (``reliability_<name>.png``: ``test``, ``test_bare`` ...) into an evaluation folder written
    by ``write_report``."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    for s in sections:
        probs, y = diagrams[s["name"]]
        title = f"Reliability on {s['split']} ({CONDITION_TITLES.get(s['condition'], s['condition'])})"
        reliability_diagram(probs, y, out / f"reliability_{s['name']}.png", title=title)
    md = out / "report.md"
    if md.exists():
        md.write_text(md.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + markdown_section(sections), "utf-8")
    mj = out / "metrics.json"
    payload = json.loads(mj.read_text(encoding="utf-8")) if mj.exists() else {}
    payload["calibration"] = list(sections)
    mj.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=float) + "\n", encoding="utf-8")


def describe_splits(
    record: CalibrationRecord, splits: Mapping[str, SplitPredictions], produced_by: str = "the model"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Report sections of ``record`` on every split under both conditions: each item at its own condition's
    temperature (as a request for it would be), and every item with every view absent.

    Returns:
        (the sections, section name -> (probability sets, labels) for the diagrams).
    """
    sections, diagrams = [], {}
    for split, sp in splits.items():
        for name, probs, conds in ((split, sp.probs, sp.conditions()), (f"{split}_bare", sp.probs_bare, "bare")):
            section, curves = calibration_section(as_logits(probs), sp.labels, record, split, conds, produced_by)
            section["name"] = name  # as served (each item at its condition), then every item bare
            sections.append(section)
            diagrams[name] = (curves, sp.labels)
    return sections, diagrams


def calibrate_predictions(
    val: SplitPredictions, evaluated: Mapping[str, SplitPredictions], produced_by: str = "the model"
) -> tuple[CalibrationRecord, list[dict[str, Any]], dict[str, Any]]:
    """Fit one temperature per condition on ``val`` and describe them on val and every ``evaluated`` split.

    Returns:
        (the calibration record, report sections, section name -> (probability sets, labels) for the diagrams).

    Raises:
        MghftError: the validation split is empty.
        mghft.calibration.NonFiniteLogitsError: NaN or infinite outputs, naming ``produced_by``.
    """
    record = fit_conditions(val, produced_by)
    sections, diagrams = describe_splits(record, {FIT_SPLIT: val, **evaluated}, produced_by)
    return record, sections, diagrams


def check_fit_split(split: str) -> None:
    """Refuse to fit temperatures on anything but the validation split.

    Raises:
        UsageError: ``split`` is ``test`` (tuning on the reported figures) or ``train`` (the model's own training
            items: it is overconfident on new items, not on these, so T fitted there undercorrects), or unknown.
    """
    if split == FIT_SPLIT:
        return
    why = {
        "test": "would tune the probabilities on the test split whose figures are reported",
        "train": "would fit on the items the model was trained on: it is more confident and more often right on "
        "them than on new items, so the temperature would undercorrect the overconfidence it is meant to remove",
    }.get(split, f"is not a split temperatures are fitted on ({split!r})")
    raise UsageError(f"--split {split} {why}", hint=f"use --split {FIT_SPLIT} (the default)")


def calibrate_checkpoint(
    model_path: str | Path,
    cfg: Any,
    *,
    split: str = FIT_SPLIT,
    out: str | Path | None = None,
    batch_size: int = 32,
    emoji: Mapping[str, str] | None = None,
) -> CalibrationRecord:
    """Fit one temperature per input condition of a checkpoint folder on ``split`` of ``cfg.data`` and store the
    calibration record in the folder.

    Args:
        model_path: a checkpoint folder (it is updated in place).
        cfg: the run's :class:`~mghft.train.config.TrainConfig` (its data section and split file are used).
        split: the split to fit on: only ``val`` is accepted (:func:`check_fit_split`).
        out: a folder for the report (``calibration.json``, reliability diagrams); default
            ``<checkpoint>/calibration``.
        batch_size: images per forward pass.
        emoji: class -> emoji overrides to store with it.

    Raises:
        UsageError: ``split`` is not ``val``, or the folder is not a local checkpoint.
        mghft.calibration.NonFiniteLogitsError: the checkpoint gives NaN or infinite outputs on the split.
    """
    check_fit_split(split)
    from torch.utils.data import DataLoader

    from mghft.data import Preprocess
    from mghft.models.factory import load_model
    from mghft.train.data import StickerDataset, load_splits
    from mghft.train.loop import predict_loader, setup_distributed, split_text_inputs

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
    dataset = StickerDataset(part, pre.transform(), *feats)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    import torch

    from mghft.provenance import training_views, view_keep

    keep = torch.tensor(view_keep(training_views(model.checkpoint_meta)))  # the views it was trained with
    y, _, probs = predict_loader(model, loader, info, cfg.amp, keep=keep)
    _, _, probs_bare = predict_loader(model, loader, info, cfg.amp, views_absent=True)
    val = SplitPredictions(y, probs, probs_bare, (dataset.view_mask & keep).any(1).numpy())
    record, sections, diagrams = calibrate_predictions(val, {}, produced_by=f"checkpoint {folder}")
    store_calibration(folder, record, classes, emoji)
    report = Path(out) if out else folder / "calibration"
    report.mkdir(parents=True, exist_ok=True)
    (report / "calibration.json").write_text(json.dumps({"calibration": record.to_dict(), "sections": sections},
                                                         indent=2, default=float) + "\n", encoding="utf-8")  # fmt: skip
    (report / "report.md").write_text(markdown_section(sections), encoding="utf-8")
    for s in sections:
        curves, labels = diagrams[s["name"]]
        title = f"Reliability on {s['split']} ({CONDITION_TITLES.get(s['condition'], s['condition'])})"
        reliability_diagram(curves, labels, report / f"reliability_{s['name']}.png", title=title)
    return record


def calibrate_after_training(
    best: str | Path,
    report_dir: str | Path,
    classes: Sequence[str],
    val: SplitPredictions,
    test: SplitPredictions,
) -> dict[str, Any]:
    """The end of a training run: fit one temperature per condition on val, store the record in the selected
    checkpoint, add the before/after calibration of val and test (each item at its condition's temperature, and
    every item bare) to the test report. Returns what ``results.json`` records under ``calibration``; when val is
    empty the checkpoint stores an uncalibrated record saying so."""
    if len(val.labels) == 0:
        reason = "the validation split is empty: no temperature was fitted"
        print(f"not calibrated: {reason}")
        store_calibration(best, CalibrationRecord.uncalibrated(reason), classes)
        return {"skipped": reason, **CalibrationRecord.uncalibrated(reason).to_dict()}
    record, sections, diagrams = calibrate_predictions(val, {"test": test}, produced_by=f"checkpoint {best}")
    for c in CONDITIONS:
        if not record[c].applied:
            print(f"warning: {unreliable_warning(record[c])}")
    store_calibration(best, record, classes)
    add_to_report(report_dir, sections, diagrams)
    shown: set[str] = set()
    for s in sections:
        if s["split"] == "test":
            temps = ", ".join(f"{c} T = {t:.3f}" for c, t in s["temperatures"].items())
            line = (
                f"calibration ({temps}; fitted on val): test {CONDITION_TITLES.get(s['condition'], s['condition'])}"
                f" ECE {100 * s['before']['ece']:.2f}% -> {100 * s['after']['ece']:.2f}%, NLL "
                f"{s['before']['nll']:.4f} -> {s['after']['nll']:.4f}"
            )
            if line not in shown:  # a model without views has the same items bare in both sections
                print(line)
                shown.add(line)
    return {**record.to_dict(), "sections": sections}


__all__ = [
    "FIT_SPLIT",
    "SplitPredictions",
    "add_to_report",
    "calibrate_after_training",
    "calibrate_checkpoint",
    "calibrate_predictions",
    "check_fit_split",
    "describe_splits",
    "fit_conditions",
    "store_calibration",
    "unreliable_warning",
]
