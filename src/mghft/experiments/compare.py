"""``mghft compare``: one table of runs with seeds, intervals and paired tests against a reference.

Per system (a config's runs over seeds, a zero-shot run, a CLIP baseline): accuracy, macro-F1 and weighted-F1 as
mean ± std over seeds, with the 95% two-level bootstrap interval of that mean (seeds, then groups such as SER30K
topics when the items carry them, else items). Per system other than the reference: the difference of seed means
to the reference on the same test items, tested with the training run *and* the item (or group) as units of
replication (:func:`mghft.stats.paired_bootstrap`), the p-values of every test in the table adjusted by Holm's
method, and McNemar's test on accuracy for each pair of seeds (reported only). Runs are paired item by item
through their keys; runs whose test items (or labels, or groups) differ are refused. Published numbers, all
selected on test, are listed beside ours, and every run selected on test is named.

Files written to ``out``: ``table.md``, ``table.csv``, ``table.png``, ``per_class.md``, ``per_class.csv``,
``confusion_<system>.png`` (the reference's and the system's side by side) and ``compare.json``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mghft import stats
from mghft.errors import MghftError, UsageError
from mghft.experiments.runs import RunRecord, read_all

ALPHA = 0.05
NOT_SIGNIFICANT = "†"
CORRECTION = "Holm"
_METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}


@dataclass
class SystemResult:
    """One row of the table: a system's runs, scores and, unless it is the reference, its paired comparison."""

    name: str
    kind: str
    runs: list[RunRecord]
    per_seed: dict[str, list[float]]
    pooled: dict[str, Any]
    paired: dict[str, stats.PairedDifference] | None = None
    mcnemar: list[tuple[str, str, stats.McNemarResult]] = field(default_factory=list)
    adjusted: dict[str, float | None] = field(default_factory=dict)
    """metric -> Holm-adjusted p-value over every test of the table (``None``: no test was possible)."""

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    @property
    def selected_on(self) -> str:
        return ", ".join(sorted({r.selected_on for r in self.runs}))

    @property
    def mcnemar_p(self) -> float | None:
        """The largest McNemar p-value over the seed pairs (significant only if every pair is)."""
        return max(m.p_value for *_, m in self.mcnemar) if self.mcnemar else None

    def significant(self, metric: str) -> bool:
        """Whether the difference to the reference is significant at ``ALPHA`` after Holm's correction."""
        assert self.paired is not None
        p = self.adjusted.get(metric)
        return p is not None and p < ALPHA

    @property
    def runs_text(self) -> str:
        """What the test rests on, e.g. ``3 vs 3 runs, Welch's t (df 3.9)``."""
        if self.paired is None:
            return "–"
        d = self.paired["accuracy"]
        runs = f"{d.runs[0]} vs {d.runs[1]} run{'s' if max(d.runs) > 1 else ''}"
        if d.p_value is None:
            return f"{runs}: no test"
        kind = "Welch's t" if d.method.startswith("Welch") else "Student's t, equal spread assumed"
        return f"{runs}, {kind} (df {d.df:.1f})"


@dataclass
class Comparison:
    """What ``compare`` found and wrote."""

    systems: list[SystemResult]
    reference: str
    classes: list[str]
    n_items: int
    unit: str
    n_units: int
    grouping: str | None
    n_draws: int
    selected_on_test: list[str]
    unknown_selection: list[str]
    unfinished: list[Path]
    published: list[Any]
    markdown: str = ""
    files: dict[str, Path] = field(default_factory=dict)


