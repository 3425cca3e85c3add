"""Evaluation: metrics, bootstrap confidence intervals, confusion matrices, reports, and the published SER30K numbers.

SER30K is very unbalanced (about 40 disgust images in its test split), so accuracy alone says little: reports give
macro and weighted precision/recall/F1, per-class scores and 95% bootstrap intervals. Metric formulas are
scikit-learn's, computed by :func:`mghft.stats.scores`, the one definition ``mghft compare`` uses too (macro
averages over the classes with support); scikit-learn (log loss, top-2 accuracy) and matplotlib come with the
``train`` extra and are imported when first needed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mghft import stats
from mghft.data.ser30k import SER30K_CLASSES

MetricFn = Callable[[np.ndarray, np.ndarray], float]

ECE_BINS = 15


def _sk() -> Any:
    try:
        import sklearn.metrics as skm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("mghft.evaluate needs scikit-learn: pip install 'mghft[train]'") from exc
    return skm


def _labels_array(values: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices")
        arr = arr.astype(np.int64)
    arr = arr.astype(np.int64)
    if num_classes is not None and arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = arr[(arr < 0) | (arr >= num_classes)][0]
        raise ValueError(f"{name} holds class index {bad}, outside 0..{num_classes - 1}")
    return arr


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the support-weighted gap between confidence and accuracy over equal-width
    confidence bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin b holds confidences in (edges[b], edges[b + 1]]; confidence 0 joins the first bin.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def support_labels(y_true: Sequence[int] | np.ndarray, num_classes: int) -> list[int]:
    """The class indices with at least one true sample: the label set of every macro average."""
    t = _labels_array(y_true, "y_true", num_classes)
    return sorted(set(np.unique(t).tolist()))


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    probs: np.ndarray | None = None,
) -> dict[str, Any]:
    """Classification metrics over ``classes``.

    Every class gets its per-class row and its confusion-matrix row and column. Every score comes from
    :func:`mghft.stats.scores` (the definition ``mghft compare`` uses): macro averages run over the classes *with
    support* (at least one true sample); a class absent from ``y_true`` has no recall, so it is named in
    ``classes_without_support`` and left out of the macro means, here and in :func:`bootstrap_ci` alike (weighted
    averages give it weight 0 anyway).

    Args:
        y_true: true class indices.
        y_pred: predicted class indices.
        classes: class names, in index order.
        probs: optional (N, C) predicted probabilities (rows summing to 1); adds ``log_loss``, ``ece`` (expected
            calibration error, 15 bins) and, with more than two classes, ``top2_accuracy``.

    Returns:
        ``{"n", "classes", "accuracy", "macro": {precision, recall, f1}, "weighted": {...}, "per_class": [{class,
        precision, recall, f1, support}], "confusion_matrix": [[...]], "macro_over": [names],
        "classes_without_support": [names]}`` (rows true, columns predicted; scores as fractions in [0, 1]; a class
        never predicted scores precision 0).
    """
    classes = list(classes)
    c = len(classes)
    if c < 2:
        raise ValueError(f"need at least two classes, got {classes}")
    t = _labels_array(y_true, "y_true", c)
    p = _labels_array(y_pred, "y_pred", c)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} entries but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("no samples to evaluate")
    labels = list(range(c))
    supported = support_labels(t, c)
    cm = stats.confusion(t, p, c)[:, :c]  # (true, predicted) counts
    sc = stats.scores(cm)
    out: dict[str, Any] = {"n": int(t.size), "classes": classes, "accuracy": float(sc["accuracy"])}
    for average in ("macro", "weighted"):
        out[average] = {m: float(sc[f"{average}_{m}"]) for m in ("precision", "recall", "f1")}
    out["macro_over"] = [classes[i] for i in supported]
    out["classes_without_support"] = [classes[i] for i in labels if i not in set(supported)]
    out["per_class"] = [
        {
            "class": name,
            "precision": float(sc["precision"][i]),
            "recall": float(sc["recall"][i]),
            "f1": float(sc["f1"][i]),
            "support": int(sc["support"][i]),
        }
        for i, name in enumerate(classes)
    ]
    out["confusion_matrix"] = cm.astype(np.int64).tolist()
    if probs is not None:
        skm = _sk()
        pr = np.asarray(probs, dtype=np.float64)
        if pr.shape != (t.size, c):
            raise ValueError(f"probs must have shape ({t.size}, {c}), got {pr.shape}")
        if not np.all(np.isfinite(pr)) or pr.min() < 0 or not np.allclose(pr.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError("probs must be finite, non-negative and sum to 1 per row (apply softmax to logits)")
        if c > 2:  # with two classes the top 2 always hold the answer
            out["top2_accuracy"] = float(skm.top_k_accuracy_score(t, pr, k=2, labels=labels))
        out["log_loss"] = float(skm.log_loss(t, pr, labels=labels))
        out["ece"] = expected_calibration_error(pr, t)
    return out


def default_ci_metrics(labels: Sequence[int] | None = None) -> dict[str, MetricFn]:
    """Accuracy, macro-F1 and weighted-F1 as functions of (y_true, y_pred), each :func:`mghft.stats.scores`.

    The macro mean runs over the classes with support in the items it is given, as :func:`compute_metrics` does;
    ``labels`` only widens the class count (classes above the largest index seen), which changes no score.
    """
    extra = 0 if not labels else int(max(labels)) + 1

    def score(t: np.ndarray, p: np.ndarray, name: str) -> float:
        k = max(int(max(t.max(), p.max())) + 1, extra)
        return stats.run_scores(t, p, k)[name]

    return {name: (lambda t, p, name=name: score(t, p, name)) for name in stats.METRICS}


def bootstrap_ci(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    metrics: Mapping[str, MetricFn] | None = None,
    *,
    n: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    groups: Sequence[Hashable | None] | None = None,
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap intervals: resample the test set with replacement ``n`` times, recompute each metric.

    With ``groups`` (one per sample: a SER30K topic, a manifest ``group``) this is a cluster bootstrap: whole
    groups are drawn with replacement, since stickers of one group are not independent; a sample whose group is
    ``None`` is a group of its own.

    Args:
        y_true, y_pred: class indices.
        metrics: name -> fn(y_true, y_pred) -> float, e.g. a scikit-learn metric; default accuracy, macro-F1 and
            weighted-F1 by :func:`mghft.stats.scores` (the definition of :func:`compute_metrics`, so the value
            equals its point estimate; each resample is scored by the same definition), all resamples at once.
        n: bootstrap resamples.
        seed: seed of the resampling (same seed, same intervals).
        confidence: interval mass (0.95: the 2.5th and 97.5th percentiles).
        groups: per-sample group ids for a cluster bootstrap, or ``None`` (samples drawn one by one).

    Returns:
        name -> ``{"value": metric on the full set, "low", "high", "std"}``.
    """
    t = _labels_array(y_true, "y_true")
    p = _labels_array(y_pred, "y_pred")
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty and equally long ({t.size} vs {p.size})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if metrics is None:
        return _default_ci(t, p, n, seed, confidence, groups)
    members = _group_members(groups, t.size) if groups is not None else None
    rng = np.random.default_rng(seed)
    draws = {name: np.empty(n) for name in metrics}
    for b in range(n):
        if members is None:
            idx = rng.integers(0, t.size, t.size)
        else:
            idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        for name, fn in metrics.items():
            draws[name][b] = fn(t[idx], p[idx])
    alpha = (1.0 - confidence) / 2
    return {
        name: {
            "value": float(fn(t, p)),
            "low": float(np.quantile(draws[name], alpha)),
            "high": float(np.quantile(draws[name], 1 - alpha)),
            "std": float(draws[name].std(ddof=1)) if n > 1 else 0.0,
        }
        for name, fn in metrics.items()
    }


