"""Calibrated probabilities: temperature scaling, and how far a model's confidence is from its accuracy.

Temperature scaling (Guo et al., *On Calibration of Modern Neural Networks*, ICML 2017) divides the logits by one
scalar ``T > 0`` fitted to minimise the negative log-likelihood on held-out data (the validation split). It never
changes which class is predicted, only how confident the probabilities are.

One temperature per input condition (:data:`CONDITIONS`), because a model reading view texts and the same model
with every view absent are confident in different ways:

* ``views``: at least one of the views the model was trained with is present; fitted on the validation items that
  have one, with their views.
* ``bare``: every view absent (after the views the model was not trained with are masked out); fitted on every
  validation item with every view absent.

A checkpoint stores both in its calibration record, ``config.json["calibration"]`` (:class:`CalibrationRecord`);
the predictor, the service and exports pick the temperature per request by what the request has
(:func:`input_condition`). A fitted temperature known to be unreliable (:func:`unreliable_reason`: at a search
bound, too few items, one class, every item already right, a likelihood that underflows) is recorded with the
reason and not applied: that condition runs at T = 1 and every output says ``uncalibrated`` and why.

Expected calibration error uses 15 equal-width confidence bins, as in that paper
(:func:`mghft.evaluate.expected_calibration_error`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mghft.errors import MghftError
from mghft.evaluate import ECE_BINS, expected_calibration_error

LOG_PROB_FLOOR = -69.0
"""log(1e-30): log-probabilities are clipped here before fitting (float32 softmax underflows to 0)."""

T_BOUNDS = (0.05, 20.0)
"""Fitted temperatures are kept in this range; a value at a bound means the data could not place it."""

CONDITIONS: tuple[str, ...] = ("views", "bare")
"""The input conditions with a temperature of their own: ``views`` (at least one trained view present) and ``bare``
(every view absent)."""

CONDITION_TITLES: dict[str, str] = {"views": "with views", "bare": "with every view absent"}
"""How outputs describe each condition."""

MIN_FIT_ITEMS = 30
"""Fewest validation items a temperature is applied from. The fit's own noise: on a simulated 7-class model that is
calibrated at T = 1 (Gaussian logits of scale 2.5, 65% accuracy, labels drawn from its probabilities; 200 draws per
size), the fitted log T has a standard deviation of 0.43 at 10 items, 0.28 at 20 and 0.25 at 30 (T off by a factor
1.28 at one standard deviation), shrinking as 1/sqrt(items) beyond. Below 30 items the noise is larger than the
corrections temperature scaling typically makes, so such a fit is recorded but not applied."""


class NonFiniteLogitsError(MghftError, ValueError):
    """Logits (or probabilities) with NaN or infinite entries: they cannot be calibrated or scored, and a NaN row
    must never count as a prediction (``argmax`` of a NaN row is class 0).

    Attributes:
        rows: the positions of the offending rows.
    """

    def __init__(self, produced_by: str, rows: Sequence[int], total: int) -> None:
        shown = ", ".join(str(r) for r in list(rows)[:8]) + (", ..." if len(rows) > 8 else "")
        super().__init__(
            f"{produced_by} gave NaN or infinite logits for {len(rows)} of {total} items (rows {shown})",
            hint="the weights or the inputs hold NaN/inf (a diverged run, a broken checkpoint or feature cache): "
            "retrain or re-export the model; these items cannot be calibrated or scored",
        )
        self.rows = list(rows)


def check_finite(values: np.ndarray | torch.Tensor, produced_by: str) -> None:
    """Raise :class:`NonFiniteLogitsError` naming ``produced_by`` when a row of (N, C) ``values`` is not finite."""
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if v.ndim != 2:
        return
    bad = np.flatnonzero(~np.isfinite(v).all(axis=1))
    if len(bad):
        raise NonFiniteLogitsError(produced_by, bad.tolist(), len(v))


def input_condition(view_present: Sequence[bool] | np.ndarray | torch.Tensor) -> str:
    """``bare`` when no view is present (every entry False: the view mask after masking to the trained views),
    else ``views``."""
    return "views" if bool(np.asarray(view_present, dtype=bool).any()) else "bare"


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it did on the data it was fitted on.

    Attributes:
        temperature: T; probabilities are ``softmax(logits / T)``.
        fitted_on: the split (``val``) the fit used.
        items: how many items the fit used.
        nll_before, nll_after: mean negative log-likelihood (nats) on that split, before and after.
        ece_before, ece_after: expected calibration error (15 bins) on that split, before and after.
        condition: the input condition it was fitted under and applies to (:data:`CONDITIONS`).
        unreliable: why the fitted T is not applied (T = 1 instead); empty when it is applied.
    """

    temperature: float
    fitted_on: str
    items: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    condition: str = "views"
    unreliable: str = ""

    @property
    def at_bound(self) -> bool:
        """The fit stopped at a limit of :data:`T_BOUNDS`: the validation data could not place T (too few items,
        or predictions that are confidently wrong); the temperature is then unreliable."""
        return not T_BOUNDS[0] * 1.01 < self.temperature < T_BOUNDS[1] / 1.01

    @property
    def applied(self) -> bool:
        """Whether the fitted temperature is applied (it is not when :attr:`unreliable` says why)."""
        return not self.unreliable and math.isfinite(self.temperature)

    @property
    def applied_temperature(self) -> float:
        """The temperature outputs use: the fitted one, or 1 when it is unreliable."""
        return self.temperature if self.applied else 1.0

    @property
    def status(self) -> str:
        """What outputs say: ``calibrated (views): T = 1.31, fitted on 84 val items with views`` or
        ``uncalibrated (bare): <why>``."""
        where = CONDITION_TITLES.get(self.condition, self.condition)
        if self.applied:
            return (
                f"calibrated ({self.condition}): T = {self.temperature:.4g}, fitted on {self.items} "
                f"{self.fitted_on} items {where}"
            )
        return f"uncalibrated ({self.condition}): {self.unreliable}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (one condition of a checkpoint's calibration record); NaN written as ``null``."""
        d = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}
        return {
            "method": "temperature",
            **d,
            "at_bound": self.at_bound if math.isfinite(self.temperature) else None,
            "applied_temperature": self.applied_temperature,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], condition: str | None = None) -> Calibration:
        """Read what :meth:`to_dict` wrote (``condition`` for a record that does not say its own).

        What the record itself shows to be unreliable is marked so even where it was written before such fits
        were flagged: a temperature at a search bound, one fitted on a split other than ``val`` or on fewer than
        :data:`MIN_FIT_ITEMS` items.

        Raises:
            ValueError: the method is not temperature scaling, the temperature is not a positive number (``null``
                only with a reason it was not applied), or the condition is unknown.
        """
        if d.get("method", "temperature") != "temperature":
            raise ValueError(f"calibration method {d.get('method')!r} is not supported (only 'temperature')")
        t = d.get("temperature")
        unreliable = str(d.get("unreliable") or "")
        if t is None and unreliable:
            t = math.nan
        elif not isinstance(t, (int, float)) or isinstance(t, bool) or not (t > 0 and math.isfinite(t)):
            raise ValueError(f"calibration temperature must be a positive number, got {t!r}")
        cond = str(d.get("condition") or condition or "views")
        if cond not in CONDITIONS:
            raise ValueError(f"calibration condition {cond!r} is not one of {list(CONDITIONS)}")
        fields = {k: (math.nan if d[k] is None else d[k]) for k in cls.__dataclass_fields__ if k in d}
        cal = cls(**{"fitted_on": "", "items": 0, **{k: math.nan for k in cls.__dataclass_fields__}, **fields,
                     "temperature": float(t), "condition": cond, "unreliable": unreliable})  # fmt: skip
        if not cal.unreliable and math.isfinite(cal.temperature):
            why = ""
            if cal.at_bound:
                why = bound_reason(cal.temperature, cal.items, cal.fitted_on)
            elif cal.fitted_on not in ("val", ""):
                why = f"fitted on the {cal.fitted_on} split, not on held-out validation data"
            elif 0 < cal.items < MIN_FIT_ITEMS:
                why = too_few_reason(cal.items, cal.fitted_on)
            if why:
                cal = dataclasses.replace(cal, unreliable=why)
        return cal


