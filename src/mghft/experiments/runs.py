"""Reading finished runs for ``mghft compare``: training run folders, sweep folders and zero-shot folders.

A training run folder holds ``train.yaml``, ``results.json`` and ``test/`` (the report, with ``predictions.json``);
a sweep folder holds ``<config name>/seed-<s>/`` run folders; a ``mghft zeroshot`` folder holds ``summary.json``
and ``predictions.jsonl``. What produced each run (selection split, views, split, descriptions, encoder) is read
from a ``provenance`` block when the report, ``results.json`` or the checkpoint carries one, and otherwise put
together from ``train.yaml`` and the checkpoint's ``config.json``, saying so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mghft.errors import MghftError, UsageError
from mghft.experiments.predictions import FILE_NAME as PREDICTIONS_FILE
from mghft.experiments.predictions import read_predictions
from mghft.jsonl import read_jsonl

_SEED_DIR = re.compile(r"^seed-(-?\d+)$")


@dataclass
class RunRecord:
    """One evaluated run: its test predictions, item by item, and where they came from.

    Attributes:
        system: the name the run is tabled under (its config's name, a folder name, or ``NAME=`` given).
        folder: the run folder.
        kind: ``"trained"``, ``"CLIP baseline"`` or ``"zero-shot"``.
        seed: the training seed (``None`` for zero-shot).
        classes: class names, in index order.
        keys: (N,) item keys.
        groups: (N,) item groups (``None`` when the dataset has none).
        grouping: what the groups are (a ``data.group_by`` column such as ``pack``); ``None``: the dataset's own.
        labels: (N,) true class indices.
        predictions: (N,) predicted class indices (``-1``: no answer).
        selected_on: ``"val"``, ``"test"``, ``"none"`` (no selection: zero-shot) or ``"unknown"``.
        provenance: what produced the run, with ``source`` naming the file it was read from.
    """

    system: str
    folder: Path
    kind: str
    seed: int | None
    classes: list[str]
    keys: list[str]
    groups: list[str | None]
    labels: np.ndarray
    predictions: np.ndarray
    selected_on: str
    provenance: dict[str, Any] = field(default_factory=dict)
    grouping: str | None = None

    @property
    def label(self) -> str:
        return f"{self.system} seed {self.seed}" if self.seed is not None else self.system


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MghftError(f"{path}: unreadable ({err})") from None
    return data if isinstance(data, dict) else None


def _yaml(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise MghftError(f"{path}: unreadable ({err})") from None
    return data if isinstance(data, dict) else None


def is_training_run(folder: Path) -> bool:
    """A finished training run (``results.json`` is written last), or a ``mghft evaluate`` report folder."""
    return (folder / "results.json").is_file() or _is_evaluation(folder)


def _is_evaluation(folder: Path) -> bool:
    return (folder / PREDICTIONS_FILE).is_file() and (folder / "metrics.json").is_file()


def is_zeroshot_run(folder: Path) -> bool:
    return (folder / "summary.json").is_file() and (folder / "predictions.jsonl").is_file()


def _started_run(folder: Path) -> bool:
    return (folder / "train.yaml").is_file() and not is_training_run(folder)


def discover(arg: str) -> tuple[list[tuple[str | None, Path]], list[Path]]:
    """Run folders under one ``[NAME=]FOLDER`` argument, and the started-but-unfinished runs found there.

    Returns:
        ``([(name or None, run folder)], [unfinished run folders])``.

    Raises:
        UsageError: the folder does not exist or holds no run.
    """
    name: str | None = None
    path = Path(arg)
    if not path.exists() and "=" in arg:
        name, _, rest = arg.partition("=")
        path = Path(rest)
    if not path.is_dir():
        raise UsageError(f"{path}: no such folder", hint="give run folders, sweep folders or zeroshot folders")
    if is_training_run(path) or is_zeroshot_run(path):
        return [(name, path)], []
    found, unfinished = [], []
    # A sweep: <config>/seed-<s>/; or any folder of run folders, two levels deep at most.
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        if is_training_run(child) or is_zeroshot_run(child):
            found.append((name, child))
            continue
        if _started_run(child):
            unfinished.append(child)
            continue
        for grand in sorted(p for p in child.iterdir() if p.is_dir()):
            if is_training_run(grand) or is_zeroshot_run(grand):
                found.append((name, grand))
            elif _started_run(grand):
                unfinished.append(grand)
    if not found:
        raise UsageError(
            f"{path}: no finished run inside (a run folder has results.json and test/{PREDICTIONS_FILE}; a zeroshot "
            "folder has summary.json and predictions.jsonl)"
        )
    return found, unfinished


def read_run(folder: Path, name: str | None = None) -> RunRecord:
    """Read a training or zero-shot run folder.

    Raises:
        MghftError: predictions missing or inconsistent with the run's report (naming the file).
    """
    if is_zeroshot_run(folder) and not is_training_run(folder):
        return _read_zeroshot(folder, name)
    return _read_training(folder, name)


def _names(folder: Path, train_cfg: dict[str, Any] | None) -> tuple[str, int | None]:
    match = _SEED_DIR.match(folder.name)
    sweep_run = _json(folder / "sweep_run.json")
    if sweep_run and "config" in sweep_run:
        return str(sweep_run["config"]), sweep_run.get("seed")
    if match:
        return folder.parent.name, int(match.group(1))
    seed = train_cfg.get("seed") if train_cfg else None
    return folder.name, seed if isinstance(seed, int) else None


def find_provenance(folder: Path) -> tuple[dict[str, Any] | None, str]:
    """The first ``provenance`` block found in the run's report, results or checkpoint, and the file it is in."""
    candidates = [
        folder / "test" / "report.json",
        folder / "test" / "metrics.json",
        folder / "report.json",
        folder / "metrics.json",
        folder / "results.json",
        folder / "best" / "config.json",
    ]
    for path in candidates:
        data = _json(path)
        if not data:
            continue
        block = data.get("provenance")
        if block is None and isinstance(data.get("extra"), dict):
            block = data["extra"].get("provenance")
        if isinstance(block, dict):
            return block, str(path)
    return None, ""


def summarise_provenance(block: dict[str, Any]) -> dict[str, Any]:
    """The fields a table shows, from a recorded provenance block (:mod:`mghft.provenance`); a block that is
    already flat (``select_on``, ``views`` ... at the top) is taken as it is."""
    if not any(k in block for k in ("selection", "data", "text_encoder")):
        return dict(block)
    data, selection = block.get("data") or {}, block.get("selection") or {}
    descriptions, encoder = block.get("descriptions") or {}, block.get("text_encoder") or {}
    return {
        "select_on": selection.get("select_on"),
        "select_metric": selection.get("select_metric"),
        "epoch": selection.get("epoch"),
        "views": block.get("views"),
        "dataset": data.get("reader"),
        "root": data.get("root"),
        "split_sha256": (data.get("split") or {}).get("sha256"),
        "descriptions": descriptions.get("writers") or descriptions.get("source"),
        "encoder": encoder.get("encoder"),
        "mghft": (block.get("software") or {}).get("mghft"),
    }


def _read_training(folder: Path, name: str | None) -> RunRecord:
    train_cfg = _yaml(folder / "train.yaml")
    results = _json(folder / "results.json") or {}
    test = folder if _is_evaluation(folder) else folder / "test"
    report = _json(test / "report.json") or _json(test / "metrics.json") or {}
    checkpoint = _json(folder / "best" / "config.json") or {}
    preds = read_predictions(test / PREDICTIONS_FILE)
    system, seed = _names(folder, train_cfg)
    block, source = find_provenance(folder)
    provenance: dict[str, Any] = summarise_provenance(block) if block else {}
    cfg = train_cfg or {}
    if block is None:
        data = cfg.get("data") or {}
        text = (checkpoint.get("model") or {}).get("text") or {}
        provenance = {
            "select_on": cfg.get("select_on"),
            "views": cfg.get("views"),
            "dataset": data.get("format"),
            "root": data.get("root"),
            "split_file": data.get("split_file") or (str(folder / "split.json") if data.get("format") else None),
            "descriptions": data.get("descriptions") or "the dataset's own texts",
            "encoder": text.get("encoder"),
            "model": cfg.get("model"),
        }
        source = "train.yaml and best/config.json (no provenance block)"
    provenance["source"] = source
    selected = (
        provenance.get("select_on")
        or results.get("selected_on")
        or (report.get("extra") or {}).get("selected_on")
        or cfg.get("select_on")
        or "unknown"
    )
    items = preds["items"]
    labels = np.array([it["label"] for it in items], dtype=np.int64)
    predictions = np.array([it["prediction"] for it in items], dtype=np.int64)
    reported = (results.get("test") or report.get("metrics") or {}).get("accuracy")
    if reported is not None and items and abs(float(np.mean(labels == predictions)) - float(reported)) > 1e-9:
        raise MghftError(
            f"{test / PREDICTIONS_FILE}: its accuracy {np.mean(labels == predictions):.6f} differs from "
            f"the reported test accuracy {float(reported):.6f}",
            hint="the predictions belong to another evaluation: re-evaluate the run's checkpoint into its test/",
        )
    arch = ((cfg.get("model_overrides") or {}).get("arch")) or ((checkpoint.get("model") or {}).get("arch"))
    return RunRecord(
        system=name or system,
        folder=folder,
        kind="CLIP baseline" if arch == "clip" else "trained",
        seed=seed,
        classes=list(preds["classes"]),
        keys=[it["key"] for it in items],
        groups=[it.get("group") for it in items],
        grouping=preds.get("grouping"),
        labels=labels,
        predictions=predictions,
        selected_on=str(selected),
        provenance=provenance,
    )


def _read_zeroshot(folder: Path, name: str | None) -> RunRecord:
    summary = _json(folder / "summary.json") or {}
    classes = summary.get("classes")
    if not isinstance(classes, list) or len(classes) < 2:
        raise MghftError(f"{folder / 'summary.json'}: no class list")
    keys, labels, predictions, failed = [], [], [], []
    seen: set[str] = set()
    path = folder / "predictions.jsonl"
    records = read_jsonl(path)  # a half-written last line (a killed run) is left out, named in a warning
    latest = {r["key"]: r for r in records}  # a rerun appends; the last answer counts, as `mghft zeroshot` does
    for key, r in latest.items():
        if r.get("label") is None:
            continue
        if r.get("error"):
            failed.append(key)
            continue
        if key in seen:
            continue
        seen.add(key)
        keys.append(key)
        labels.append(int(r["label"]))
        pred = r.get("prediction")
        predictions.append(-1 if pred is None else int(pred))
    if not keys:
        raise MghftError(f"{path}: no answered item")
    provenance = {
        "select_on": "none (zero-shot)",
        "models": summary.get("models"),
        "prompt_version": summary.get("prompt_version"),
        "dataset": summary.get("dataset"),
        "failed_requests": len(failed),
        "unparseable": summary.get("unparseable"),
        "source": str(folder / "summary.json"),
    }
    return RunRecord(
        system=name or folder.name,
        folder=folder,
        kind="zero-shot",
        seed=None,
        classes=list(classes),
        keys=keys,
        groups=[None] * len(keys),
        labels=np.array(labels, dtype=np.int64),
        predictions=np.array(predictions, dtype=np.int64),
        selected_on="none",
        provenance=provenance,
    )


def read_all(args: Sequence[str]) -> tuple[list[RunRecord], list[Path]]:
    """Every run under the arguments, and the unfinished ones found (left out of the table).

    Raises:
        UsageError: a folder holds no run; the same run is given twice; two runs of one system share a seed.
    """
    runs: list[RunRecord] = []
    unfinished: list[Path] = []
    seen: dict[Path, str] = {}
    for arg in args:
        found, pending = discover(arg)
        unfinished += pending
        for name, folder in found:
            resolved = folder.resolve()
            if resolved in seen:
                raise UsageError(f"{folder}: given twice ({seen[resolved]} and {arg})")
            seen[resolved] = arg
            runs.append(read_run(folder, name))
    by_seed: dict[tuple[str, int | None], RunRecord] = {}
    for r in runs:
        other = by_seed.get((r.system, r.seed))
        if other is not None:
            raise UsageError(
                f"{other.folder} and {r.folder} are both {r.label}",
                hint="name one of them: NAME=FOLDER",
            )
        by_seed[(r.system, r.seed)] = r
    return runs, unfinished
