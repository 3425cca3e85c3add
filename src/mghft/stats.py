"""Statistics for comparing classifiers on the same test items: McNemar's test and (paired, grouped) bootstraps.

Every function here works on class indices; a prediction of ``-1`` means "no answer" (an unparseable zero-shot
reply): always wrong, counted against its true class's recall and no class's precision.

Predictions of several seeds of one system are *pooled*: an array of shape (S, N) holds S runs over the same N
items. A bootstrap draw resamples the items (or whole groups of items, e.g. SER30K topics, whose stickers are
correlated) and keeps all S predictions of each drawn item, so the interval covers the test-set sampling and the
seed-to-seed spread together. A paired bootstrap applies the same draw to both systems, which is what makes a
difference on the same items far more precise than two separate intervals suggest.

McNemar's test compares two runs' per-item correctness: ``b`` items only the first got right, ``c`` only the
second. The exact test is the two-sided binomial test of ``b`` out of ``b + c`` at 1/2; the chi-square version
(with continuity correction) is its large-sample approximation. McNemar treats items as independent; with
correlated groups the group bootstrap is the honest one of the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METRICS = ("accuracy", "macro_f1", "weighted_f1")
"""The summary metrics every function here computes, in this order."""

EXACT_BELOW = 25
"""``mcnemar(method="auto")`` uses the exact test when fewer than this many items are discordant."""


# ---------------------------------------------------------------------------------------------------------------
# McNemar


@dataclass(frozen=True)
class McNemarResult:
    """Outcome of McNemar's test.

    Attributes:
        b: items the first run got right and the second wrong.
        c: items the second run got right and the first wrong.
        statistic: the chi-square statistic (continuity corrected) for ``method="chi2"``, else ``b``.
        p_value: two-sided p-value.
        method: ``"exact"`` or ``"chi2"``.
    """

    b: int
    c: int
    statistic: float
    p_value: float
    method: str


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``.

    Equal to ``scipy.stats.binomtest(b, b + c, 0.5).pvalue``; 1 when there is no discordant item.

    Raises:
        ValueError: a negative count.
    """
    _check_counts(b, c)
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # Exact integer arithmetic, then one division: no underflow for large n.
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, float(2 * tail / 2**n))


def mcnemar_chi2(b: int, c: int, correction: bool = True) -> tuple[float, float]:
    """McNemar's chi-square statistic (1 degree of freedom) and its p-value.

    The statistic is ``(|b - c| - 1)^2 / (b + c)`` with the continuity correction (floored at 0), ``(b - c)^2 /
    (b + c)`` without; the p-value is ``scipy.stats.chi2.sf(statistic, 1)``, computed as ``erfc(sqrt(stat / 2))``.

    Returns:
        ``(statistic, p_value)``; ``(0.0, 1.0)`` when there is no discordant item.
    """
    _check_counts(b, c)
    n = b + c
    if n == 0:
        return 0.0, 1.0
    diff = abs(b - c) - (1 if correction else 0)
    stat = max(0.0, float(diff)) ** 2 / n
    return stat, math.erfc(math.sqrt(stat / 2))


def mcnemar(
    correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray, method: str = "auto"
) -> McNemarResult:
    """McNemar's test on two runs' per-item correctness over the same items.

    Args:
        correct_a, correct_b: (N,) booleans, item ``i`` answered correctly by run a / run b.
        method: ``"exact"``, ``"chi2"`` (continuity corrected) or ``"auto"`` (exact below ``EXACT_BELOW``
            discordant items, else chi2).

    Raises:
        ValueError: arrays of different lengths, or an unknown method.
    """
    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b must be equally long 1-D arrays, got {a.shape} and {bb.shape}")
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    if method == "auto":
        method = "exact" if b + c < EXACT_BELOW else "chi2"
    if method == "exact":
        return McNemarResult(b, c, float(b), mcnemar_exact(b, c), "exact")
    if method == "chi2":
        stat, p = mcnemar_chi2(b, c)
        return McNemarResult(b, c, stat, p, "chi2")
    raise ValueError(f"method must be 'auto', 'exact' or 'chi2', got {method!r}")


def _check_counts(b: int, c: int) -> None:
    if b < 0 or c < 0:
        raise ValueError(f"McNemar counts must be non-negative, got b={b}, c={c}")


