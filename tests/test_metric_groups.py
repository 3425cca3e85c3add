"""One definition of every score across evaluation, reports and ``mghft compare``; groups kept from the split.

A class that is predicted but absent from the test items must not change the macro-F1 between a run's report
and the comparison table. A split grouped with ``data.group_by`` (a ``pack`` column) must hand its groups to the
test report, ``predictions.json`` and every interval, which must say it resampled packs.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from mghft.data.records import DatasetIndex, Sample
from mghft.data.splits import stratified_split
from mghft.data.validate import validate_index
from mghft.evaluate import bootstrap_ci, compute_metrics, write_report
from mghft.experiments.compare import compare
from mghft.experiments.predictions import write_predictions
from mghft.train.config import DataConfig, TrainConfig
from mghft.train.loop import train
from tests import synthetic


def _evaluation_folder(folder: Path, y: list[int], p: list[int], classes: list[str]) -> dict:
    """A report folder as ``mghft evaluate`` writes it, for labels ``y`` and predictions ``p``."""
    samples = [Sample(Path(f"{i}.png"), label, f"item{i}") for i, label in enumerate(y)]
    index = DatasetIndex("toy-test", Path("."), tuple(classes), samples)
    metrics = compute_metrics(y, p, classes)
    write_report(folder, metrics, ci=bootstrap_ci(y, p, n=50), bootstrap="percentile bootstrap over samples")
    write_predictions(folder, index, np.array(y), np.array(p))
    return metrics


def test_a_class_absent_from_test_but_predicted_gets_one_macro_f1_everywhere(tmp_path: Path) -> None:
    classes = ["anger", "happiness", "sadness"]
    y = [0, 0, 0, 1, 1, 1] * 4
    p = [0, 0, 2, 1, 1, 1] * 4  # "sadness" has no test item but is predicted
    metrics = _evaluation_folder(tmp_path / "run", y, p, classes)
    assert metrics["macro"]["f1"] == pytest.approx((0.8 + 1.0) / 2)
    result = compare([f"run={tmp_path / 'run'}"], tmp_path / "table", n_draws=50)
    system = result.systems[0]
    assert system.per_seed["macro_f1"] == [pytest.approx(metrics["macro"]["f1"])]
    assert system.pooled["macro_f1"].value == pytest.approx(metrics["macro"]["f1"])
    assert system.per_seed["weighted_f1"] == [pytest.approx(metrics["weighted"]["f1"])]
    assert "90.00 [" in result.markdown  # the table prints the report's number
    rows = list(csv.DictReader((tmp_path / "table" / "table.csv").open()))
    assert float(rows[0]["macro_f1_mean"]) == pytest.approx(0.9)


def _pack_manifest(root: Path, n_per_class: int = 12, packs: int = 12) -> tuple[Path, dict[str, str]]:
    """A manifest with a ``pack`` column (not the ``group`` column): packs mix the classes."""
    rng = random.Random(0)
    rows, pack_of = [], {}
    for p, label, desc in synthetic.write_images(root, n_per_class):
        key = str(p.relative_to(root))
        pack_of[key] = f"pack{len(pack_of) % packs}"
        rows.append((key, label, pack_of[key], desc))
    rng.shuffle(rows)
    path = root / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "pack", "intention", "style", "main_role", "posture_expression"])
        for key, label, pack, desc in rows:
            w.writerow([key, label, pack, *desc.values()])
    return path, pack_of


def test_a_split_grouped_by_a_column_gives_its_groups_to_the_parts() -> None:
    samples = [Sample(Path(f"{i}.png"), i % 2, f"k{i}", meta={"pack": f"p{i % 5}"}) for i in range(40)]
    index = DatasetIndex("toy", Path("."), ("a", "b"), samples)
    split = stratified_split(index, (0.6, 0.2, 0.2), group_by="pack")
    test = split.select(index, "test")
    assert test.grouping == "pack" and all(s.group == s.meta["pack"] for s in test.samples)
    assert validate_index(test, "skip", False).index.grouping == "pack"  # kept through the checks
    own = stratified_split(index, (0.6, 0.2, 0.2), group_by="group")  # the reader's own groups: left as they are
    assert own.select(index, "test").grouping is None


def test_training_and_evaluate_report_and_record_the_split_s_packs(tmp_path: Path) -> None:
    from mghft.train.evaluate import evaluate_checkpoint

    manifest, pack_of = _pack_manifest(tmp_path / "data")
    data = DataConfig(format="manifest", root=str(manifest), group_by="pack", split_fractions=(0.5, 0.25, 0.25))
    cfg = TrainConfig(
        data=data,
        output=str(tmp_path / "run"),
        model="mghft_tiny",
        pretrained=False,
        image_size=32,
        epochs=1,
        batch_size=12,
        workers=0,
        rand_augment=None,
        bootstrap=60,
        tensorboard=False,
        progress=False,
        feature_cache=str(tmp_path / "features"),
    )
    train(cfg)
    run = Path(cfg.output)
    for folder in (run / "test", tmp_path / "eval"):
        if folder.name == "eval":
            evaluate_checkpoint(run / "best", cfg, out=folder, bootstrap=60)
        preds = json.loads((folder / "predictions.json").read_text())
        assert [it["group"] for it in preds["items"]] == [pack_of[it["key"]] for it in preds["items"]]
        assert preds.get("grouping") == "pack"
        packs = [it["group"] for it in preds["items"]]
        n_packs = len(set(packs))
        assert 1 < n_packs < len(packs)
        saved = json.loads((folder / "metrics.json").read_text())
        assert f"over {n_packs} packs" in saved["bootstrap"]
        assert f"over {n_packs} packs" in (folder / "report.md").read_text()
        y = [it["label"] for it in preds["items"]]
        p = [it["prediction"] for it in preds["items"]]
        assert saved["ci"] == bootstrap_ci(y, p, n=60, seed=cfg.seed, groups=packs)  # resampled by pack
    assert "over" in json.loads((run / "results.json").read_text())["bootstrap"]
    assert "packs" in json.loads((run / "results.json").read_text())["bootstrap"]
    table = compare([str(run)], tmp_path / "table", n_draws=30)
    assert table.unit == "group" and table.grouping == "pack" and "packs" in table.markdown


def test_a_zero_shot_summary_uses_the_same_macro_f1(tmp_path: Path) -> None:
    from mghft.interpret.zeroshot import f1_scores

    # "sadness" has no item: it joins no macro mean; an unparseable answer (None) is wrong.
    pairs = [(0, 0), (0, 0), (0, 2), (1, 1), (1, None), (1, 1)]
    per_class, macro, weighted = f1_scores(pairs, 3)
    assert per_class[2] == 0.0 and macro == pytest.approx((0.8 + 0.8) / 2)
    assert weighted == pytest.approx(0.8)
    assert f1_scores([], 3) == ([0.0, 0.0, 0.0], 0.0, 0.0)
