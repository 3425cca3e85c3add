"""``mghft sweep`` and ``mghft compare`` end to end on generated data whose label is in the text, not the image.

One sweep of 3 configs x 2 seeds (text-only baseline, image-only MGHFT, intention only) with ``mghft_tiny`` is
its third run, then resumed; the table built from it must find the image-only ablation significantly worse, a
config against itself with another seed not significantly different, and refuse runs on other test items.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

import mghft.train.loop as loop
from mghft.cli import main
from mghft.errors import MghftError, UsageError
from mghft.experiments import sweep as sweep_mod
from mghft.experiments.compare import compare
from tests import synthetic

CONFIGS = {
    "text": {"model_overrides": {"arch": "text_only"}},
    "image_only": {"views": []},
    "intention_only": {"model_overrides": {"arch": "text_only"}, "views": ["intention"]},
}


_SAYS = {
    "anger": "an angry, furious, enraged sticker",
    "happiness": "a happy, joyful, delighted sticker",
    "sadness": "a sad, tearful, sorrowful sticker",
}


def write_text_labelled(root: Path, n_per_class: int, seed: int = 0) -> Path:
    """A manifest whose images are drawn independently of the label; only the descriptions carry it."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for label in synthetic.CLASSES:
        for i in range(n_per_class):
            path = root / "images" / f"{label}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            synthetic.sticker(rng.choice(synthetic.CLASSES), rng).save(path)
            desc = synthetic.descriptions(label, rng)
            desc["intention"] = f"{_SAYS[label]} ({desc['intention']})"
            rows.append((path.relative_to(root), label, desc))
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "intention", "style", "main_role", "posture_expression"])
        for p, label, desc in rows:
            w.writerow([str(p), label, *desc.values()])
    return manifest


def _base_config(manifest: Path, features: Path) -> dict:
    return {
        "data": {"format": "manifest", "root": str(manifest), "split_fractions": [0.5, 0.1, 0.4]},
        "model": "mghft_tiny",
        "image_size": 32,
        "pretrained": False,
        "epochs": 6,
        "batch_size": 6,
        "lr": 3e-3,
        "warmup_epochs": 0.3,
        "min_lr": 1e-4,
        "align_weight": 0.0,
        "workers": 0,
        "rand_augment": None,
        "bootstrap": 20,
        "tensorboard": False,
        "progress": False,
        "feature_cache": str(features),
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("sweep")
    manifest = write_text_labelled(tmp / "data", 20)
    base = tmp / "base.yaml"
    base.write_text(yaml.safe_dump(_base_config(manifest, tmp / "features")))
    configs = []
    for name, fields in CONFIGS.items():
        path = tmp / "configs" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump({"base": "../base.yaml", **fields}))
        configs.append(path)
    out = tmp / "sweep"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster than contending for the cores

    # First attempt: interrupted (Ctrl-C) right after the first epoch of image_only seed 0, the third run.
    original = loop._save_last
    target = out / "image_only" / "seed-0" / "last"

    def save_then_interrupt(folder: Path, *args: object, **kwargs: object) -> None:
        original(folder, *args, **kwargs)
        if Path(folder) == target:
            raise KeyboardInterrupt

    loop._save_last = save_then_interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            sweep_mod.run_sweep(configs, [0, 1], out, log=lambda _line: None)
    finally:
        loop._save_last = original
    first = json.loads((out / "sweep.json").read_text())
    finished = {p: (p / "results.json").stat().st_mtime_ns for p in (out / "text" / "seed-0", out / "text" / "seed-1")}

    # Second attempt: the finished runs are skipped, the interrupted one resumed, the rest trained.
    lines: list[str] = []
    try:
        report = sweep_mod.run_sweep(configs, [0, 1], out, log=lines.append)
    finally:
        torch.set_num_threads(threads)
    return {
        "tmp": tmp,
        "out": out,
        "configs": configs,
        "first": first,
        "finished": finished,
        "report": report,
        "lines": lines,
        "manifest": manifest,
    }


