"""Metrics against hand computation, bootstrap intervals, the report folder, the published-numbers comparison."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mghft.data import SER30K_CLASSES
from mghft.evaluate import (
    PUBLISHED_SER30K,
    PUBLISHED_SER30K_NOTE,
    bootstrap_ci,
    comparison_table,
    compute_metrics,
    expected_calibration_error,
    write_report,
)

Y_TRUE = [0, 0, 1, 1, 2, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0, 2]


def test_metrics_match_hand_computation() -> None:
    m = compute_metrics(Y_TRUE, Y_PRED, ["a", "b", "c", "d"])  # "d" never occurs: counted with support 0
    assert m["n"] == 7 and m["classes"] == ["a", "b", "c", "d"]
    assert m["accuracy"] == pytest.approx(5 / 7)
    per = {row["class"]: row for row in m["per_class"]}
    assert per["a"] == {"class": "a", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert (
        per["b"]["precision"] == pytest.approx(2 / 3)
        and per["b"]["recall"] == 1.0
        and per["b"]["f1"] == pytest.approx(0.8)
    )
    assert per["c"]["precision"] == 1.0 and per["c"]["recall"] == pytest.approx(2 / 3) and per["c"]["support"] == 3
    assert per["d"] == {"class": "d", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # "d" has no support: named, and left out of the macro averages (not counted as an F1 of 0)
    assert m["macro"]["f1"] == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert m["classes_without_support"] == ["d"] and m["macro_over"] == ["a", "b", "c"]
    assert m["weighted"]["f1"] == pytest.approx((2 * 0.5 + 2 * 0.8 + 3 * 0.8) / 7)
    assert m["weighted"]["recall"] == pytest.approx(5 / 7)
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert "log_loss" not in m
    json.dumps(m)  # plain Python types only


def test_probability_metrics() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.9, 0.07, 0.03], [0.1, 0.9, 0.0], [0.06, 0.9, 0.04]])
    y_true = [0, 2, 1, 0]  # half right, all at confidence 0.9
    m = compute_metrics(y_true, probs.argmax(1), ["x", "y", "z"], probs=probs)
    assert m["top2_accuracy"] == 0.75  # only sample 1 has its class outside the top two
    assert m["log_loss"] == pytest.approx(-(2 * np.log(0.9) + np.log(0.03) + np.log(0.06)) / 4)
    assert m["ece"] == pytest.approx(0.4)
    binary = compute_metrics([0, 1], [0, 1], ["x", "y"], probs=np.array([[0.8, 0.2], [0.3, 0.7]]))
    assert "top2_accuracy" not in binary and binary["log_loss"] == pytest.approx(-(np.log(0.8) + np.log(0.7)) / 2)
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0])) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y_true": [0, 1], "y_pred": [0, 2]}, "y_pred holds class index 2"),
        ({"y_true": [0, 1, 1], "y_pred": [0, 1]}, "3 entries but y_pred has 2"),
        ({"y_true": [], "y_pred": []}, "no samples"),
        ({"y_true": [0, 1], "y_pred": [0, 1], "probs": np.ones((2, 2))}, "sum to 1"),
        ({"y_true": [0, 1], "y_pred": [0, 1], "probs": np.ones((2, 3)) / 3}, r"shape \(2, 2\)"),
    ],
)
def test_metric_input_checks(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(classes=["a", "b"], **kwargs)


def test_bootstrap_intervals() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 3, 300))
    ci = bootstrap_ci(y_true, y_pred, n=200, seed=1)
    assert set(ci) == {"accuracy", "macro_f1", "weighted_f1"}
    for stats in ci.values():
        assert stats["low"] < stats["value"] < stats["high"]
        assert 0.02 < stats["high"] - stats["low"] < 0.25
    assert ci["accuracy"]["value"] == pytest.approx(float(np.mean(y_true == y_pred)))
    assert bootstrap_ci(y_true, y_pred, n=200, seed=1) == ci
    assert bootstrap_ci(y_true, y_pred, n=200, seed=2) != ci
    narrow = bootstrap_ci(y_true, y_pred, n=200, seed=1, confidence=0.5)
    assert narrow["accuracy"]["high"] - narrow["accuracy"]["low"] < ci["accuracy"]["high"] - ci["accuracy"]["low"]
    perfect = bootstrap_ci([0, 1, 2, 1], [0, 1, 2, 1], n=50)
    assert perfect["macro_f1"] == {"value": 1.0, "low": 1.0, "high": 1.0, "std": 0.0}
    absent = bootstrap_ci([0, 0, 0, 1], [0, 0, 0, 1], n=100, seed=0)  # many resamples miss class 1 entirely
    assert absent["macro_f1"]["low"] == 1.0
    custom = bootstrap_ci(y_true, y_pred, {"errors": lambda t, p: float(np.sum(t != p))}, n=50)
    assert custom["errors"]["value"] == float(np.sum(y_true != y_pred))


def test_fast_default_metrics_equal_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, f1_score

    from mghft.evaluate import default_ci_metrics

    fns = default_ci_metrics()
    rng = np.random.default_rng(5)
    for _ in range(20):
        t = rng.integers(0, 6, 40)
        p = np.where(rng.random(40) < 0.5, t, rng.integers(0, 6, 40))
        p[p == 5] = 4  # class 5 is never predicted: precision undefined
        assert fns["accuracy"](t, p) == pytest.approx(accuracy_score(t, p))
        assert fns["macro_f1"](t, p) == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
        assert fns["weighted_f1"](t, p) == pytest.approx(f1_score(t, p, average="weighted", zero_division=0))


def test_published_numbers() -> None:
    by_name = {r.system: r for r in PUBLISHED_SER30K}
    assert by_name["MGHFT"].accuracy == 73.31 and by_name["MGHFT"].f1 == 72.52
    tgca = by_name["TGCA-PVT (MM 2024)"]
    assert (tgca.accuracy, tgca.macro_f1, tgca.weighted_f1) == (71.63, 55.61, 70.93)
    assert tgca.per_class_f1["disgust"] == 17.9 and list(tgca.per_class_f1) == list(SER30K_CLASSES)
    assert by_name["LLaVA-v1.5-7B zero-shot"].macro_f1 == 29.22 and by_name["LORA-V (image only)"].macro_f1 is None
    assert "selected on the test split" in PUBLISHED_SER30K_NOTE


def _ser_metrics() -> dict:
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 7, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 7, 200))
    return compute_metrics(y_true, y_pred, SER30K_CLASSES)


def test_comparison_table() -> None:
    m = _ser_metrics()
    ci = {"accuracy": {"low": 0.5, "high": 0.7, "value": 0.6, "std": 0.01}}
    table = comparison_table(m, ci=ci, name="mghft-small")
    lines = table.splitlines()
    assert lines[0].startswith("| system | accuracy | macro-F1 | weighted-F1")
    ours = lines[2]
    assert ours.startswith("| **mghft-small** (selected on val)")
    assert f"{100 * m['accuracy']:.2f} [50.00, 70.00]" in ours and f"{100 * m['macro']['f1']:.2f}" in ours
    assert "| MGHFT | 73.31 | – | – | 72.52 (likely weighted) |" in table
    assert "| TGCA-PVT (MM 2024) | 71.63 | 55.61 | 70.93 |" in table
    assert all(r.system in table for r in PUBLISHED_SER30K)
    assert PUBLISHED_SER30K_NOTE in table
    assert "| per-class F1 | anger | disgust |" in table and "| TGCA-PVT (MM 2024) | 52.6 | 17.9 |" in table
    # Other class sets get no per-class comparison.
    other = compute_metrics([0, 1], [0, 1], ["x", "y"])
    assert "per-class F1" not in comparison_table(other)


def test_write_report(tmp_path: Path) -> None:
    m = _ser_metrics()
    rng = np.random.default_rng(3)
    ci = bootstrap_ci(rng.integers(0, 7, 50), rng.integers(0, 7, 50), n=20)
    paths = write_report(
        tmp_path / "eval", m, ci=ci, title="SER30K test", extra={"split": "test"}, compare_published=True
    )
    assert {p.name for p in (tmp_path / "eval").iterdir()} == {
        "metrics.json",
        "per_class.csv",
        "confusion_matrix.json",
        "confusion_matrix.png",
        "report.md",
    }
    saved = json.loads(paths["metrics"].read_text())
    assert saved["metrics"]["accuracy"] == m["accuracy"] and saved["ci"] == ci and saved["extra"] == {"split": "test"}
    with paths["per_class"].open() as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == list(SER30K_CLASSES)
    assert sum(int(r["support"]) for r in rows) == 200
    assert float(rows[0]["f1"]) == pytest.approx(m["per_class"][0]["f1"], abs=1e-6)
    confusion = json.loads(paths["confusion_json"].read_text())
    assert confusion["matrix"] == m["confusion_matrix"] and confusion["rows"] == "true"
    with Image.open(paths["confusion_png"]) as png:
        assert png.format == "PNG" and png.width > 300
    report = paths["report"].read_text()
    assert report.startswith("# SER30K test") and "- split: test" in report
    assert f"| accuracy | {100 * m['accuracy']:.2f} | {100 * ci['accuracy']['low']:.2f}" in report
    assert "| anger |" in report and "Against published SER30K results" in report
    plain = write_report(tmp_path / "plain", m)
    assert "Against published" not in plain["report"].read_text()


def test_macro_f1_point_and_interval_use_one_label_set() -> None:
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 6, 400)  # class 6 of 7 never occurs in the split
    y_pred = np.where(rng.random(400) < 0.7, y_true, rng.integers(0, 7, 400))  # ... but is sometimes predicted
    classes = [f"c{i}" for i in range(7)]
    m = compute_metrics(y_true, y_pred, classes)
    ci = bootstrap_ci(y_true, y_pred, n=200, seed=0)
    per = [row["f1"] for row in m["per_class"][:6]]
    assert m["classes_without_support"] == ["c6"]
    assert m["macro"]["f1"] == pytest.approx(float(np.mean(per)))
    assert ci["macro_f1"]["value"] == pytest.approx(m["macro"]["f1"])
    assert ci["macro_f1"]["low"] <= m["macro"]["f1"] <= ci["macro_f1"]["high"]


def test_cluster_bootstrap_draws_whole_groups() -> None:
    # Ten groups of twenty: each group is all right or all wrong, so only whole-group draws see the real spread.
    right = np.repeat(np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0]), 20).astype(bool)
    y_true = np.tile(np.arange(4), 50)
    y_pred = np.where(right, y_true, (y_true + 1) % 4)
    groups = np.repeat(np.arange(10), 20).tolist()
    flat = bootstrap_ci(y_true, y_pred, n=300, seed=0)
    grouped = bootstrap_ci(y_true, y_pred, n=300, seed=0, groups=groups)
    assert flat["accuracy"]["value"] == grouped["accuracy"]["value"] == 0.6
    width = {k: v["accuracy"]["high"] - v["accuracy"]["low"] for k, v in {"flat": flat, "grouped": grouped}.items()}
    assert width["grouped"] > 2 * width["flat"]
    # Each resample's accuracy is a multiple of 1/10: whole groups, never single stickers.
    fns = {"acc": lambda t, p: float(np.mean(t == p))}
    draws = bootstrap_ci(y_true, y_pred, fns, n=50, seed=1, groups=groups)["acc"]
    assert round(draws["low"] * 10, 6) == int(round(draws["low"] * 10))
    from mghft.evaluate import bootstrap_method

    assert (
        bootstrap_method(groups, 300, "topic") == "cluster (group) percentile bootstrap over 10 topics, 300 resamples"
    )