def _default_ci(
    t: np.ndarray, p: np.ndarray, n: int, seed: int, confidence: float, groups: Sequence[Hashable | None] | None
) -> dict[str, dict[str, float]]:
    """:func:`bootstrap_ci` of the default metrics: the resamples of :func:`mghft.stats.bootstrap_weights` (whole
    groups; a ``None`` group stands alone), each scored by :func:`mghft.stats.scores`."""
    if groups is not None and len(groups) != t.size:
        raise ValueError(f"groups has {len(groups)} entries for {t.size} samples")
    k = int(max(t.max(), p.max())) + 1
    point = stats.run_scores(t, p, k)
    draws = stats.per_run_scores(t, p, k, stats.bootstrap_weights(n, groups, seed, n=t.size))
    alpha = (1.0 - confidence) / 2
    out = {}
    for name in stats.METRICS:
        d = draws[name][:, 0]
        out[name] = {
            "value": point[name],
            "low": float(np.quantile(d, alpha)),
            "high": float(np.quantile(d, 1 - alpha)),
            "std": float(d.std(ddof=1)) if n > 1 else 0.0,
        }
    return out


def _group_members(groups: Sequence[Hashable | None], size: int) -> list[np.ndarray]:
    """Sample indices per group, groups in first-seen order; ``None`` stands alone."""
    if len(groups) != size:
        raise ValueError(f"groups has {len(groups)} entries for {size} samples")
    by_group: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(("sample", i) if g is None else ("group", g), []).append(i)
    return [np.asarray(v, dtype=np.int64) for v in by_group.values()]


