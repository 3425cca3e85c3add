"""Statistics for comparing classifiers on the same test items: one definition of every score, McNemar's test,
(grouped, two-level) bootstraps and a seed-aware test of a difference with Holm's correction.

Every function here works on class indices; a prediction of ``-1`` means "no answer" (an unparseable zero-shot
reply): always wrong, counted against its true class's recall and no class's precision.

**Scores.** :func:`scores` is the one definition of accuracy, macro and weighted precision/recall/F1 that
``mghft evaluate``, training's test report and ``mghft compare`` all use: scikit-learn's formulas with
``zero_division=0``, the macro means over the classes *with support* (at least one true item). A class that is
predicted but absent from the evaluated items adds to no macro mean (it lowers the other classes' precision
through its false positives only). A bootstrap resample is scored by the same function, so a class its draw misses
is left out of that draw's macro mean.

**Seeds.** An array of shape (S, N) holds S runs (training seeds) of one system over the same N items. A system's
score is the mean of its per-seed scores; its interval comes from a two-level bootstrap (Davison & Hinkley 1997,
*Bootstrap Methods and their Application*, §3.8): each draw resamples the seeds with replacement, then the items
(or whole groups of items, e.g. SER30K topics, whose stickers are correlated). With few seeds this still
understates the seed-to-seed spread (a resample of S values has (S - 1)/S of their variance), which is why the
*test* of a difference does not rest on it.

**Testing a difference.** :func:`paired_bootstrap` tests ``score(a) - score(b)`` (differences of seed means) with
two units of replication, and calls a difference significant only when both reject (an intersection-union test,
Berger 1982, *Technometrics* 24(4): its p-value is the larger of the two):

- the *training run*: Welch's t-test on the per-seed scores (Reimers & Gurevych 2017, "Reporting score
  distributions makes a difference", EMNLP; Dror et al. 2018, "The hitchhiker's guide to testing statistical
  significance in NLP", ACL), valid whatever the seed-to-seed spread, conditional on the test items. With one run
  on one side and two or more on the other, Student's t with the other side's spread assumed for both; with one run
  on each side no seed-aware test exists and none is made;
- the *item* (or group): the paired bootstrap of the same difference, one draw of items or groups applied to both
  systems, which covers how the difference would vary over other test items (and correlated groups).

Pooling the seeds and resampling items only (what this module did before) treats seed-to-seed spread as signal:
under the null it rejects far more often than its nominal level once the seeds differ at all. The tests in
``tests/test_stats_null.py`` simulate null systems and check the rejection rate of this test.

**Several tests in one table**: :func:`holm` adjusts the p-values of every test a table marks (Holm 1979, "A
simple sequentially rejective multiple test procedure", *Scand. J. Statist.* 6(2)), controlling the chance of any
false mark at the nominal level.

McNemar's test compares two runs' per-item correctness: ``b`` items only the first got right, ``c`` only the
second. The exact test is the two-sided binomial test of ``b`` out of ``b + c`` at 1/2; the chi-square version
(with continuity correction) is its large-sample approximation. It treats items as independent and one pair of
seeds as the whole story; it is reported, not used to mark a difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
# Scores: the one definition


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


def _scores_from(tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> dict[str, np.ndarray]:
    """Every score from per-class true positives, prediction counts and support, each of shape (..., K)."""
    total = support.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
        # The macro means run over the classes with support: a class absent from the items has no recall.
        has = support > 0
        n_has = np.maximum(has.sum(-1), 1)
        out = {
            "accuracy": np.where(total > 0, tp.sum(-1) / total, 0.0),
            "macro_precision": (precision * has).sum(-1) / n_has,
            "macro_recall": (recall * has).sum(-1) / n_has,
            "macro_f1": (f1 * has).sum(-1) / n_has,
            "weighted_precision": np.where(total > 0, (precision * support).sum(-1) / total, 0.0),
            "weighted_recall": np.where(total > 0, (recall * support).sum(-1) / total, 0.0),
            "weighted_f1": np.where(total > 0, (f1 * support).sum(-1) / total, 0.0),
        }
    return {**out, "precision": precision, "recall": recall, "f1": f1, "support": support}


def scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Every score of confusion matrices: the single definition used by evaluation, reports and comparisons.

    Args:
        cm: (..., K, K) or (..., K, K + 1) counts, rows true, columns predicted, the optional last column
            "no answer" (wrong, predicted as no class).

    Returns:
        ``accuracy``, ``macro_precision``, ``macro_recall``, ``macro_f1``, ``weighted_precision``,
        ``weighted_recall``, ``weighted_f1`` of shape (...), and ``precision``, ``recall``, ``f1``, ``support``
        of shape (..., K). Formulas are scikit-learn's with ``zero_division=0``; the macro means run over the
        classes with support (at least one true item), the weighted means weight each class by its support.
        ``sklearn.metrics.f1_score(y, p, labels=<classes with support>, average="macro")`` equals ``macro_f1``.
    """
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[-2]
    if cm.shape[-1] not in (k, k + 1):
        raise ValueError(f"a confusion matrix must be (..., K, K) or (..., K, K + 1), got {cm.shape}")
    tp = np.diagonal(cm[..., :k], axis1=-2, axis2=-1)
    return _scores_from(tp, cm[..., :k].sum(-2), cm.sum(-1))