def _align(runs: list[RunRecord], reference: RunRecord) -> None:
    """Reorder every run's items into the reference's order; refuse runs whose items or labels differ."""
    ref_keys = reference.keys
    ref_set = set(ref_keys)
    position = {k: i for i, k in enumerate(ref_keys)}
    for r in runs:
        if r.classes != reference.classes:
            raise MghftError(
                f"cannot pair {r.label} ({r.folder}) with {reference.label} ({reference.folder}): their classes "
                f"differ ({r.classes} against {reference.classes})"
            )
        keys = set(r.keys)
        if keys != ref_set:
            only_r, only_ref = sorted(keys - ref_set), sorted(ref_set - keys)
            raise MghftError(
                f"cannot pair {r.label} ({r.folder}) with {reference.label} ({reference.folder}): their test items "
                f"differ ({len(r.keys)} against {len(ref_keys)} items; {len(only_r)} only in the first, e.g. "
                f"{only_r[:3]}; {len(only_ref)} only in the second, e.g. {only_ref[:3]})",
                hint="compare runs evaluated on the same split of the same data (a zero-shot run with failed "
                "requests lacks those items: rerun `mghft zeroshot` to retry them)",
            )
        order = np.array([position[k] for k in r.keys])
        labels = np.empty_like(r.labels)
        preds = np.empty_like(r.predictions)
        labels[order], preds[order] = r.labels, r.predictions
        groups: list[str | None] = [None] * len(ref_keys)
        for i, g in zip(order.tolist(), r.groups, strict=True):
            groups[i] = g
        if not np.array_equal(labels, reference.labels if r is not reference else labels):
            bad = ref_keys[int(np.flatnonzero(labels != reference.labels)[0])]
            raise MghftError(
                f"cannot pair {r.label} ({r.folder}) with {reference.label} ({reference.folder}): item {bad!r} has "
                "another label in each",
                hint="the runs read different annotations; compare runs on the same data",
            )
        r.keys, r.labels, r.predictions, r.groups = list(ref_keys), labels, preds, groups


def _groups(runs: list[RunRecord], unit: str, n: int) -> tuple[np.ndarray, str, str | None]:
    """The resampling unit of every item (its group, or the item itself), the unit, and what the groups are.

    Runs that carry groups must carry the same ones (and the same grouping); a run without groups (a zero-shot run)
    takes those of the others.
    """
    if unit == "item":
        return np.arange(n).astype(str), "item", None
    grouped = [r for r in runs if any(g is not None for g in r.groups)]
    for r in grouped[1:]:
        first = grouped[0]
        if r.groups != first.groups or r.grouping != first.grouping:
            diff = next(((k, a, b) for k, a, b in zip(first.keys, first.groups, r.groups, strict=True) if a != b), None)
            where = f"item {diff[0]!r}: group {diff[1]!r} against {diff[2]!r}; " if diff else ""
            raise MghftError(
                f"cannot pair {r.label} ({r.folder}) with {first.label} ({first.folder}): their test items are "
                f"grouped differently ({where}grouping {first.grouping or 'group'!r} against "
                f"{r.grouping or 'group'!r})",
                hint="compare runs evaluated on the same split of the same data, or pass --unit item",
            )
    if unit == "group" and not grouped:
        raise UsageError("--unit group: the test items carry no group", hint="use --unit item (or auto)")
    if not grouped:
        return np.arange(n).astype(str), "item", None
    # An item without a group is a group of its own.
    groups = np.array(
        [f"group:{g}" if g is not None else f"item:{i}" for i, g in enumerate(grouped[0].groups)], dtype=object
    )
    if unit == "auto" and len(set(groups.tolist())) == n:
        return np.arange(n).astype(str), "item", None
    return groups, "group", grouped[0].grouping or "group"


def _seed_pairs(a: list[RunRecord], b: list[RunRecord]) -> list[tuple[RunRecord, RunRecord]]:
    """Which runs McNemar compares: the same seeds; else a single run against each of the other's; else by order."""
    by_a = {r.seed: r for r in a}
    by_b = {r.seed: r for r in b}
    common = sorted(set(by_a) & set(by_b) - {None})
    if common:
        return [(by_a[s], by_b[s]) for s in common]
    if len(a) == 1 or len(b) == 1:
        return [(x, y) for x in a for y in b]
    key = lambda r: (r.seed is None, r.seed or 0)  # noqa: E731
    return list(zip(sorted(a, key=key), sorted(b, key=key), strict=False))