def bootstrap_method(groups: Sequence[Hashable | None] | None, n: int, group_name: str = "group") -> str:
    """One line naming the bootstrap: per-sample, or cluster over how many groups (and what they are)."""
    if groups is None:
        return f"percentile bootstrap over samples, {n} resamples"
    count = len(_group_members(groups, len(groups)))
    return f"cluster (group) percentile bootstrap over {count} {group_name}s, {n} resamples"


def sample_groups(groups: Sequence[Hashable | None]) -> Sequence[Hashable | None] | None:
    """``groups`` when the data has any (some sample carries a group), else ``None``: the bootstrap to use."""
    return list(groups) if any(g is not None for g in groups) else None


def index_groups(index: Any, data_format: str) -> tuple[Sequence[Hashable | None] | None, str]:
    """The groups an interval on a split resamples, and what they are called in the report.

    Args:
        index: a split's ``DatasetIndex``: its samples' ``group`` (set by the split when it was grouped by another
            field, named by ``index.grouping``).
        data_format: ``cfg.data.format`` (SER30K's groups are topics).

    Returns:
        ``(groups or None, name)``, e.g. ``(["p1", "p1", "p2", ...], "pack")``.
    """
    name = index.grouping or ("topic" if data_format == "ser30k" else "group")
    return sample_groups([s.group for s in index.samples]), name


# ---------------------------------------------------------------------------------------------------------------
# Published numbers


@dataclass(frozen=True)
class PublishedResult:
    """One published SER30K test result, in percent. ``f1`` is an F1 whose averaging the source does not state."""

    system: str
    accuracy: float
    source: str
    macro_f1: float | None = None
    weighted_f1: float | None = None
    f1: float | None = None
    note: str = ""
    per_class_f1: dict[str, float] = field(default_factory=dict)


PUBLISHED_SER30K_NOTE = (
    "Published SER30K numbers were all selected on the test split (the best test-epoch checkpoint; the public code "
    "never reads val.json), so they are optimistic against a model selected on val and reported on test once."
)

PUBLISHED_SER30K: tuple[PublishedResult, ...] = (
    PublishedResult("MGHFT", 73.31, "MGHFT code repo figure", f1=72.52, note="likely weighted"),
    PublishedResult("BLIP2-2.7B", 70.46, "MGHFT code repo figure", f1=68.81),
    PublishedResult("CLIP-Base", 65.83, "MGHFT code repo figure", f1=63.22),
    PublishedResult("GPT-4o zero-shot", 59.55, "MGHFT code repo figure", f1=60.22),
    PublishedResult("LLaVA-Next zero-shot", 41.82, "MGHFT code repo figure", f1=47.40),
    PublishedResult(
        "TGCA-PVT (MM 2024)",
        71.63,
        "TGCA-PVT supplement",
        macro_f1=55.61,
        weighted_f1=70.93,
        per_class_f1=dict(zip(SER30K_CLASSES, (52.6, 17.9, 54.3, 81.1, 73.1, 62.9, 47.5), strict=True)),
    ),
    PublishedResult("LORA (MM 2022)", 70.75, "TGCA-PVT supplement", macro_f1=54.66, weighted_f1=69.91),
    PublishedResult("LORA-V (image only)", 69.22, "SER30K README"),
    PublishedResult("PVT + BERT", 68.35, "TGCA-PVT supplement", weighted_f1=68.87),
    PublishedResult("LLaVA-v1.5-7B zero-shot", 46.02, "TGCA-PVT supplement", macro_f1=29.22),
)
"""Published SER30K test results (method §9); see ``PUBLISHED_SER30K_NOTE``."""


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _with_ci(value: float, ci: Mapping[str, Mapping[str, float]] | None, name: str) -> str:
    text = f"{100 * value:.2f}"
    if ci and name in ci:
        text += f" [{100 * ci[name]['low']:.2f}, {100 * ci[name]['high']:.2f}]"
    return text