def bound_reason(temperature: float, items: int, fitted_on: str) -> str:
    """Why a temperature at a limit of :data:`T_BOUNDS` is not applied."""
    return (
        f"the fit stopped at its limit T = {temperature:.3g} (search range {T_BOUNDS[0]}-{T_BOUNDS[1]}) on {items} "
        f"{fitted_on} items: the data cannot place T (too few, or confidently wrong, predictions)"
    )


def too_few_reason(items: int, fitted_on: str) -> str:
    """Why a temperature fitted on fewer than :data:`MIN_FIT_ITEMS` items is not applied."""
    return f"only {items} {fitted_on} items (at least {MIN_FIT_ITEMS} are needed for a temperature to be applied)"


def unreliable_reason(
    logits: np.ndarray | torch.Tensor, y_true: np.ndarray, temperature: float, nll_after: float, fitted_on: str
) -> str:
    """Why a temperature fitted on (logits, labels) must not be applied, or ``""`` when nothing speaks against it.

    Checked: fewer than :data:`MIN_FIT_ITEMS` items; one class only; every item predicted right (the likelihood
    then keeps rising as T falls: there is no minimum to find, only the search's limit or the point where the
    float64 likelihood rounds to 1); a likelihood that underflows (mean NLL 0); T at a limit of :data:`T_BOUNDS`.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    n = len(y)
    if n < MIN_FIT_ITEMS:
        return too_few_reason(n, fitted_on)
    classes = np.unique(y)
    if len(classes) < 2:
        return f"every {fitted_on} item has one class ({int(classes[0])}): confidence cannot be checked against errors"
    if bool((z.argmax(1) == y).all()):
        return (
            f"every one of the {n} {fitted_on} items is predicted right (perfect separation): the fit has no "
            "errors to calibrate against and only drives T towards 0"
        )
    if not nll_after > 1e-12:
        return f"the likelihood underflows at T = {temperature:.3g} (mean NLL {nll_after:.3g} nats)"
    if not T_BOUNDS[0] * 1.01 < temperature < T_BOUNDS[1] / 1.01:
        return bound_reason(temperature, n, fitted_on)
    return ""


def as_logits(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities (N, C) from probabilities: logits up to a per-row constant, which softmax ignores."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(p), LOG_PROB_FLOOR)


def apply_temperature(logits: np.ndarray | torch.Tensor, temperature: float | np.ndarray) -> np.ndarray:
    """``softmax(logits / T)`` (N, C) as float64 NumPy; ``temperature`` is one number or one per row (N,)."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    t = torch.as_tensor(np.asarray(temperature, dtype=np.float64))
    return torch.softmax(z / (t[:, None] if t.ndim == 1 else t), dim=-1).numpy()


