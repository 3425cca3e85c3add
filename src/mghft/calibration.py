"""Calibrated probabilities: temperature scaling, and how far a model's confidence is from its accuracy.

Temperature scaling (Guo et al., *On Calibration of Modern Neural Networks*, ICML 2017) divides the logits by one
scalar ``T > 0`` fitted to minimise the negative log-likelihood on held-out data (the validation split). It never
changes which class is predicted, only how confident the probabilities are. A checkpoint stores the fitted value as
``config.json["calibration"]``; the predictor, the service and exports apply it.

Expected calibration error uses 15 equal-width confidence bins, as in that paper
(:func:`mghft.evaluate.expected_calibration_error`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mghft.evaluate import ECE_BINS, expected_calibration_error

LOG_PROB_FLOOR = -69.0
"""log(1e-30): log-probabilities are clipped here before fitting (float32 softmax underflows to 0)."""

T_BOUNDS = (0.05, 20.0)
"""Fitted temperatures are kept in this range; a value at a bound means the data could not place it."""


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it did on the data it was fitted on.

    Attributes:
        temperature: T; probabilities are ``softmax(logits / T)``.
        fitted_on: the split (``val``) the fit used.
        items: how many items the fit used.
        nll_before, nll_after: mean negative log-likelihood (nats) on that split, before and after.
        ece_before, ece_after: expected calibration error (15 bins) on that split, before and after.
    """

    temperature: float
    fitted_on: str
    items: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    @property
    def at_bound(self) -> bool:
        """The fit stopped at a limit of :data:`T_BOUNDS`: the validation data could not place T (too few items,
        or predictions that are confidently wrong); the temperature is then unreliable."""
        return not T_BOUNDS[0] * 1.01 < self.temperature < T_BOUNDS[1] / 1.01

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what a checkpoint's ``config.json`` stores under ``calibration``)."""
        return {"method": "temperature", **asdict(self), "at_bound": self.at_bound}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """Read what :meth:`to_dict` wrote.

        Raises:
            ValueError: the method is not temperature scaling or the temperature is not a positive number.
        """
        if d.get("method", "temperature") != "temperature":
            raise ValueError(f"calibration method {d.get('method')!r} is not supported (only 'temperature')")
        t = d.get("temperature")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not (t > 0 and math.isfinite(t)):
            raise ValueError(f"calibration temperature must be a positive number, got {t!r}")
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**{"fitted_on": "", "items": 0, **{k: math.nan for k in cls.__dataclass_fields__}, **fields})


def as_logits(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities (N, C) from probabilities: logits up to a per-row constant, which softmax ignores."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(p), LOG_PROB_FLOOR)


def apply_temperature(logits: np.ndarray | torch.Tensor, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` (N, C) as float64 NumPy."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / float(temperature)
    return torch.softmax(z, dim=-1).numpy()


def negative_log_likelihood(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean ``-log p(true class)`` in nats (probabilities floored at 1e-30)."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(y_true)), np.asarray(y_true, dtype=np.int64)]
    return float(-np.log(np.maximum(p, 1e-30)).mean()) if len(p) else math.nan


def fit_temperature(logits: np.ndarray | torch.Tensor, y_true: np.ndarray, *, fitted_on: str = "val") -> Calibration:
    """The temperature minimising the NLL of ``softmax(logits / T)`` on (logits, labels).

    Args:
        logits: (N, C) logits or log-probabilities.
        y_true: (N,) class indices.
        fitted_on: the split's name, recorded.

    Returns:
        The fitted :class:`Calibration` with NLL and ECE before (T = 1) and after.

    Raises:
        ValueError: no items, or labels and logits of different lengths.
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y_true), dtype=torch.long)
    if z.ndim != 2 or len(z) != len(y):
        raise ValueError(f"logits {tuple(z.shape)} and labels ({len(y)},) do not match")
    if len(y) == 0:
        raise ValueError(f"cannot fit a temperature on an empty {fitted_on} split")
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
    return Calibration(
        temperature=t,
        fitted_on=fitted_on,
        items=len(labels),
        nll_before=negative_log_likelihood(before, labels),
        nll_after=negative_log_likelihood(after, labels),
        ece_before=expected_calibration_error(before, labels, ECE_BINS),
        ece_after=expected_calibration_error(after, labels, ECE_BINS),
    )


def calibration_metrics(probs: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """ECE (15 bins), NLL (nats), Brier score and accuracy of (N, C) probabilities."""
    p = np.asarray(probs, dtype=np.float64)
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
    logits: np.ndarray, y_true: np.ndarray, temperature: float, split: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Before/after metrics of ``temperature`` on one split, and the two probability sets (for the diagram)."""
    before, after = apply_temperature(logits, 1.0), apply_temperature(logits, temperature)
    section = {
        "split": split,
        "temperature": temperature,
        "before": calibration_metrics(before, y_true),
        "after": calibration_metrics(after, y_true),
        "bins": ECE_BINS,
    }
    return section, {"before (T = 1)": before, f"after (T = {temperature:.3g})": after}


def markdown_section(sections: Sequence[Mapping[str, Any]]) -> str:
    """A report section: ECE, NLL and Brier before/after temperature scaling on each split."""
    lines = [
        "## Calibration (temperature scaling fitted on val)",
        "",
        "| split | T | ECE before | ECE after | NLL before | NLL after | Brier before | Brier after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sections:
        b, a = s["before"], s["after"]
        lines.append(
            f"| {s['split']} | {s['temperature']:.3f} | {100 * b['ece']:.2f}% | {100 * a['ece']:.2f}% | "
            f"{b['nll']:.4f} | {a['nll']:.4f} | {b['brier']:.4f} | {a['brier']:.4f} |"
        )
    lines += ["", "ECE: 15 equal-width confidence bins. Reliability diagrams: `reliability_<split>.png`.", ""]
    return "\n".join(lines)


__all__ = [
    "Calibration",
    "apply_temperature",
    "as_logits",
    "calibration_metrics",
    "calibration_section",
    "fit_temperature",
    "markdown_section",
    "negative_log_likelihood",
    "reliability_bins",
    "reliability_diagram",
]