def comparison_table(
    metrics: Mapping[str, Any],
    *,
    ci: Mapping[str, Mapping[str, float]] | None = None,
    name: str = "this model",
    selected_on: str = "val",
    published: Sequence[PublishedResult] = PUBLISHED_SER30K,
) -> str:
    """Markdown: our SER30K test numbers (with 95% intervals if given) beside the published ones, in percent.

    When ``metrics`` are over the SER30K classes, a per-class F1 table against TGCA-PVT follows.
    """
    rows = [
        "| system | accuracy | macro-F1 | weighted-F1 | F1 (averaging not stated) | source |",
        "|---|---|---|---|---|---|",
        f"| **{name}** (selected on {selected_on}) | {_with_ci(metrics['accuracy'], ci, 'accuracy')} "
        f"| {_with_ci(metrics['macro']['f1'], ci, 'macro_f1')} "
        f"| {_with_ci(metrics['weighted']['f1'], ci, 'weighted_f1')} | – | this evaluation |",
    ]
    for r in published:
        f1 = _pct(r.f1) + (f" ({r.note})" if r.note else "")
        rows.append(
            f"| {r.system} | {_pct(r.accuracy)} | {_pct(r.macro_f1)} | {_pct(r.weighted_f1)} | {f1} | {r.source} |"
        )
    text = "\n".join(rows) + f"\n\n{PUBLISHED_SER30K_NOTE}\n"
    reference = next((r for r in published if r.per_class_f1), None)
    if reference is not None and list(metrics.get("classes", [])) == list(reference.per_class_f1):
        ours = {row["class"]: row["f1"] for row in metrics["per_class"]}
        header = "| per-class F1 | " + " | ".join(reference.per_class_f1) + " |"
        text += "\n" + "\n".join(
            [
                header,
                "|---" * (len(reference.per_class_f1) + 1) + "|",
                f"| {name} | " + " | ".join(f"{100 * ours[c]:.1f}" for c in reference.per_class_f1) + " |",
                f"| {reference.system} | " + " | ".join(f"{v:.1f}" for v in reference.per_class_f1.values()) + " |",
            ]
        )
        text += "\n"
    return text


# ---------------------------------------------------------------------------------------------------------------
# Reports


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path) -> Path:
    """Save a confusion matrix as PNG: colour = share of the true class (row-normalised), text = count."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'mghft[train]'") from exc
    counts = np.asarray(matrix, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    k = len(classes)
    side = max(4.0, 0.7 * k + 2.0)
    fig = Figure(figsize=(side, side))
    FigureCanvasAgg(fig)  # attaches itself to the figure; no pyplot, no global backend switch
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(k), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            colour = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def _plain(value: Any) -> str:
    """A report value for a reader: a mapping as ``key value; …`` (unset entries left out), a list comma-separated,
    a number to 4 decimals (never a Python repr)."""
    if isinstance(value, Mapping):
        parts = [f"{k.replace('_', ' ')} {_plain(v)}" for k, v in value.items() if v not in (None, "", [], {})]
        return "; ".join(parts) if parts else "–"
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value) if value else "none"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


SER30K_STICKERS = 30_739
"""Stickers in SER30K's three official split files together (Liu et al., ACM MM 2022)."""


