"""Per-item predictions of an evaluation, written beside its report, so runs can be compared item by item.

``predictions.json`` holds ``{"format": 1, "classes": [...], "grouping": ..., "items": [{"key", "group", "label",
"prediction", "probabilities"}]}``: one entry per evaluated item, keyed by the dataset's item key (SER30K
``topic/file``), labels and predictions as class indices into ``classes``. ``group`` is the group the split kept
together (a SER30K topic, a manifest ``group``, or the field named by ``grouping`` when the split was made with
``data.group_by``, e.g. ``pack``); ``mghft compare`` resamples these groups.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mghft.data.records import DatasetIndex
from mghft.errors import MghftError

FILE_NAME = "predictions.json"
FORMAT = 1


def write_predictions(
    folder: str | Path,
    index: DatasetIndex,
    labels: np.ndarray,
    predictions: np.ndarray,
    probabilities: np.ndarray | None = None,
) -> Path:
    """Write ``folder/predictions.json`` for an evaluation of every sample of ``index``, in index order.

    Args:
        folder: the report folder (created).
        index: the evaluated split; its samples give each item's key and group.
        labels: (N,) true class indices, in the order of ``index.samples``.
        predictions: (N,) predicted class indices.
        probabilities: optional (N, K) class probabilities (rounded to 6 decimals in the file).

    Raises:
        ValueError: the arrays do not cover the split's samples one to one, or a label disagrees with the split's.
    """
    y = np.asarray(labels).astype(int).tolist()
    p = np.asarray(predictions).astype(int).tolist()
    samples = index.samples
    if len(y) != len(samples) or len(p) != len(samples):
        raise ValueError(f"{len(p)} predictions for the {len(samples)} samples of {index.name}")
    bad = [s.key for s, label in zip(samples, y, strict=True) if s.label != label]
    if bad:
        raise ValueError(f"predictions out of order: the label of {bad[0]} differs from the split's")
    probs = None if probabilities is None else np.round(np.asarray(probabilities, dtype=np.float64), 6).tolist()
    items = [
        {
            "key": s.key,
            "group": s.group,
            "label": y[i],
            "prediction": p[i],
            **({"probabilities": probs[i]} if probs is not None else {}),
        }
        for i, s in enumerate(samples)
    ]
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILE_NAME
    tmp = path.with_suffix(".json.tmp")
    payload = {"format": FORMAT, "classes": list(index.classes), "grouping": index.grouping, "items": items}
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_predictions(path: str | Path) -> dict[str, Any]:
    """Read a ``predictions.json``: ``{"classes": [...], "items": [...]}`` (checked: unique keys, indices in range).

    Raises:
        MghftError: the file is missing, unreadable, of another format, or inconsistent (naming the file and item).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MghftError(
            f"{path}: no per-item predictions",
            hint="runs trained before predictions were saved: re-evaluate with `mghft evaluate --model RUN/best "
            "--config RUN/train.yaml --split test --out RUN/test`",
        ) from None
    except (OSError, ValueError) as err:
        raise MghftError(f"{path}: unreadable predictions file ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MghftError(f"{path}: not a predictions file of format {FORMAT}")
    classes: Sequence[str] = data.get("classes") or []
    seen: set[str] = set()
    for i, item in enumerate(data.get("items", [])):
        key = item.get("key")
        if not isinstance(key, str) or key in seen:
            raise MghftError(f"{path}: item {i} has a missing or repeated key {key!r}")
        seen.add(key)
        for field in ("label", "prediction"):
            v = item.get(field)
            if not isinstance(v, int) or not -1 <= v < len(classes) or (field == "label" and v < 0):
                raise MghftError(f"{path}: item {key!r} has {field} {v!r}, not a class index of {len(classes)}")
    return data