def run_scores(y_true: np.ndarray, preds: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, macro-F1 and weighted-F1 of one run ((N,) predictions), as floats (:func:`scores`)."""
    s = scores(confusion(y_true, preds, num_classes))
    return {m: float(s[m]) for m in METRICS}


def per_run_scores(
    y_true: np.ndarray, preds: np.ndarray, num_classes: int, weights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """:func:`scores` of each of S runs, on the items or on each of B weighted resamples of them.

    Args:
        y_true: (N,) true labels.
        preds: (S, N) or (N,) predictions.
        num_classes: K.
        weights: optional (B, N) item weights.

    Returns:
        As :func:`scores`, shapes (S,) and (S, K) without ``weights``, (B, S) and (B, S, K) with them.
    """
    y, p = _as_runs(y_true, preds, num_classes)
    k, s = num_classes, p.shape[0]
    w = np.ones((1, y.size)) if weights is None else np.asarray(weights, dtype=np.float64)
    truth = np.eye(k)[y]  # (N, K)
    answered = np.eye(k + 1)[np.where(p < 0, k, p)][..., :k]  # (S, N, K); no answer is no class
    hits = truth[None] * (p == y[None])[..., None]  # (S, N, K)
    # One matrix product for every run: (B, N) @ (N, S * 2K).
    stacked = np.concatenate([hits, answered], axis=-1).transpose(1, 0, 2).reshape(y.size, s * 2 * k)
    counts = (w @ stacked).reshape(w.shape[0], s, 2, k)
    support = (w @ truth)[:, None, :]  # (B, 1, K): the same items for every run
    out = _scores_from(counts[:, :, 0], counts[:, :, 1], np.broadcast_to(support, counts[:, :, 0].shape))
    return {m: v[0] for m, v in out.items()} if weights is None else out


# ---------------------------------------------------------------------------------------------------------------
# Bootstraps


def group_codes(groups: Sequence[object] | np.ndarray | None, n: int) -> np.ndarray:
    """(N,) integer code of each item's resampling unit: its group, or itself when ``groups`` is ``None`` or its
    group is ``None`` (an item without a group stands alone).

    Raises:
        ValueError: ``groups`` of another length than the items.
    """
    if groups is None:
        return np.arange(n)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} items")
    labels = [("item", i) if g is None else ("group", str(g)) for i, g in enumerate(groups)]
    _, codes = np.unique(np.array([f"{a}\0{b}" for a, b in labels], dtype=object).astype(str), return_inverse=True)
    return codes.reshape(-1)


def bootstrap_weights(
    n_draws: int, groups: Sequence[object] | np.ndarray | None, seed: int = 0, *, n: int | None = None
) -> np.ndarray:
    """How often each item is drawn in each of ``n_draws`` resamples of its groups, shape (n_draws, N).

    Each draw picks G groups out of the G distinct ones with replacement and takes every item of each drawn group;
    with one group per item (``groups`` ``None``, ``n`` items) this is the ordinary item bootstrap.
    """
    if groups is None and n is None:
        raise ValueError("give groups or the number of items n")
    group_of = group_codes(groups, n if groups is None else len(groups))
    g = int(group_of.max()) + 1 if group_of.size else 0
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, g, (n_draws, g)) + (np.arange(n_draws) * g)[:, None]
    counts = np.bincount(drawn.ravel(), minlength=n_draws * g).reshape(n_draws, g)  # (B, G)
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
    """A system's scores (means over its S seeds) with two-level bootstrap intervals: seeds, then groups or items.

    Each draw resamples the S seeds with replacement (nothing to resample with one run) and, independently, the
    groups (or items); the draw's score is the mean over its seeds of :func:`scores` on its items. Percentile
    intervals; with few seeds the seed part is understated by (S - 1)/S (see the module docstring).

    Args:
        y_true: (N,) true labels.
        preds: (S, N) predictions of S runs (seeds) over the same items, or (N,).
        num_classes: K.
        groups: (N,) group of each item (resampled as a whole; ``None`` entries stand alone); ``None``: items.
        n_draws: bootstrap resamples.
        seed: seed of the resampling.
        confidence: interval mass.

    Returns:
        ``accuracy``, ``macro_f1``, ``weighted_f1`` as :class:`Interval`, and ``per_class``: a list of K dicts
        ``{precision, recall, f1: Interval, support: int}`` (support of the test items).
    """
    y, p = _as_runs(y_true, preds, num_classes)
    s = p.shape[0]
    w = bootstrap_weights(n_draws, groups, seed, n=y.size)
    point = {m: v.mean(0) for m, v in per_run_scores(y, p, num_classes).items()}
    draws = per_run_scores(y, p, num_classes, w)  # (B, S), (B, S, K)
    pick = np.random.default_rng([seed, 1]).integers(0, s, (n_draws, s))  # (B, S) resampled seeds
    drawn = {m: (np.take_along_axis(v, pick if v.ndim == 2 else pick[..., None], 1)).mean(1) for m, v in draws.items()}
    out: dict[str, object] = {m: _interval(point[m], drawn[m], confidence) for m in METRICS}
    out["per_class"] = [
        {
            **{m: _interval(point[m][c], drawn[m][:, c], confidence) for m in ("precision", "recall", "f1")},
            "support": int(round(point["support"][c])),
        }
        for c in range(num_classes)
    ]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Testing a difference


def seed_t_test(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> dict[str, Any] | None:
    """Two-sided t-test of ``mean(a) - mean(b)`` over per-seed scores: the training run is the unit of replication.

    Welch's test (Welch 1947, *Biometrika* 34) with the Welch-Satterthwaite degrees of freedom when both sides have
    two or more runs; with one run on one side, Student's pooled test taking the other side's spread for both (an
    assumption, named in ``method``); ``None`` with one run on each side (no spread to test against). When every
    score on both sides is identical the p-value is 1 for a zero difference and 0 otherwise.

    Returns:
        ``{"difference", "low", "high", "p_value", "df", "runs": (len(a), len(b)), "method"}`` or ``None``.
    """
    from scipy.special import stdtr, stdtrit

    x, z = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = x.size, z.size
    if na == 0 or nb == 0:
        raise ValueError("each side needs at least one run")
    diff = float(x.mean() - z.mean())
    if na >= 2 and nb >= 2:
        va, vb = x.var(ddof=1) / na, z.var(ddof=1) / nb
        se2 = va + vb
        den = va**2 / (na - 1) + vb**2 / (nb - 1)
        df = float(se2**2 / den) if den > 0 else float(na + nb - 2)
        method = "Welch's t over seeds"
    elif na + nb >= 3:
        many = x if na >= 2 else z
        se2 = many.var(ddof=1) * (1 / na + 1 / nb)
        df = float(many.size - 1)
        method = "Student's t over seeds, the single run's spread taken as the other side's"
    else:
        return None
    se = float(np.sqrt(se2))
    if se == 0.0:
        p, half = (1.0 if diff == 0.0 else 0.0), 0.0
    else:
        p = float(min(1.0, 2 * stdtr(df, -abs(diff) / se)))
        half = float(stdtrit(df, 1 - (1 - confidence) / 2) * se)
    return {
        "difference": diff,
        "low": diff - half,
        "high": diff + half,
        "p_value": p,
        "df": df,
        "runs": (int(na), int(nb)),
        "method": method,
    }


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order; ``None`` (no test) stays ``None``.

    The i-th smallest of m p-values becomes ``max over j <= i of min(1, (m - j + 1) * p_(j))``; rejecting where the
    adjusted value is below alpha keeps the family-wise error rate at alpha for any dependence between the tests.
    """
    given = [(i, float(p)) for i, p in enumerate(p_values) if p is not None]
    m = len(given)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(given, key=lambda t: t[1])):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