# ---------------------------------------------------------------------------------------------------------------
# Scores from (weighted) confusion matrices


def confusion(y_true: np.ndarray, preds: np.ndarray, num_classes: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Pooled confusion counts of S runs, shape (B, K, K + 1) or (K, K + 1) without ``weights``.

    Args:
        y_true: (N,) true class indices in ``0..K-1``.
        preds: (S, N) or (N,) predicted indices in ``-1..K-1`` (``-1``: no answer, the last column).
        num_classes: K.
        weights: optional (B, N) item weights (a bootstrap draw: how often each item was drawn).
    """
    y, p = _as_runs(y_true, preds, num_classes)
    k = num_classes
    codes = y[None, :] * (k + 1) + np.where(p < 0, k, p)  # (S, N) cell of each prediction
    # (N, K(K+1)) how often each item falls in each cell, summed over the S runs.
    cells = np.zeros((y.size, k * (k + 1)))
    for row in codes:
        cells[np.arange(y.size), row] += 1
    if weights is None:
        return cells.sum(0).reshape(k, k + 1)
    w = np.asarray(weights, dtype=np.float64)
    return (w @ cells).reshape(w.shape[0], k, k + 1)


def scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1, weighted-F1 and per-class precision/recall/F1 of confusion matrices.

    Args:
        cm: (..., K, K + 1) counts, rows true, columns predicted, last column "no answer".

    Returns:
        ``accuracy``, ``macro_f1``, ``weighted_f1`` of shape (...), and ``precision``, ``recall``, ``f1``,
        ``support`` of shape (..., K). Formulas are scikit-learn's with ``zero_division=0``; the macro mean runs
        over the classes present among the true or predicted labels (scikit-learn's default labels), so a class
        a resample misses entirely is not counted as an F1 of 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[-2]
    tp = np.diagonal(cm[..., :k], axis1=-2, axis2=-1)
    support = cm.sum(-1)
    predicted = cm[..., :k].sum(-2)
    total = support.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
        present = denom > 0
        macro = (f1 * present).sum(-1) / np.maximum(present.sum(-1), 1)
        weighted = np.where(total > 0, (f1 * support).sum(-1) / total, 0.0)
        accuracy = np.where(total > 0, tp.sum(-1) / total, 0.0)
    return {
        "accuracy": accuracy,
        "macro_f1": macro,
        "weighted_f1": weighted,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
    }


def run_scores(y_true: np.ndarray, preds: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, macro-F1 and weighted-F1 of one run ((N,) predictions), as floats."""
    s = scores(confusion(y_true, preds, num_classes))
    return {m: float(s[m]) for m in METRICS}


# ---------------------------------------------------------------------------------------------------------------
# Bootstraps


def bootstrap_weights(n_draws: int, groups: Sequence[object] | np.ndarray, seed: int = 0) -> np.ndarray:
    """How often each item is drawn in each of ``n_draws`` resamples of its groups, shape (n_draws, N).

    Each draw picks G groups out of the G distinct ones with replacement and takes every item of each drawn group;
    with one group per item this is the ordinary item bootstrap.
    """
    _, group_of = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    g = int(group_of.max()) + 1 if group_of.size else 0
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, g, g), minlength=g) for _ in range(n_draws)])  # (B, G)
    return counts[:, group_of].astype(np.float64)  # (B, N)