def test_interrupted_sweep_resumes_without_redoing_finished_runs(sweep: dict) -> None:
    out = sweep["out"]
    first = {(r["config"], r["seed"]): r["outcome"] for r in sweep["first"]["runs"]}
    assert first[("text", 0)] == first[("text", 1)] == "trained"
    assert first[("image_only", 0)] == "not run" and first[("intention_only", 1)] == "not run"
    outcomes = {(r.name, r.seed): r.outcome for r in sweep["report"].runs}
    assert outcomes == {
        ("text", 0): "skipped",
        ("text", 1): "skipped",
        ("image_only", 0): "resumed",
        ("image_only", 1): "trained",
        ("intention_only", 0): "trained",
        ("intention_only", 1): "trained",
    }
    for folder, mtime in sweep["finished"].items():
        assert (folder / "results.json").stat().st_mtime_ns == mtime  # not retrained
        assert len((folder / "log.csv").read_text().splitlines()) == 1 + 6
    resumed = (out / "image_only" / "seed-0" / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in resumed[1:]] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]  # epoch 1 kept, 2 to 6 added once
    for name in CONFIGS:
        for seed in (0, 1):
            run = out / name / f"seed-{seed}"
            assert yaml.safe_load((run / "train.yaml").read_text())["seed"] == seed
            assert (run / "test" / "predictions.json").is_file()
    assert sweep["lines"][-1] == "6 of 6 runs finished; 0 failed or not run"


def test_compare_builds_the_table_and_finds_the_worse_ablation(sweep: dict) -> None:
    out = sweep["tmp"] / "table"
    result = compare([str(sweep["out"])], out, reference="text", n_draws=500)
    names = [s.name for s in result.systems]
    assert names == ["text", "image_only", "intention_only"]
    text, image_only = result.systems[0], result.systems[1]
    assert text.seeds == [0, 1] and len(text.per_seed["accuracy"]) == 2
    assert result.n_items == 24 and result.unit == "item"
    # The label is only in the text: the text model learns it, the image-only ablation cannot.
    assert min(text.per_seed["accuracy"]) >= 0.9
    assert image_only.paired is not None
    acc = image_only.paired["accuracy"]
    assert acc.p_value is not None and acc.p_value < 0.05 and image_only.mcnemar_p < 0.05
    assert acc.runs == (2, 2) and acc.p_value == max(acc.p_seeds, acc.p_bootstrap)
    assert acc.difference.high < 0 and image_only.significant("accuracy")
    # Holm over the 2 systems x 3 metrics the table tests: the smallest p is multiplied by 6.
    every = [s.paired[m].p_value for s in result.systems[1:] for m in ("accuracy", "macro_f1", "weighted_f1")]
    assert min(s.adjusted[m] for s in result.systems[1:] for m in s.adjusted) == pytest.approx(min(1, 6 * min(every)))
    table = (out / "table.md").read_text()
    assert "`image_only`" in table and "| reference |" in table.replace("reference | – | reference", "reference |")
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["system"] for r in rows] == names
    assert rows[1]["significant_accuracy"] == "true" and rows[1]["runs_tested"] == "2 vs 2"
    assert "Holm-adjusted over the 6 tests" in table and "2 vs 2 runs, Welch's t" in table
    assert float(rows[0]["accuracy_mean"]) == pytest.approx(sum(text.per_seed["accuracy"]) / 2)
    for name in ("table.png", "per_class.md", "per_class.csv", "confusion_text.png", "confusion_image_only.png"):
        assert (out / name).is_file(), name
    per_class = (out / "per_class.md").read_text()
    assert "## `image_only` beside `text`" in per_class and "`image_only` F1" in per_class
    assert "No run here was selected on test." in table


def test_a_config_against_itself_with_another_seed_is_not_significant(sweep: dict) -> None:
    run = sweep["out"] / "text"
    result = compare(
        [f"s0={run / 'seed-0'}", f"s1={run / 'seed-1'}"], sweep["tmp"] / "self", reference="s0", n_draws=500
    )
    other = result.systems[1]
    assert other.paired is not None
    # One run on each side: no spread to test a difference against, so no test and no mark; McNemar is reported.
    assert other.paired["accuracy"].p_value is None and other.mcnemar_p > 0.05
    assert not other.significant("accuracy") and "†" in result.markdown
    assert "1 vs 1 run: no test" in result.markdown and "| no test / " in result.markdown


def test_pairing_runs_with_different_test_items_is_refused(sweep: dict) -> None:
    source = sweep["out"] / "image_only" / "seed-1"
    other = sweep["tmp"] / "other_split"
    shutil.copytree(source, other)
    preds = json.loads((other / "test" / "predictions.json").read_text())
    preds["items"][0]["key"] = "images/somewhere_else.png"  # same scores, one other item
    (other / "test" / "predictions.json").write_text(json.dumps(preds))
    with pytest.raises(MghftError, match=r"cannot pair .*other_split.* their test items differ") as err:
        compare([str(sweep["out"] / "text"), f"other={other}"], sweep["tmp"] / "refused", reference="text")
    assert "somewhere_else" in str(err.value)