def compare(
    args: Sequence[str],
    out: str | Path,
    *,
    reference: str | None = None,
    n_draws: int = 1000,
    unit: str = "auto",
    published: str = "auto",
    seed: int = 0,
) -> Comparison:
    """Read the runs under ``args``, compute the table and write its files to ``out``.

    Args:
        args: run, sweep or zero-shot folders, each optionally ``NAME=FOLDER``.
        out: folder for the outputs (created).
        reference: the system every other is compared with; default ``mghft`` when present, else the first.
        n_draws: bootstrap resamples.
        unit: ``"auto"``, ``"item"`` or ``"group"``: what the bootstrap resamples.
        published: ``"auto"``, ``"ser30k"`` or ``"none"``.
        seed: seed of the bootstrap.

    Raises:
        UsageError: an unknown reference, a bad argument.
        MghftError: runs that cannot be paired (different items, labels or classes), unreadable predictions.
    """
    if n_draws < 10:
        raise UsageError(f"--bootstrap {n_draws}: at least 10 resamples")
    runs, unfinished = read_all(args)
    names: list[str] = []
    for r in runs:
        if r.system not in names:
            names.append(r.system)
    if reference is None:
        reference = "mghft" if "mghft" in names else names[0]
    if reference not in names:
        raise UsageError(f"--reference {reference!r}: no such system; the systems are {names}")
    by_system = {
        n: sorted((r for r in runs if r.system == n), key=lambda r: (r.seed is None, r.seed or 0)) for n in names
    }
    ref_runs = by_system[reference]
    _align(runs, ref_runs[0])
    classes = ref_runs[0].classes
    k = len(classes)
    y = ref_runs[0].labels
    groups, used_unit, grouping = _groups(runs, unit, y.size)
    results = []
    for name in [reference, *[n for n in names if n != reference]]:
        rs = by_system[name]
        preds = np.stack([r.predictions for r in rs])
        per_run = [stats.run_scores(y, p, k) for p in preds]
        result = SystemResult(
            name=name,
            kind=rs[0].kind,
            runs=rs,
            per_seed={m: [s[m] for s in per_run] for m in stats.METRICS},
            pooled=stats.pooled_bootstrap(y, preds, k, groups, n_draws=n_draws, seed=seed),
        )
        if name != reference:
            ref_preds = np.stack([r.predictions for r in ref_runs])
            result.paired = stats.paired_bootstrap(y, preds, ref_preds, k, groups, n_draws=n_draws, seed=seed)
            result.mcnemar = [
                (a.label, b.label, stats.mcnemar(a.predictions == y, b.predictions == y))
                for a, b in _seed_pairs(rs, ref_runs)
            ]
        results.append(result)
    # Holm's correction over every test the table marks: each system against the reference, each metric.
    tested = [(s, m) for s in results if s.paired is not None for m in stats.METRICS]
    for (s, m), p in zip(tested, stats.holm([s.paired[m].p_value for s, m in tested]), strict=True):  # type: ignore[index]
        s.adjusted[m] = p
    pub = _published(classes, published, runs)
    comparison = Comparison(
        systems=results,
        reference=reference,
        classes=classes,
        n_items=int(y.size),
        unit=used_unit,
        n_units=len(set(groups.tolist())),
        grouping=grouping,
        n_draws=n_draws,
        selected_on_test=[r.label for r in runs if r.selected_on == "test"],
        unknown_selection=[r.label for r in runs if r.selected_on == "unknown"],
        unfinished=unfinished,
        published=pub,
    )
    _write(comparison, Path(out))
    return comparison


def _published(classes: list[str], which: str, runs: list[RunRecord]) -> list[Any]:
    """SER30K's published numbers: asked for, or (auto) when the classes are SER30K's and every trained run's
    provenance names SER30K as its dataset."""
    from mghft.data.ser30k import SER30K_CLASSES
    from mghft.evaluate import PUBLISHED_SER30K

    if which == "none":
        return []
    trained = [r for r in runs if r.kind != "zero-shot"]  # a zero-shot summary names only the split
    on_ser30k = all("ser30k" in str(r.provenance.get("dataset", "")).lower() for r in trained)
    if which == "ser30k" or (list(classes) == list(SER30K_CLASSES) and on_ser30k):
        return list(PUBLISHED_SER30K)
    return []


# ---------------------------------------------------------------------------------------------------------------
# Formatting


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _score_cell(s: SystemResult, metric: str) -> str:
    mean, std = stats.mean_std(s.per_seed[metric])
    iv = s.pooled[metric]
    spread = f" ± {_pct(std)}" if std is not None else ""
    return f"{_pct(mean)}{spread} [{_pct(iv.low)}, {_pct(iv.high)}]"