@dataclass(frozen=True)
class Interval:
    """A point value with a percentile bootstrap interval (fractions in [0, 1], or differences of them)."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def _interval(value: float, draws: np.ndarray, confidence: float) -> Interval:
    alpha = (1.0 - confidence) / 2
    return Interval(float(value), float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha)))


def pooled_bootstrap(
    y_true: np.ndarray,
    preds: np.ndarray,
    num_classes: int,
    groups: Sequence[object] | np.ndarray | None = None,
    *,
    n_draws: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, object]:
    """Scores of the pooled predictions of S runs with (group) bootstrap intervals.

    Args:
        y_true: (N,) true labels.
        preds: (S, N) predictions of S runs (seeds) over the same items, or (N,).
        num_classes: K.
        groups: (N,) group of each item (resampled as a whole); ``None``: items.
        n_draws: bootstrap resamples.
        seed: seed of the resampling.
        confidence: interval mass.

    Returns:
        ``accuracy``, ``macro_f1``, ``weighted_f1`` as :class:`Interval`, and ``per_class``: a list of K dicts
        ``{precision, recall, f1: Interval, support: int}`` (support per run).
    """
    y, p = _as_runs(y_true, preds, num_classes)
    w = bootstrap_weights(n_draws, groups if groups is not None else np.arange(y.size), seed)
    point = scores(confusion(y, p, num_classes))
    draws = scores(confusion(y, p, num_classes, w))
    out: dict[str, object] = {m: _interval(point[m], draws[m], confidence) for m in METRICS}
    out["per_class"] = [
        {
            **{m: _interval(point[m][c], draws[m][:, c], confidence) for m in ("precision", "recall", "f1")},
            "support": int(round(point["support"][c] / p.shape[0])),
        }
        for c in range(num_classes)
    ]
    return out


@dataclass(frozen=True)
class PairedDifference:
    """``metric(a) - metric(b)`` on the same items, with its paired bootstrap interval and two-sided p-value.

    ``floor`` is the smallest p-value the number of draws can give (``2 / (n_draws + 1)``): a p-value at the floor
    means "at most this".
    """

    difference: Interval
    p_value: float
    floor: float = 0.0

    @property
    def at_floor(self) -> bool:
        return self.p_value <= self.floor * (1 + 1e-9)

    def as_dict(self) -> dict[str, object]:
        return {**self.difference.as_dict(), "p_value": self.p_value, "p_floor": self.floor}


def paired_bootstrap(
    y_true: np.ndarray,
    preds_a: np.ndarray,
    preds_b: np.ndarray,
    num_classes: int,
    groups: Sequence[object] | np.ndarray | None = None,
    *,
    n_draws: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, PairedDifference]:
    """Paired bootstrap of the difference ``a - b`` in accuracy, macro-F1 and weighted-F1 over the same items.

    Each draw resamples the items (or groups) once and scores both systems' pooled predictions on that same
    resample. The p-value is two-sided: twice the smaller share of draws on either side of 0, each share counted
    as ``(draws on that side, 0 included, + 1) / (n_draws + 1)``, capped at 1. Identical predictions give 1.

    Args:
        y_true: (N,) true labels.
        preds_a, preds_b: (Sa, N) and (Sb, N) predictions (any numbers of seeds), or (N,).
        num_classes: K.
        groups: (N,) group of each item; ``None``: items.
        n_draws, seed, confidence: as in :func:`pooled_bootstrap`.

    Returns:
        metric name -> :class:`PairedDifference`.
    """
    y, a = _as_runs(y_true, preds_a, num_classes)
    _, b = _as_runs(y_true, preds_b, num_classes)
    w = bootstrap_weights(n_draws, groups if groups is not None else np.arange(y.size), seed)
    point_a, point_b = scores(confusion(y, a, num_classes)), scores(confusion(y, b, num_classes))
    draws_a, draws_b = scores(confusion(y, a, num_classes, w)), scores(confusion(y, b, num_classes, w))
    out = {}
    for m in METRICS:
        delta = draws_a[m] - draws_b[m]
        # Floating-point noise around an exact tie counts as 0 (both sides).
        delta = np.where(np.abs(delta) < 1e-12, 0.0, delta)
        low = (np.sum(delta <= 0) + 1) / (n_draws + 1)
        high = (np.sum(delta >= 0) + 1) / (n_draws + 1)
        p = min(1.0, 2 * min(low, high))
        out[m] = PairedDifference(_interval(point_a[m] - point_b[m], delta, confidence), float(p), 2 / (n_draws + 1))
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1) of per-seed values; the std is ``None`` for one value."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no values")
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def _as_runs(y_true: np.ndarray, preds: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(preds, dtype=np.int64)
    if p.ndim == 1:
        p = p[None, :]
    if y.ndim != 1 or p.ndim != 2 or p.shape[1] != y.size:
        raise ValueError(f"y_true must be (N,) and preds (S, N) over the same N items, got {y.shape} and {p.shape}")
    if y.size == 0:
        raise ValueError("no items")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"y_true holds a class index outside 0..{num_classes - 1}")
    if p.min() < -1 or p.max() >= num_classes:
        raise ValueError(f"preds hold an index outside -1..{num_classes - 1}")
    return y, p
