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

import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mghft.views import VIEWS

PROVENANCE_NAME = "provenance.json"
"""The provenance file of a run folder."""


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


def differences(trained: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """How the conditions of an evaluation (``now``) differ from training (``trained``), one sentence each.

    Compared: the data reader, root and split file hash, the description writers, and the text encoder's
    identity. A checkpoint without provenance gives one sentence saying the conditions cannot be checked.
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