@dataclass(frozen=True)
class PairedDifference:
    """``score(a) - score(b)`` (differences of seed means) on the same items, and its seed-aware test.

    Attributes:
        difference: the difference with an interval: the hull of the seed t-interval and the paired bootstrap
            interval (it excludes 0 exactly when both do), or the bootstrap interval alone when no seed test exists.
        p_value: the test's two-sided p-value, ``max(p_seeds, p_bootstrap)``; ``None`` when no seed-aware test is
            possible (one run on each side).
        p_seeds: the seed t-test's p-value (:func:`seed_t_test`), or ``None``.
        p_bootstrap: the paired item (or group) bootstrap's p-value.
        floor: the smallest p-value the number of draws can give (``2 / (n_draws + 1)``).
        runs: (runs of a, runs of b) the seed test rests on.
        df: the seed t-test's degrees of freedom, or ``None``.
        method: the seed test's name, or why there is none.
    """

    difference: Interval
    p_value: float | None
    p_seeds: float | None = None
    p_bootstrap: float = 1.0
    floor: float = 0.0
    runs: tuple[int, int] = (1, 1)
    df: float | None = None
    method: str = ""

    @property
    def at_floor(self) -> bool:
        return self.p_value is not None and self.p_value <= self.floor * (1 + 1e-9)

    def as_dict(self) -> dict[str, object]:
        return {
            **self.difference.as_dict(),
            "p_value": self.p_value,
            "p_seeds": self.p_seeds,
            "p_bootstrap": self.p_bootstrap,
            "p_floor": self.floor,
            "runs": list(self.runs),
            "df": self.df,
            "method": self.method,
        }