def negative_log_likelihood(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean ``-log p(true class)`` in nats (probabilities floored at 1e-30)."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(y_true)), np.asarray(y_true, dtype=np.int64)]
    return float(-np.log(np.maximum(p, 1e-30)).mean()) if len(p) else math.nan


def fit_temperature(
    logits: np.ndarray | torch.Tensor,
    y_true: np.ndarray,
    *,
    fitted_on: str = "val",
    condition: str = "views",
    produced_by: str = "the model",
) -> Calibration:
    """The temperature minimising the NLL of ``softmax(logits / T)`` on (logits, labels), and whether it may be
    applied (:func:`unreliable_reason`; an unreliable fit is returned with the reason, never raised).

    Args:
        logits: (N, C) logits or log-probabilities.
        y_true: (N,) class indices.
        fitted_on: the split's name, recorded (a split other than ``val`` is marked unreliable).
        condition: the input condition the logits were produced under (:data:`CONDITIONS`), recorded.
        produced_by: what produced the logits, named when they hold NaN or infinities.

    Returns:
        The fitted :class:`Calibration` with NLL and ECE before (T = 1) and after.

    Raises:
        NonFiniteLogitsError: a row with NaN or infinite entries (naming ``produced_by`` and the rows).
        ValueError: no items, labels and logits of different lengths, or an unknown condition.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {list(CONDITIONS)}, got {condition!r}")
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y_true), dtype=torch.long)
    if z.ndim != 2 or len(z) != len(y):
        raise ValueError(f"logits {tuple(z.shape)} and labels ({len(y)},) do not match")
    if len(y) == 0:
        raise ValueError(f"cannot fit a temperature on an empty {fitted_on} split")
    check_finite(z, produced_by)
    # NLL(T) is smooth in log T; a bounded 1-D search (golden section) needs no step size and cannot diverge.
    lo, hi = math.log(T_BOUNDS[0]), math.log(T_BOUNDS[1])

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z / math.exp(log_t), y))

    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(d)
    t = math.exp((a + b) / 2)
    labels = y.numpy()
    before, after = apply_temperature(z, 1.0), apply_temperature(z, t)
    nll_after = negative_log_likelihood(after, labels)
    why = unreliable_reason(z.numpy(), labels, t, nll_after, fitted_on)
    if not why and fitted_on != "val":
        why = f"fitted on the {fitted_on} split, not on held-out validation data"
    return Calibration(
        temperature=t,
        fitted_on=fitted_on,
        items=len(labels),
        nll_before=negative_log_likelihood(before, labels),
        nll_after=nll_after,
        ece_before=expected_calibration_error(before, labels, ECE_BINS),
        ece_after=expected_calibration_error(after, labels, ECE_BINS),
        condition=condition,
        unreliable=why,
    )


def not_fitted(condition: str, reason: str, fitted_on: str = "val") -> Calibration:
    """A condition without a fit (e.g. no validation item has views): T = 1 is used, ``reason`` says why."""
    nan = math.nan
    return Calibration(nan, fitted_on, 0, nan, nan, nan, nan, condition=condition, unreliable=reason)


@dataclass(frozen=True)
class CalibrationRecord:
    """A checkpoint's calibration record (``config.json["calibration"]``): one :class:`Calibration` per input
    condition (:data:`CONDITIONS`).

    Written as ``{"method": "temperature", "format": 2, "conditions": {"views": {...}, "bare": {...}}}``. A record
    written before there was one temperature per condition (format 1: one temperature at the top level, fitted on
    val with views) is read as the ``views`` temperature, with ``bare`` uncalibrated and :attr:`note` saying so.

    Attributes:
        conditions: condition -> its calibration (each condition of :data:`CONDITIONS` is present).
        note: what an older record held, when it was read from one; else empty.
    """

    conditions: Mapping[str, Calibration]
    note: str = ""

    def __post_init__(self) -> None:
        missing = [c for c in CONDITIONS if c not in self.conditions]
        if missing:
            raise ValueError(f"a calibration record needs every condition {list(CONDITIONS)}; missing {missing}")
        for name, cal in self.conditions.items():
            if cal.condition != name:
                raise ValueError(f"the {name!r} entry of a calibration record holds a {cal.condition!r} fit")

    def __getitem__(self, condition: str) -> Calibration:
        return self.conditions[condition]

    def temperatures(self) -> dict[str, float]:
        """Condition -> the temperature applied (1 where it is not calibrated)."""
        return {c: self.conditions[c].applied_temperature for c in CONDITIONS}

    def summary(self) -> dict[str, dict[str, Any]]:
        """Condition -> ``{"temperature": applied T, "calibrated": bool, "status": text}`` (what outputs show)."""
        return {
            c: {"temperature": cal.applied_temperature, "calibrated": cal.applied, "status": cal.status}
            for c, cal in ((c, self.conditions[c]) for c in CONDITIONS)
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what a checkpoint's ``config.json`` stores under ``calibration``."""
        out: dict[str, Any] = {
            "method": "temperature",
            "format": 2,
            "conditions": {c: self.conditions[c].to_dict() for c in CONDITIONS},
        }
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibrationRecord:
        """Read a checkpoint's calibration record, of this format or the older one-temperature format.

        Raises:
            ValueError: not a temperature-scaling record, or a condition entry that does not read.
        """
        if d.get("method", "temperature") != "temperature":
            raise ValueError(f"calibration method {d.get('method')!r} is not supported (only 'temperature')")
        if "conditions" not in d:  # format 1: one temperature, fitted on val with the views the items had
            views = Calibration.from_dict(d, condition="views")
            note = (
                "a one-temperature calibration record (written before bare images had their own): its temperature "
                "was fitted with views and applies only to requests with views; bare images are uncalibrated"
            )
            bare = not_fitted("bare", "the checkpoint's calibration record has no temperature for bare images (an "
                              "older one-temperature record): refit with `mghft calibrate CHECKPOINT`")  # fmt: skip
            return cls({"views": views, "bare": bare}, note=note)
        conds = d["conditions"]
        if not isinstance(conds, Mapping):
            raise ValueError(f"calibration 'conditions' must be a mapping, got {type(conds).__name__}")
        unknown = sorted(set(conds) - set(CONDITIONS))
        if unknown:
            raise ValueError(f"calibration record has unknown condition(s) {unknown}; known: {list(CONDITIONS)}")
        out = {}
        for c in CONDITIONS:
            if c in conds:
                out[c] = Calibration.from_dict(conds[c], condition=c)
            else:
                out[c] = not_fitted(c, f"the calibration record has no temperature for the {c} condition")
        return cls(out, note=str(d.get("note") or ""))

    @classmethod
    def uncalibrated(cls, reason: str) -> CalibrationRecord:
        """Every condition at T = 1, saying ``reason`` (no record, or calibration switched off)."""
        return cls({c: not_fitted(c, reason, fitted_on="") for c in CONDITIONS})


def checkpoint_calibration(meta: Mapping[str, Any] | None, *, calibrated: bool = True) -> CalibrationRecord:
    """The calibration record of a checkpoint's ``config.json`` (``model.checkpoint_meta``): what is applied, per
    condition, and why a condition is not calibrated (no record, ``calibrated=False``, an unreliable fit).

    Raises:
        ValueError: a record that does not read (:meth:`CalibrationRecord.from_dict`).
    """
    if not calibrated:
        return CalibrationRecord.uncalibrated("calibration switched off (--uncalibrated / calibrated=False)")
    rec = (meta or {}).get("calibration")
    if not rec:
        return CalibrationRecord.uncalibrated(
            "the checkpoint has no calibration record (`mghft calibrate CHECKPOINT` fits one on val)"
        )
    return CalibrationRecord.from_dict(rec)


def calibration_metrics(probs: np.ndarray, y_true: np.ndarray, produced_by: str = "the model") -> dict[str, float]:
    """ECE (15 bins), NLL (nats), Brier score and accuracy of (N, C) probabilities.

    Raises:
        NonFiniteLogitsError: a row holds NaN or infinities (never scored: its argmax would read as class 0).
    """
    p = np.asarray(probs, dtype=np.float64)
    check_finite(p, produced_by)
    y = np.asarray(y_true, dtype=np.int64)
    onehot = np.eye(p.shape[1])[y] if len(y) else np.zeros_like(p)
    return {
        "ece": expected_calibration_error(p, y, ECE_BINS) if len(y) else math.nan,
        "nll": negative_log_likelihood(p, y),
        "brier": float(((p - onehot) ** 2).sum(1).mean()) if len(y) else math.nan,
        "accuracy": float((p.argmax(1) == y).mean()) if len(y) else math.nan,
    }


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per equal-width confidence bin: its range, item count, mean confidence and accuracy (the diagram's data)."""
    p = np.asarray(probs, dtype=np.float64)
    conf, correct = p.max(1), p.argmax(1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        out.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int(m.sum()),
                "confidence": float(conf[m].mean()) if m.any() else math.nan,
                "accuracy": float(correct[m].mean()) if m.any() else math.nan,
            }
        )
    return out


def reliability_diagram(
    curves: Mapping[str, np.ndarray], y_true: np.ndarray, path: str | Path, *, title: str = "Reliability"
) -> Path:
    """A reliability diagram (PNG): accuracy against confidence per bin for each named set of probabilities
    (e.g. ``{"before": p0, "after": p1}``), with the diagonal of perfect calibration and each curve's ECE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.6), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect")
    for (name, probs), marker in zip(curves.items(), "os^D", strict=False):
        rows = [r for r in reliability_bins(probs, y_true) if r["count"]]
        ece = expected_calibration_error(np.asarray(probs), np.asarray(y_true), ECE_BINS)
        ax.plot(
            [r["confidence"] for r in rows],
            [r["accuracy"] for r in rows],
            marker=marker,
            label=f"{name} (ECE {100 * ece:.1f}%)",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def calibration_section(
    logits: np.ndarray,
    y_true: np.ndarray,
    record: CalibrationRecord,
    split: str,
    conditions: Sequence[str] | str,
    produced_by: str = "the model",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Before/after metrics of a calibration record on one split, each item at its condition's temperature as
    a request would be, and the two probability sets (for the diagram).

    Args:
        logits: (N, C) logits or log-probabilities.
        y_true: (N,) class indices.
        record: the checkpoint's calibration record.
        split: the split's name.
        conditions: per item its input condition (N,), or one condition for all (``bare``: every view absent).
        produced_by: what produced the logits, named when they hold NaN or infinities.

    Returns:
        ``{"split", "name" (split, ``_bare`` added for bare), "condition" (views, bare or mixed), "items" (per
        condition), "temperatures" and "status" (per condition present), "before", "after", "bins"}`` and the
        probability sets by legend.
    """
    n = len(y_true)
    conds = [conditions] * n if isinstance(conditions, str) else list(conditions)
    if len(conds) != n:
        raise ValueError(f"{len(conds)} conditions for {n} items")
    temps = record.temperatures()
    t = np.array([temps[c] for c in conds], dtype=np.float64)
    check_finite(np.asarray(logits), produced_by)
    before, after = apply_temperature(logits, 1.0), apply_temperature(logits, t)
    present = [c for c in CONDITIONS if c in conds]
    kind = present[0] if len(present) == 1 else ("mixed" if present else str(conditions))
    section = {
        "split": split,
        "name": split + ("_bare" if kind == "bare" else ""),
        "condition": kind,
        "items": {c: conds.count(c) for c in present},
        "temperatures": {c: temps[c] for c in present},
        "status": {c: record[c].status for c in present},
        "before": calibration_metrics(before, y_true, produced_by),
        "after": calibration_metrics(after, y_true, produced_by),
        "bins": ECE_BINS,
    }
    label = ", ".join(f"{c} T = {temps[c]:.3g}" for c in present)
    return section, {"before (T = 1)": before, f"after ({label})": after}


def markdown_section(sections: Sequence[Mapping[str, Any]]) -> str:
    """A report section: ECE, NLL and Brier before/after temperature scaling on each split and condition."""
    lines = [
        "## Calibration (temperature scaling fitted on val, one temperature per input condition)",
        "",
        "| split | condition | T (items) | ECE before | ECE after | NLL before | NLL after | Brier before | "
        "Brier after |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes: dict[str, str] = {}
    for s in sections:
        b, a = s["before"], s["after"]
        temps = "; ".join(f"{c} {t:.3f} ({s['items'][c]})" for c, t in s["temperatures"].items())
        lines.append(
            f"| {s['split']} | {CONDITION_TITLES.get(s['condition'], s['condition'])} | {temps} | "
            f"{100 * b['ece']:.2f}% | {100 * a['ece']:.2f}% | {b['nll']:.4f} | {a['nll']:.4f} | {b['brier']:.4f} | "
            f"{a['brier']:.4f} |"
        )
        notes.update(s["status"])
    lines += [""] + [f"- {notes[c]}" for c in CONDITIONS if c in notes]
    lines += [
        "",
        "Each item gets the temperature of its condition, as a request would: `views` when at least one view the "
        "model was trained with is present, `bare` when every view is absent. An uncalibrated condition uses "
        "T = 1. ECE: 15 equal-width confidence bins. Reliability diagrams: `reliability_<split>.png` "
        "(`_bare` added for the bare-image rows).",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "CONDITIONS",
    "MIN_FIT_ITEMS",
    "Calibration",
    "CalibrationRecord",
    "NonFiniteLogitsError",
    "apply_temperature",
    "check_finite",
    "checkpoint_calibration",
    "input_condition",
    "not_fitted",
    "unreliable_reason",
    "as_logits",
    "calibration_metrics",
    "calibration_section",
    "fit_temperature",
    "markdown_section",
    "negative_log_likelihood",
    "reliability_bins",
    "reliability_diagram",
]