def ser30k_split_sizes(data: Any) -> dict[str, int] | None:
    """Records per official SER30K split file (``Annotations/image-level/{train,val,test}.json``, or those of
    ``data.annotations``), read from the files; None when ``data.split_file`` replaces them or one is unreadable."""
    if getattr(data, "split_file", None):
        return None
    folder = Path(data.annotations) if data.annotations else Path(data.root) / "Annotations" / "image-level"
    sizes = {}
    for name in ("train", "val", "test"):
        try:
            records = json.loads((folder / f"{name}.json").read_text(encoding="utf-8")).get("annotations")
        except (OSError, ValueError, AttributeError):
            return None
        sizes[name] = len(records) if isinstance(records, list) else 0
    return sizes


def published_split_problem(split_sizes: Mapping[str, int] | None, evaluated: int, split: str) -> str | None:
    """Why an evaluation is not on the split the SER30K numbers were published on, or None when it is.

    The published split is recognised by its content: the official split files (``train``, ``val``, ``test``)
    together hold the :data:`SER30K_STICKERS` stickers of the paper, and every record of ``test`` was evaluated.

    Args:
        split_sizes: records per official split file; None when the split came from elsewhere (a split file).
        evaluated: items evaluated.
        split: the split evaluated.
    """
    if split != "test":
        return f"this is the {split} split; the published numbers are on SER30K's test split"
    if split_sizes is None:
        return "the test split comes from a split file, not SER30K's official test.json the numbers were published on"
    total = sum(split_sizes.get(k, 0) for k in ("train", "val", "test"))
    if total != SER30K_STICKERS:
        return (
            f"this SER30K copy's split files hold {total} stickers (test {split_sizes.get('test', 0)}), not the "
            f"{SER30K_STICKERS} of the published dataset, so its test split is not the one the numbers were "
            "measured on"
        )
    if evaluated != split_sizes.get("test"):
        return f"{evaluated} of the {split_sizes.get('test')} test records were evaluated (the others were left out)"
    return None