NO_SEED_TEST = "no seed-aware test: one run on each side"


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
    """Seed-aware test of ``score(a) - score(b)`` in accuracy, macro-F1 and weighted-F1 over the same items.

    The difference is that of the seed means of :func:`scores`. Two tests, one per unit of replication (see the
    module docstring), and the difference counts only when both reject: ``p_value = max(p_seeds, p_bootstrap)``.

    - seeds: :func:`seed_t_test` on the per-seed scores of the full test set;
    - items or groups: each draw resamples the items (or groups) once and scores both systems' seeds on it; the
      p-value is twice the smaller share of draws on either side of 0, each share counted as ``(draws on that side,
      0 included, + 1) / (n_draws + 1)``, capped at 1. Identical predictions give 1.

    Args:
        y_true: (N,) true labels.
        preds_a, preds_b: (Sa, N) and (Sb, N) predictions (Sa, Sb runs), or (N,).
        num_classes: K.
        groups: (N,) group of each item; ``None``: items.
        n_draws, seed, confidence: as in :func:`pooled_bootstrap`.

    Returns:
        metric name -> :class:`PairedDifference`.
    """
    y, a = _as_runs(y_true, preds_a, num_classes)
    _, b = _as_runs(y_true, preds_b, num_classes)
    sa = a.shape[0]
    # One pass over both systems' runs: row 0 weighs every item once (the point value), rows 1.. are the draws.
    w = np.vstack([np.ones((1, y.size)), bootstrap_weights(n_draws, groups, seed, n=y.size)])
    both = per_run_scores(y, np.concatenate([a, b]), num_classes, w)
    floor = 2 / (n_draws + 1)
    out = {}
    for m in METRICS:
        per_a, per_b = both[m][0, :sa], both[m][0, sa:]
        delta = both[m][1:, :sa].mean(1) - both[m][1:, sa:].mean(1)
        # Floating-point noise around an exact tie counts as 0 (both sides).
        delta = np.where(np.abs(delta) < 1e-12, 0.0, delta)
        low = (np.sum(delta <= 0) + 1) / (n_draws + 1)
        high = (np.sum(delta >= 0) + 1) / (n_draws + 1)
        p_boot = float(min(1.0, 2 * min(low, high)))
        value = float(per_a.mean() - per_b.mean())
        boot = _interval(value, delta, confidence)
        t = seed_t_test(per_a, per_b, confidence)
        if t is None:
            out[m] = PairedDifference(boot, None, None, p_boot, floor, (a.shape[0], b.shape[0]), None, NO_SEED_TEST)
            continue
        hull = Interval(value, min(boot.low, t["low"]), max(boot.high, t["high"]))
        out[m] = PairedDifference(
            hull, max(p_boot, t["p_value"]), t["p_value"], p_boot, floor, t["runs"], t["df"], t["method"]
        )
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
