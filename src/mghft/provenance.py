"""Provenance: where a model and its numbers came from, recorded with them and read back wherever they are used.

A training run writes one provenance block (``<run>/provenance.json``, and the same under ``"provenance"`` in every
checkpoint's ``config.json``, in ``results.json`` and in each report's ``metrics.json`` and ``report.md``)::

    {
      "data": {"reader": "manifest", "root": "/data/x.csv", "split": {"file": ".../split.json", "sha256": "…",
               "group_by": "group"}, "counts": {"train": 80, "val": 10, "test": 10}, "skipped": 0},
      "views": ["intention", "style", "main_role", "posture_expression"],
      "descriptions": {"source": "store", "store": "…", "writers": {"offline/offline/v1": 100}, "missing": 0},
      "text_encoder": {"encoder": "packaged:all-MiniLM-L6-v2", "weights_sha256": "…", "last_layers": 4, …},
      "selection": {"select_on": "val", "select_metric": "accuracy", "epoch": 7, "value": 0.81},
      "software": {"mghft": "0.1.0", "git_commit": "…", "torch": "2.13.0", "python": "3.12.3", "device": "cpu"}
    }

``mghft evaluate``, the predictor, the service and ``export`` read it back: above all they apply the views the model
was trained with (:func:`training_views`), and an evaluation under other conditions says so at the top of its
report (:func:`differences`).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mghft.views import VIEWS

PROVENANCE_NAME = "provenance.json"
"""The provenance file of a run folder."""
FINGERPRINT_NAME = "data_fingerprint.json"
"""The per-item data fingerprint of a run folder: each item's label and the hash of its descriptions, per split."""
_SHOWN = 5