def _markdown_report(
    metrics: Mapping[str, Any],
    ci: Mapping[str, Mapping[str, float]] | None,
    title: str,
    extra: Mapping[str, Any] | None,
    comparison: str | None,
    provenance: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
    bootstrap: str | None = None,
    not_compared: str | None = None,
) -> str:
    lines = [f"# {title}", ""]
    if warnings:
        lines += ["> **Evaluation conditions differ from training:**", ">"]
        lines += [f"> - {w}" for w in warnings]
        lines.append("")
    for key, value in (extra or {}).items():
        lines.append(f"- {key.replace('_', ' ')}: {_plain(value)}")
    lines += [f"- samples: {metrics['n']}"]
    if ci and bootstrap:
        lines.append(f"- 95% CI: {bootstrap}")
    absent = metrics.get("classes_without_support") or []
    if absent:
        lines.append(
            f"- classes without support in this split: {', '.join(absent)}; left out of every macro average "
            "(point and interval alike), listed with support 0 below"
        )
    lines.append("")
    lines += ["## Summary (%)", ""]
    lines += ["| metric | value | 95% CI |", "|---|---|---|"]
    summary = [
        ("accuracy", metrics["accuracy"], "accuracy"),
        ("macro precision", metrics["macro"]["precision"], None),
        ("macro recall", metrics["macro"]["recall"], None),
        ("macro F1", metrics["macro"]["f1"], "macro_f1"),
        ("weighted precision", metrics["weighted"]["precision"], None),
        ("weighted recall", metrics["weighted"]["recall"], None),
        ("weighted F1", metrics["weighted"]["f1"], "weighted_f1"),
    ]
    for label, value, ci_name in summary:
        interval = "–"
        if ci and ci_name and ci_name in ci:
            interval = f"{100 * ci[ci_name]['low']:.2f} – {100 * ci[ci_name]['high']:.2f}"
        lines.append(f"| {label} | {100 * value:.2f} | {interval} |")
    for key, label in (("top2_accuracy", "top-2 accuracy (%)"), ("log_loss", "log loss"), ("ece", "ECE (%)")):
        if key in metrics:
            value = metrics[key] if key == "log_loss" else 100 * metrics[key]
            lines.append(f"| {label} | {value:.4f} | – |" if key == "log_loss" else f"| {label} | {value:.2f} | – |")
    lines += ["", "## Per class (%)", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for row in metrics["per_class"]:
        support = row["support"] if row["support"] else "0 (no support: not in macro averages)"
        lines.append(
            f"| {row['class']} | {100 * row['precision']:.2f} | {100 * row['recall']:.2f} | {100 * row['f1']:.2f} "
            f"| {support} |"
        )
    classes = metrics["classes"]
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
    lines.append("| true \\ predicted | " + " | ".join(classes) + " |")
    lines.append("|---" * (len(classes) + 1) + "|")
    for name, row in zip(classes, metrics["confusion_matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", ""]
    if comparison:
        lines += ["## Against published SER30K results (%)", "", comparison]
    elif not_compared:
        lines += ["## Against published SER30K results", "", f"Not compared: {not_compared}", ""]
    if provenance:
        lines += ["## Provenance", "", "```json", json.dumps(provenance, indent=2, ensure_ascii=False), "```", ""]
    return "\n".join(lines)


def write_report(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    *,
    ci: Mapping[str, Mapping[str, float]] | None = None,
    title: str = "Evaluation",
    extra: Mapping[str, Any] | None = None,
    compare_published: bool = False,
    selected_on: str = "val",
    provenance: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
    bootstrap: str | None = None,
    not_compared: str | None = None,
) -> dict[str, Path]:
    """Write an evaluation folder.

    Files: ``metrics.json`` (metrics, ``ci``, ``extra``), ``per_class.csv``, ``confusion_matrix.json``,
    ``confusion_matrix.png`` and ``report.md`` (summary with intervals, per-class table, confusion matrix, and with
    ``compare_published`` the SER30K comparison table).

    Args:
        out_dir: the folder (created).
        metrics: ``compute_metrics`` output.
        ci: ``bootstrap_ci`` output.
        title: the report's heading.
        extra: run facts to record (checkpoint, split, dataset ...): written to ``metrics.json`` and listed in the
            report.
        compare_published: add ``comparison_table`` (SER30K data and classes), unless ``not_compared``.
        not_compared: why the split is not the one the numbers were published on
            (:func:`published_split_problem`); the report says so instead of the table.
        selected_on: how the evaluated checkpoint was chosen, for the comparison table.
        provenance: where the model and data came from (``mghft.provenance``), written to ``metrics.json`` and
            as the report's last section.
        warnings: ways the evaluation differs from training, shown at the top of the report.
        bootstrap: how ``ci`` was computed (``bootstrap_method``), named in the report.

    Returns:
        file kind -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.json",
        "per_class": out / "per_class.csv",
        "confusion_json": out / "confusion_matrix.json",
        "confusion_png": out / "confusion_matrix.png",
        "report": out / "report.md",
    }
    payload = {
        "metrics": dict(metrics),
        "ci": dict(ci) if ci else None,
        **({"bootstrap": bootstrap} if ci and bootstrap else {}),
        **({"extra": dict(extra)} if extra else {}),
        **({"warnings": list(warnings)} if warnings else {}),
        **({"provenance": dict(provenance)} if provenance else {}),
        **({"published_comparison": not_compared or "compared"} if compare_published else {}),
    }
    paths["metrics"].write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with paths["per_class"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for row in metrics["per_class"]:
            writer.writerow(
                [row["class"], f"{row['precision']:.6f}", f"{row['recall']:.6f}", f"{row['f1']:.6f}", row["support"]]
            )
    confusion = {
        "classes": list(metrics["classes"]),
        "rows": "true",
        "columns": "predicted",
        "matrix": metrics["confusion_matrix"],
    }
    paths["confusion_json"].write_text(json.dumps(confusion, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    plot_confusion_matrix(metrics["confusion_matrix"], metrics["classes"], paths["confusion_png"])
    compared = compare_published and not not_compared
    comparison = comparison_table(metrics, ci=ci, selected_on=selected_on) if compared else None
    text = _markdown_report(
        metrics,
        ci,
        title,
        extra,
        comparison,
        provenance,
        warnings,
        bootstrap,
        not_compared if compare_published else None,
    )
    paths["report"].write_text(text, encoding="utf-8")
    return paths