def test_zero_shot_runs_join_the_table_and_selection_on_test_is_named(sweep: dict) -> None:
    from mghft.interpret.zeroshot import ZeroShotRecord, summarize

    ref = json.loads((sweep["out"] / "text" / "seed-0" / "test" / "predictions.json").read_text())
    classes = ref["classes"]
    zs = sweep["tmp"] / "zs"
    zs.mkdir()
    records = []
    for i, item in enumerate(ref["items"]):
        pred = None if i == 0 else item["label"] if i % 2 else (item["label"] + 1) % len(classes)
        records.append(
            ZeroShotRecord(
                item["key"],
                "sha",
                item["label"],
                classes[item["label"]],
                pred,
                None if pred is None else classes[pred],
                "answer",
                "",
                "llm",
                "v1",
                {},
            )  # fmt: skip
        )
    (zs / "predictions.jsonl").write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))
    (zs / "summary.json").write_text(json.dumps(summarize(records, classes)))
    # A copy of a run whose record says it was selected on test.
    on_test = sweep["tmp"] / "on_test"
    shutil.copytree(sweep["out"] / "intention_only" / "seed-0", on_test)
    cfg = yaml.safe_load((on_test / "train.yaml").read_text())
    (on_test / "train.yaml").write_text(yaml.safe_dump({**cfg, "select_on": "test"}))
    results = json.loads((on_test / "results.json").read_text())
    (on_test / "results.json").write_text(json.dumps({**results, "selected_on": "test"}))
    metrics = json.loads((on_test / "test" / "metrics.json").read_text())  # and the provenance it recorded
    metrics["provenance"]["selection"]["select_on"] = "test"
    (on_test / "test" / "metrics.json").write_text(json.dumps(metrics))
    result = compare(
        [str(sweep["out"] / "text"), f"llm={zs}", f"public={on_test}"], sweep["tmp"] / "zs_table", n_draws=200
    )
    llm = next(s for s in result.systems if s.name == "llm")
    expected = sum(1 for i in range(len(records)) if i % 2) / len(records)  # the unparseable answer counts as wrong
    assert llm.kind == "zero-shot" and llm.per_seed["accuracy"] == [pytest.approx(expected)]
    assert len(llm.mcnemar) == 2  # against each seed of the reference
    assert result.selected_on_test == ["public seed 0"]
    assert "**Selected on test**" in result.markdown and "public seed 0" in result.markdown
    # A zero-shot run whose request for an item failed lacks that item: refused, with the way out.
    lines = (zs / "predictions.jsonl").read_text().splitlines()
    broken = json.loads(lines[3])
    broken["error"] = "HTTP 500"
    (zs / "predictions.jsonl").write_text("\n".join([*lines, json.dumps(broken)]) + "\n")
    with pytest.raises(MghftError, match="test items differ") as err:
        compare([str(sweep["out"] / "text"), f"llm={zs}"], sweep["tmp"] / "zs_refused")
    assert "rerun `mghft zeroshot`" in (err.value.hint or "")


def test_a_changed_config_is_a_conflict_and_a_failed_run_does_not_stop_the_sweep(sweep: dict, capsys) -> None:
    tmp = sweep["tmp"]
    runs = sweep_mod.plan(sweep["configs"][:1], [0, 1], sweep["out"], ["epochs=4"])
    assert [r.state for r in runs] == ["conflict", "conflict"]
    assert "epochs: 6 saved, 4 now" in runs[0].detail
    broken = tmp / "configs" / "broken.yaml"
    broken.write_text(yaml.safe_dump({"base": "../base.yaml", "data": {"root": str(tmp / "missing.csv")}}))
    typo = tmp / "configs" / "typo.yaml"
    typo.write_text(yaml.safe_dump({"base": "../base.yaml", "epochz": 2}))
    rc = main(["sweep", str(broken), str(typo), sweep["configs"][0].as_posix(), "--seeds", "1",
               "--output", str(sweep["out"])])  # fmt: skip
    assert rc == 2  # a config that does not load stops the sweep before any run
    err = capsys.readouterr().err
    assert "epochz" in err and "nothing was run" in err and not (sweep["out"] / "broken").exists()
    rc = main(["sweep", str(broken), sweep["configs"][0].as_posix(), "--seeds", "1", "--output", str(sweep["out"])])
    assert rc == 1
    text = capsys.readouterr().out
    assert "FAILED   broken seed 0" in text
    assert "skipped  text seed 0" in text and "1 of 2 runs finished; 1 failed or not run" in text
    assert (sweep["out"] / "broken" / "seed-0" / "sweep_error.txt").is_file()