def _delta_cell(s: SystemResult, metric: str) -> str:
    if s.paired is None:
        return "reference"
    d = s.paired[metric].difference
    mark = "" if s.significant(metric) else f" {NOT_SIGNIFICANT}"
    return f"{100 * d.value:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]{mark}"


def _p_cell(s: SystemResult, metric: str) -> str:
    """Holm-adjusted p, then the test's own p (≤: at the bootstrap's floor); "no test" with one run each."""
    if s.paired is None:
        return "–"
    d = s.paired[metric]
    if d.p_value is None:
        text = "no test"
    else:
        raw = f"≤{d.floor:.3f}" if d.at_floor else _p(d.p_value)
        text = f"{_p(s.adjusted.get(metric))} ({raw})"
    if metric == "accuracy":
        text += f" / {_p(s.mcnemar_p)}"
    return text


def _unit_name(c: Comparison) -> str:
    """What the groups are, plural: ``packs`` for ``group_by: pack``, else ``groups``."""
    name = c.grouping if c.grouping and c.grouping != "group" else "group"
    return name if name.endswith("s") else name + "s"


def _seeds_text(s: SystemResult) -> str:
    if s.kind == "zero-shot":
        return "1 run"
    return ", ".join(str(x) for x in s.seeds)


def markdown_table(c: Comparison) -> str:
    """The main table, the published numbers, the notes and the runs' provenance, as Markdown."""
    ref = c.reference
    unit = f"{c.n_units} {_unit_name(c)}" if c.unit == "group" else f"{c.n_items} items"
    n_tests = sum(1 for s in c.systems for m in stats.METRICS if s.adjusted.get(m) is not None)
    lines = [
        f"# Test results against `{ref}`",
        "",
        f"Test split: {c.n_items} items, {len(c.classes)} classes. Scores in %: mean ± std over seeds, then the 95% "
        f"interval of that mean by a two-level bootstrap ({c.n_draws} resamples of the seeds, then of the {unit}). "
        f"Δ: the system's seed mean minus `{ref}`'s on the same items. Its test has two units of replication and "
        f"counts a difference only when both reject (p = the larger of the two): the training run (Welch's t-test "
        f"on the per-seed scores; Student's with one run on a side, the other side's spread assumed for both; no "
        f"test with one run on each side) and the {unit.split(' ', 1)[1]} (paired bootstrap, the same resample for "
        f"both). The Δ interval spans both tests' 95% intervals. p: Holm-adjusted over the {n_tests} tests of this "
        f"table, then (in brackets) the test's own p (≤: at the smallest value {c.n_draws} resamples can give); for "
        f"accuracy also McNemar's test (exact below {stats.EXACT_BELOW} discordant items, else chi² with "
        f"continuity correction; the largest p over seed pairs; reported only, one seed pair at a time). "
        f"{NOT_SIGNIFICANT}: not significant at {ALPHA} after Holm's correction. Δ rests on: the runs each side "
        "contributes and the seed test used.",
        "",
        "| system | kind | seeds | selected on | accuracy | macro-F1 | weighted-F1 | Δ rests on | Δ accuracy | p "
        "(Holm (test) / McNemar) | Δ macro-F1 | p (Holm (test)) | Δ weighted-F1 | p (Holm (test)) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in c.systems:
        sel = f"**{s.selected_on}**" if "test" in s.selected_on else s.selected_on
        cells = [
            f"`{s.name}`",
            s.kind,
            _seeds_text(s),
            sel,
            *[_score_cell(s, m) for m in stats.METRICS],
            s.runs_text,
        ]
        for m in stats.METRICS:
            cells += [_delta_cell(s, m), _p_cell(s, m)]
        lines.append("| " + " | ".join(cells) + " |")
    if c.published:
        from mghft.evaluate import PUBLISHED_SER30K_NOTE

        lines += [
            "",
            "Published numbers (single runs, **selected on test**; not comparable with runs selected on val):",
            "",
            "| system | accuracy | macro-F1 | weighted-F1 | F1 (averaging not stated) | source |",
            "|---|---|---|---|---|---|",
        ]
        f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        for p in c.published:
            lines.append(
                f"| {p.system} | {f(p.accuracy)} | {f(p.macro_f1)} | {f(p.weighted_f1)} | {f(p.f1)} | {p.source} |"
            )
        lines += ["", PUBLISHED_SER30K_NOTE]
    lines += ["", "## Notes", ""]
    if c.selected_on_test:
        lines.append(
            "- **Selected on test** (optimistic, not comparable with a val-selected run): "
            + ", ".join(c.selected_on_test)
            + (", and every published number." if c.published else ".")
        )
    elif c.published:
        lines.append("- **Selected on test**: every published number; none of the runs here.")
    else:
        lines.append("- No run here was selected on test.")
    if c.unknown_selection:
        lines.append("- Selection split not recorded (treat as possibly test): " + ", ".join(c.unknown_selection))
    if c.unfinished:
        lines.append("- Unfinished runs left out: " + ", ".join(str(p) for p in c.unfinished))
    for s in c.systems:
        if s.paired is not None and s.mcnemar:
            pairs = "; ".join(f"{a} vs {b}: b={m.b}, c={m.c}, p={_p(m.p_value)} ({m.method})" for a, b, m in s.mcnemar)
            lines.append(f"- McNemar, `{s.name}`: {pairs}")
    lines += ["", "## Runs", "", "| run | folder | selected on | provenance |", "|---|---|---|---|"]
    for s in c.systems:
        for r in s.runs:
            prov = ", ".join(f"{k}: {v}" for k, v in r.provenance.items() if k != "source" and v not in (None, ""))
            lines.append(f"| {r.label} | {r.folder} | {r.selected_on} | {prov} (from {r.provenance.get('source')}) |")
    return "\n".join(lines) + "\n"


def _per_class_table(c: Comparison, systems: list[SystemResult]) -> list[str]:
    head = "| class | support | " + " | ".join(f"`{s.name}` {m}" for s in systems for m in ("P", "R", "F1")) + " |"
    lines = [head, "|---|---" + "|---|---|---" * len(systems) + "|"]
    for i, name in enumerate(c.classes):
        row = [name, str(systems[0].pooled["per_class"][i]["support"])]
        for s in systems:
            pc = s.pooled["per_class"][i]
            row += [
                f"{_pct(pc[m].value)} [{_pct(pc[m].low)}, {_pct(pc[m].high)}]" for m in ("precision", "recall", "f1")
            ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def per_class_markdown(c: Comparison) -> str:
    """Per-class precision, recall and F1 (means over seeds, two-level bootstrap intervals), reference beside each."""
    ref = c.systems[0]
    lines = [
        "# Per-class scores (%)",
        "",
        "Means over seeds, with 95% two-level bootstrap intervals (seeds, then the table's resampling unit); support "
        "is that of the test items. Confusion matrices sum all seeds' predictions (rows: true class).",
        "",
        f"## `{ref.name}` (reference)",
        "",
        *_per_class_table(c, [ref]),
        "",
        f"![confusion matrix of {ref.name}]({_confusion_name(ref.name)})",
    ]
    for s in c.systems[1:]:
        lines += ["", f"## `{s.name}` beside `{ref.name}`", "", *_per_class_table(c, [ref, s]), ""]
        lines.append(f"![confusion matrices of {ref.name} and {s.name}]({_confusion_name(s.name)})")
    return "\n".join(lines) + "\n"


def _confusion_name(system: str) -> str:
    return "confusion_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", system) + ".png"


# ---------------------------------------------------------------------------------------------------------------
# Files


def _write(c: Comparison, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    c.markdown = markdown_table(c)
    files = {
        "table_md": out / "table.md",
        "table_csv": out / "table.csv",
        "table_png": out / "table.png",
        "per_class_md": out / "per_class.md",
        "per_class_csv": out / "per_class.csv",
        "json": out / "compare.json",
    }
    files["table_md"].write_text(c.markdown, encoding="utf-8")
    files["per_class_md"].write_text(per_class_markdown(c), encoding="utf-8")
    _write_csv(c, files["table_csv"])
    _write_per_class_csv(c, files["per_class_csv"])
    files["json"].write_text(json.dumps(_as_json(c), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _plot_table(c, files["table_png"])
    ref = c.systems[0]
    files[f"confusion:{ref.name}"] = _plot_confusions(c, [ref], out / _confusion_name(ref.name))
    for s in c.systems[1:]:
        files[f"confusion:{s.name}"] = _plot_confusions(c, [ref, s], out / _confusion_name(s.name))
    c.files = files


def _write_csv(c: Comparison, path: Path) -> None:
    header = ["system", "kind", "seeds", "selected_on"]
    for m in stats.METRICS:
        header += [f"{m}_mean", f"{m}_std", f"{m}_low", f"{m}_high"]
    for m in stats.METRICS:
        header += [f"delta_{m}", f"delta_{m}_low", f"delta_{m}_high", f"p_{m}", f"p_holm_{m}"]
        header += [f"p_seeds_{m}", f"p_bootstrap_{m}", f"significant_{m}"]
    header += ["runs_tested", "seed_test", "mcnemar_p", "f1_averaging_not_stated"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for s in c.systems:
            row: list[Any] = [s.name, s.kind, " ".join(str(x) for x in s.seeds), s.selected_on]
            for m in stats.METRICS:
                mean, std = stats.mean_std(s.per_seed[m])
                row += [f"{mean:.6f}", "" if std is None else f"{std:.6f}", f"{s.pooled[m].low:.6f}"]
                row += [f"{s.pooled[m].high:.6f}"]
            g = lambda v: "" if v is None else f"{v:.6g}"  # noqa: E731
            for m in stats.METRICS:
                if s.paired is None:
                    row += [""] * 8
                else:
                    d = s.paired[m]
                    row += [f"{d.difference.value:.6f}", f"{d.difference.low:.6f}", f"{d.difference.high:.6f}"]
                    row += [g(d.p_value), g(s.adjusted.get(m)), g(d.p_seeds), g(d.p_bootstrap)]
                    row += [str(s.significant(m)).lower()]
            tested = "" if s.paired is None else " vs ".join(str(n) for n in s.paired["accuracy"].runs)
            row += [tested, "" if s.paired is None else s.paired["accuracy"].method]
            row += ["" if s.mcnemar_p is None else f"{s.mcnemar_p:.6g}", ""]
            w.writerow(row)
        for p in c.published:
            blank = [""] * (len(header) - 4)
            values = {
                "accuracy_mean": p.accuracy,
                "macro_f1_mean": p.macro_f1,
                "weighted_f1_mean": p.weighted_f1,
                "f1_averaging_not_stated": p.f1,
            }
            for name, v in values.items():
                if v is not None:
                    blank[header.index(name) - 4] = f"{v / 100:.6f}"
            w.writerow([p.system, "published", "", "test", *blank])


def _write_per_class_csv(c: Comparison, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["system", "class", "support", "metric", "value", "low", "high"])
        for s in c.systems:
            for name, pc in zip(c.classes, s.pooled["per_class"], strict=True):
                for m in ("precision", "recall", "f1"):
                    iv = pc[m]
                    w.writerow([s.name, name, pc["support"], m, f"{iv.value:.6f}", f"{iv.low:.6f}", f"{iv.high:.6f}"])


def _as_json(c: Comparison) -> dict[str, Any]:
    def system(s: SystemResult) -> dict[str, Any]:
        return {
            "name": s.name,
            "kind": s.kind,
            "runs": [
                {"seed": r.seed, "folder": str(r.folder), "selected_on": r.selected_on, "provenance": r.provenance}
                for r in s.runs
            ],
            "per_seed": s.per_seed,
            "mean_std": {m: stats.mean_std(v) for m, v in s.per_seed.items()},
            "pooled": {m: s.pooled[m].as_dict() for m in stats.METRICS},
            "per_class": [
                {"class": name, "support": pc["support"], **{m: pc[m].as_dict() for m in ("precision", "recall", "f1")}}
                for name, pc in zip(c.classes, s.pooled["per_class"], strict=True)
            ],
            "paired": None
            if s.paired is None
            else {
                m: {**d.as_dict(), "p_holm": s.adjusted.get(m), "significant": s.significant(m)}
                for m, d in s.paired.items()
            },
            "mcnemar": [
                {"a": a, "b": b, "discordant_a": m.b, "discordant_b": m.c, "p_value": m.p_value, "method": m.method}
                for a, b, m in s.mcnemar
            ],
        }

    return {
        "reference": c.reference,
        "classes": c.classes,
        "items": c.n_items,
        "bootstrap": {
            "unit": c.unit,
            "grouping": c.grouping,
            "units": c.n_units,
            "draws": c.n_draws,
            "confidence": 0.95,
            "levels": ["seeds", c.unit],
        },
        "test": {
            "units_of_replication": ["training run (seed)", c.unit],
            "seed_test": "Welch's t on per-seed scores (Student's with one run on a side)",
            "item_test": f"paired {c.unit} bootstrap",
            "decision": "both reject: p = max(p_seeds, p_bootstrap)",
            "correction": CORRECTION,
            "alpha": ALPHA,
        },
        "systems": [system(s) for s in c.systems],
        "selected_on_test": c.selected_on_test,
        "unknown_selection": c.unknown_selection,
        "unfinished": [str(p) for p in c.unfinished],
        "published": [
            {
                "system": p.system,
                "accuracy": p.accuracy,
                "macro_f1": p.macro_f1,
                "weighted_f1": p.weighted_f1,
                "f1": p.f1,
                "selected_on": "test",
                "source": p.source,
            }  # fmt: skip
            for p in c.published
        ],
    }


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_table(c: Comparison, path: Path) -> Path:
    """Accuracy and macro-F1 per system: pooled value with its interval; published numbers as crosses."""
    rows = [s.name for s in c.systems] + [p.system + " (published, test)" for p in c.published]
    fig = _figure(10, 1.2 + 0.4 * len(rows))
    for j, (metric, attr) in enumerate((("accuracy", "accuracy"), ("macro_f1", "macro_f1"))):
        ax = fig.add_subplot(1, 2, j + 1)
        for i, s in enumerate(c.systems):
            iv = s.pooled[metric]
            colour = "tab:red" if s.paired is not None and not s.significant(metric) else "tab:blue"
            if s.paired is None:
                colour = "black"
            ax.errorbar(
                100 * iv.value,
                i,
                xerr=[[100 * (iv.value - iv.low)], [100 * (iv.high - iv.value)]],
                fmt="o",
                color=colour,
                capsize=3,
            )
        for i, p in enumerate(c.published):
            v = getattr(p, attr)
            if v is not None:
                ax.plot(v, len(c.systems) + i, "x", color="grey")
        ax.set_yticks(range(len(rows)), labels=rows if j == 0 else [""] * len(rows))
        ax.invert_yaxis()
        ax.set_xlabel(f"{_METRIC_NAMES[metric]} (%)")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"test, 95% intervals; black: {c.reference}; red: not significantly different from it", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


def _plot_confusions(c: Comparison, systems: list[SystemResult], path: Path) -> Path:
    """Row-normalised confusion matrices (all seeds summed), side by side."""
    k = len(c.classes)
    mats = []
    for s in systems:
        y = s.runs[0].labels
        cm = stats.confusion(y, np.stack([r.predictions for r in s.runs]), k)
        mats.append(cm)
    answer_col = any(m[:, k].sum() > 0 for m in mats)
    cols = [*c.classes, "no answer"] if answer_col else list(c.classes)
    side = max(3.5, 0.6 * len(cols) + 1.5)
    fig = _figure(side * len(systems), side)
    for j, (s, cm) in enumerate(zip(systems, mats, strict=True)):
        counts = cm if answer_col else cm[:, :k]
        rows = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
        ax = fig.add_subplot(1, len(systems), j + 1)
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(cols)), labels=cols, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), labels=list(c.classes) if j == 0 else [""] * k, fontsize=8)
        ax.set_title(f"{s.name} ({len(s.runs)} run{'s' if len(s.runs) > 1 else ''})", fontsize=9)
        ax.set_xlabel("predicted")
        if j == 0:
            ax.set_ylabel("true")
        for a in range(k):
            for b in range(len(cols)):
                colour = "white" if share[a, b] > 0.5 else "black"
                ax.text(b, a, str(int(round(counts[a, b]))), ha="center", va="center", color=colour, fontsize=7)
    fig.savefig(path, dpi=110)
    return path