def description_sha256(views: Mapping[str, Any] | None) -> str | None:
    """A short hash (16 hex digits) of one item's view texts (``None``: the item has no description)."""
    if views is None:
        return None
    return hashlib.sha256(json.dumps(dict(views), sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def fingerprint_digests(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, str]]:
    """Per kind (``labels``, ``descriptions``) and split, one sha256 over the split's sorted ``key -> value`` pairs
    of a fingerprint table (:func:`mghft.train.provenance.data_fingerprint`)."""
    out: dict[str, dict[str, str]] = {}
    for kind, splits in table.items():
        out[kind] = {
            split: hashlib.sha256(json.dumps(sorted(items.items()), ensure_ascii=False).encode()).hexdigest()
            for split, items in splits.items()
        }
    return out


def _flat(table: Mapping[str, Mapping[str, Mapping[str, Any]]], kind: str) -> dict[str, Any]:
    return {key: value for items in (table.get(kind) or {}).values() for key, value in items.items()}


def fingerprint_changes(
    saved: Mapping[str, Mapping[str, Mapping[str, Any]]],
    now: Mapping[str, Mapping[str, Mapping[str, Any]]],
    only: set[str] | None = None,
) -> list[str]:
    """What changed in the data's content between two fingerprint tables, one sentence per kind, naming items.

    Args:
        saved: the table the run recorded.
        now: the table of the data as it is now.
        only: compare these item keys only (an evaluation reads one split); default every key of both tables.

    Returns:
        e.g. ``["2 labels changed: a.png happiness -> anger, b.png anger -> happiness",
        "140 of 300 items' descriptions changed: a.png, b.png, … (135 more)"]``; ``[]`` when nothing changed.
    """
    out = []
    for kind in ("labels", "descriptions"):
        a, b = _flat(saved, kind), _flat(now, kind)
        keys = (set(a) | set(b)) if only is None else (set(a) | set(b)) & only
        changed = sorted(k for k in keys if k in a and k in b and a[k] != b[k])
        added = sorted(k for k in keys if k not in a)
        removed = sorted(k for k in keys if k not in b)
        parts = []
        if changed:
            if kind == "labels":
                shown = [f"{k} {a[k]} -> {b[k]}" for k in changed[:_SHOWN]]
                moves: dict[str, int] = {}
                for k in changed:
                    moves[f"{a[k]} -> {b[k]}"] = moves.get(f"{a[k]} -> {b[k]}", 0) + 1
                by_move = f" ({', '.join(f'{m}: {n}' for m, n in sorted(moves.items()))})" if len(moves) > 1 else ""
                parts.append(
                    f"{len(changed)} label{'s' if len(changed) > 1 else ''} changed{by_move}: " + ", ".join(shown)
                )
            else:
                shown = [f"{k} ({'added' if a[k] is None else 'removed' if b[k] is None else 'rewritten'})"
                         for k in changed[:_SHOWN]]  # fmt: skip
                parts.append(f"{len(changed)} of {len(keys)} items' descriptions changed: " + ", ".join(shown))
            if len(changed) > _SHOWN:
                parts[-1] += f", … ({len(changed) - _SHOWN} more)"
        if kind == "labels":  # items that came or went (the descriptions sentence would repeat them)
            for word, which in (("new", added), ("gone", removed)):
                if which:
                    more = f", … ({len(which) - _SHOWN} more)" if len(which) > _SHOWN else ""
                    parts.append(f"{len(which)} item(s) {word}: " + ", ".join(which[:_SHOWN]) + more)
        out.extend(parts)
    # An item that changed split keeps its label and description, so the sentences above miss it: a training item
    # moved to test would be evaluated after being trained on.
    where_a = {k: split for split, items in (saved.get("labels") or {}).items() for k in items}
    where_b = {k: split for split, items in (now.get("labels") or {}).items() for k in items}
    common = set(where_a) & set(where_b) if only is None else set(where_a) & set(where_b) & only
    moved = sorted(k for k in common if where_a[k] != where_b[k])
    if moved:
        more = f", … ({len(moved) - _SHOWN} more)" if len(moved) > _SHOWN else ""
        out.append(
            f"{len(moved)} item(s) moved between splits: "
            + ", ".join(f"{k} {where_a[k]} -> {where_b[k]}" for k in moved[:_SHOWN])
            + more
        )
    return out


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the git work tree holding ``path`` (default: this package's source), ``+dirty`` when it has
    uncommitted changes; ``None`` outside a work tree or without git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def software_provenance(device: Any = "cpu") -> dict[str, Any]:
    """Package version, git commit when known, torch and Python versions, and the device (with its GPU name)."""
    import torch

    import mghft

    dev = str(device)
    if dev.startswith("cuda") and torch.cuda.is_available():
        dev += f" ({torch.cuda.get_device_name(torch.device(dev))})"
    return {
        "mghft": mghft.__version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": dev,
    }


def training_views(meta: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The views a checkpoint was trained with, from its ``config.json`` (``model.checkpoint_meta``).

    A checkpoint without provenance (written before it was recorded) is taken to use all four views.
    """
    prov = (meta or {}).get("provenance") or {}
    views = prov.get("views")
    if views is None:
        return VIEWS
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ValueError(f"checkpoint provenance names unknown view(s) {unknown}; views are {list(VIEWS)}")
    return tuple(v for v in VIEWS if v in views)


def view_keep(views: Sequence[str]) -> list[bool]:
    """Per view in stage order, whether it is in ``views`` (the mask applied to every input's view mask)."""
    return [v in views for v in VIEWS]


def selected_on(meta: Mapping[str, Any] | None) -> str:
    """How a checkpoint was selected (``val``, ``test``), or ``unknown`` for one without provenance."""
    prov = (meta or {}).get("provenance") or {}
    return str((prov.get("selection") or {}).get("select_on") or "unknown")


def _writers(block: Mapping[str, Any] | None) -> dict[str, int]:
    return dict(((block or {}).get("writers")) or {})


def _content_differences(
    t_data: Mapping[str, Any],
    n_data: Mapping[str, Any],
    trained_table: Mapping[str, Any] | None,
    now_table: Mapping[str, Any] | None,
) -> list[str]:
    """Sentences on the labels and descriptions of the evaluated split(s) against training's fingerprint."""
    t_content, n_content = t_data.get("content") or {}, n_data.get("content") or {}
    if not n_content:
        return []
    if not t_content:
        return [
            "data content: the checkpoint records no fingerprint of its labels and descriptions, so their changes "
            "since training cannot be checked"
        ]
    differ = [
        (kind, split, t, n)
        for kind in ("labels", "descriptions")
        for split, n in (n_content.get(kind) or {}).items()
        if (t := (t_content.get(kind) or {}).get(split)) is not None and t != n
    ]
    if not differ:
        return []
    if trained_table is not None and now_table is not None:
        splits = {split for _, split, _, _ in differ}
        only = {k for kind in ("labels", "descriptions") for s in splits
                for table in (trained_table, now_table) for k in ((table.get(kind) or {}).get(s) or {})}  # fmt: skip
        found = fingerprint_changes(trained_table, now_table, only)
        if found:
            return [f"data content: {sentence}" for sentence in found]
    return [
        f"data content: the {split} split's {kind} differ from training's (sha256 {t[:12]} then, {n[:12]} now; "
        f"the run folder's {FINGERPRINT_NAME} lists the items)"
        for kind, split, t, n in differ
    ]


def differences(
    trained: Mapping[str, Any] | None,
    now: Mapping[str, Any],
    trained_table: Mapping[str, Any] | None = None,
    now_table: Mapping[str, Any] | None = None,
) -> list[str]:
    """How the conditions of an evaluation (``now``) differ from training (``trained``), one sentence each.

    Compared: the data reader, root and split file hash, the content of the data (each item's label and the text
    of its descriptions: the per-split digests of ``data.content``, and item by item when both fingerprint tables
    are given, :func:`fingerprint_changes`), the description writers, and the text encoder's identity. A
    checkpoint without provenance gives one sentence saying the conditions cannot be checked.
    """
    if not trained:
        return [
            "the checkpoint records no provenance: its training conditions (views, data, descriptions, text "
            "encoder) are unknown and cannot be compared; all four views are used"
        ]
    out = []
    t_data, n_data = trained.get("data") or {}, now.get("data") or {}
    for key in ("reader", "root"):
        if key in t_data and key in n_data and t_data[key] != n_data[key]:
            out.append(f"data {key}: trained on {t_data[key]!r}, evaluated on {n_data[key]!r}")
    t_split, n_split = t_data.get("split") or {}, n_data.get("split") or {}
    if t_split.get("sha256") and n_split.get("sha256") and t_split["sha256"] != n_split["sha256"]:
        out.append(
            f"split file: trained with {t_split.get('file')} (sha256 {t_split['sha256'][:12]}), evaluated with "
            f"{n_split.get('file')} (sha256 {n_split['sha256'][:12]})"
        )
    out.extend(_content_differences(t_data, n_data, trained_table, now_table))
    t_desc, n_desc = trained.get("descriptions") or {}, now.get("descriptions") or {}
    if n_desc:
        t_w, n_w = set(_writers(t_desc)), set(_writers(n_desc))
        if t_w != n_w and (t_w or n_w):
            out.append(
                f"description writers: trained with {sorted(t_w) or 'none'}, evaluated with {sorted(n_w) or 'none'}"
            )
    t_enc, n_enc = trained.get("text_encoder") or {}, now.get("text_encoder") or {}
    if t_enc and n_enc:
        changed = sorted(k for k in set(t_enc) | set(n_enc) if t_enc.get(k) != n_enc.get(k))
        if changed:
            out.append(
                "text encoder: " + ", ".join(f"{k} {t_enc.get(k)!r} in training, {n_enc.get(k)!r} now" for k in changed)
            )
    return out