def test_usage_errors() -> None:
    with pytest.raises(UsageError, match="--seeds 'x'"):
        sweep_mod.parse_seeds("x")
    assert sweep_mod.parse_seeds("3") == [0, 1, 2] and sweep_mod.parse_seeds("5,9") == [5, 9]
    with pytest.raises(UsageError, match="distinct"):
        sweep_mod.parse_seeds("1,1")


def test_sweep_under_torchrun_runs_each_run_distributed_and_skips_finished_ones(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    manifest = write_text_labelled(tmp_path / "data", 6)
    config = tmp_path / "text.yaml"
    fields = {**_base_config(manifest, tmp_path / "features"), "epochs": 1, "model_overrides": {"arch": "text_only"}}
    config.write_text(yaml.safe_dump(fields))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mghft"]
    cmd += ["sweep", str(config), "--seeds", "2", "--output", str(tmp_path / "sweep")]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = [tmp_path / "sweep" / "text" / f"seed-{s}" for s in (0, 1)]
    for run in runs:
        assert json.loads((run / "results.json").read_text())["world_size"] == 2
    assert first.stdout.count("2 of 2 runs finished") == 1  # the main process reports, once
    mtimes = [(run / "results.json").stat().st_mtime_ns for run in runs]
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished earlier, skipped") == 2
    assert [(run / "results.json").stat().st_mtime_ns for run in runs] == mtimes


def test_a_provenance_block_in_the_report_is_read(sweep: dict) -> None:
    from mghft.experiments.runs import read_run

    run = sweep["tmp"] / "with_provenance"
    shutil.copytree(sweep["out"] / "text" / "seed-1", run)
    plain = read_run(run)
    assert plain.provenance["source"] == str(run / "test" / "metrics.json")  # the block the run recorded
    assert plain.provenance["select_on"] == "val" and plain.provenance["dataset"] == "manifest"
    assert (plain.system, plain.seed) == ("text", 1)  # from sweep_run.json
    block = {"select_on": "test", "split_sha256": "ab" * 32, "encoder": "bert-base-uncased", "views": ["style"]}
    (run / "test" / "report.json").write_text(json.dumps({"provenance": block}))
    record = read_run(run)
    assert record.selected_on == "test" and record.provenance["split_sha256"] == "ab" * 32
    assert record.provenance["source"] == str(run / "test" / "report.json")
    # A report folder (`mghft evaluate --out`) is a run too; without a record, its selection is unknown.
    evaluation = sweep["tmp"] / "evaluation"
    shutil.copytree(sweep["out"] / "text" / "seed-1" / "test", evaluation)
    ev = read_run(evaluation)
    assert ev.selected_on == "val" and ev.keys == plain.keys and ev.system == "evaluation"  # the report's extra
    metrics = json.loads((evaluation / "metrics.json").read_text())
    del metrics["extra"]["selected_on"]
    del metrics["provenance"]
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    assert read_run(evaluation).selected_on == "unknown"


def test_published_numbers_only_beside_ser30k_runs() -> None:
    import numpy as np

    from mghft.data.ser30k import SER30K_CLASSES
    from mghft.experiments.compare import _published
    from mghft.experiments.runs import RunRecord

    def run(dataset: str) -> RunRecord:
        return RunRecord("m", Path("r"), "trained", 0, list(SER30K_CLASSES), ["a"], [None], np.zeros(1, int),
                         np.zeros(1, int), "val", {"dataset": dataset})  # fmt: skip

    classes = list(SER30K_CLASSES)
    assert [p.system for p in _published(classes, "auto", [run("ser30k")])][0] == "MGHFT"
    assert _published(classes, "auto", [run("manifest")]) == []  # the demo's emoji share SER30K's classes
    assert _published(classes, "ser30k", [run("manifest")]) and not _published(classes, "none", [run("ser30k")])


def test_a_saved_config_without_a_newer_field_is_not_a_conflict(tmp_path: Path) -> None:
    from mghft.train.config import TrainConfig

    wanted = TrainConfig(output=str(tmp_path)).to_dict()
    saved = {k: v for k, v in wanted.items() if k != "patience"}  # written before `patience` existed
    saved["data"] = {k: v for k, v in wanted["data"].items() if k != "check_images"}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(saved))
    (tmp_path / "results.json").write_text("{}")
    defaults = TrainConfig().to_dict()
    assert sweep_mod._state(tmp_path, wanted, defaults) == ("done", "")
    state, detail = sweep_mod._state(tmp_path, {**wanted, "patience": 3}, defaults)
    assert state == "conflict" and "patience: None saved, 3 now" in detail
