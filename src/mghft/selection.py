"""Several emotions per sticker: the emotions whose (calibrated) probability makes the cut.

A sticker often shows more than one emotion, and a catalogue files it under each. ``--top-k K`` keeps the K most
probable emotions, ``--min-probability P`` those with probability at least P; given together, both must hold. The
probabilities are the predictor's: calibrated by the checkpoint's temperature unless ``--uncalibrated``
(:mod:`mghft.calibration`), so P reads as a probability. The top label stays the single most probable emotion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mghft.errors import UsageError


def check_selection(top_k: int | None, min_probability: float | None, num_classes: int | None = None) -> None:
    """Refuse a ``--top-k`` below 1 or above the number of classes, or a ``--min-probability`` outside (0, 1].

    Raises:
        UsageError: naming the flag and the allowed range.
    """
    if top_k is not None and (top_k < 1 or (num_classes is not None and top_k > num_classes)):
        upto = f" to {num_classes} (this model's classes)" if num_classes is not None else " or more"
        raise UsageError(f"--top-k {top_k}: give 1{upto}")
    if min_probability is not None and not 0.0 < min_probability <= 1.0:
        raise UsageError(f"--min-probability {min_probability}: give a probability in (0, 1]")


def selecting(top_k: int | None, min_probability: float | None) -> bool:
    """Whether several emotions per sticker were asked for."""
    return top_k is not None or min_probability is not None


def select_emotions(
    probabilities: Mapping[str, float], *, top_k: int | None = None, min_probability: float | None = None
) -> list[dict[str, Any]]:
    """The chosen emotions, most probable first: ``[{"label": str, "probability": float}, ...]``.

    Args:
        probabilities: class -> probability (one sticker's, summing to 1).
        top_k: keep at most this many (``None``: no limit).
        min_probability: keep those with probability at least this (``None``: no floor).
    """
    ranked = sorted(probabilities.items(), key=lambda kv: (-kv[1], kv[0]))
    if min_probability is not None:
        ranked = [(c, p) for c, p in ranked if p >= min_probability]
    if top_k is not None:
        ranked = ranked[:top_k]
    return [{"label": c, "probability": round(float(p), 6)} for c, p in ranked]


__all__ = ["check_selection", "select_emotions", "selecting"]
