"""Resume and evaluate look at the data's content: each item's label and the text of its descriptions are
fingerprinted, a change is listed item by item, and provenance.json is never rewritten (a resume appends the
block of its stretch to resumes.jsonl)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mghft.train.config import DataConfig
from mghft.train.resume import ResumeError
from tests import synthetic


def _rewrite(manifest: Path, change: object) -> None:
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        change(row)  # type: ignore[operator]
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_fingerprint_changes_name_the_items() -> None:
    from mghft.provenance import fingerprint_changes

    saved = {"labels": {"train": {"a.png": "happiness", "b.png": "anger", "c.png": "anger"}},
             "descriptions": {"train": {"a.png": "1", "b.png": "2", "c.png": None}}}  # fmt: skip
    now = {"labels": {"train": {"a.png": "anger", "b.png": "happiness", "c.png": "anger"}},
           "descriptions": {"train": {"a.png": "1", "b.png": "9", "c.png": "3"}}}  # fmt: skip
    assert fingerprint_changes(saved, now) == [
        "2 labels changed (anger -> happiness: 1, happiness -> anger: 1): a.png happiness -> anger, "
        "b.png anger -> happiness",
        "2 of 3 items' descriptions changed: b.png (rewritten), c.png (added)",
    ]
    assert fingerprint_changes(saved, saved) == []
    assert fingerprint_changes(saved, now, only={"c.png"}) == ["1 of 1 items' descriptions changed: c.png (added)"]


def test_resume_refuses_changed_labels_or_descriptions_and_evaluate_lists_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mghft.train.evaluate import evaluate_checkpoint
    from mghft.train.loop import train
    from tests.test_resume import _stopped_run
    from tests.test_train import _cfg

    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=8)
    original = manifest.read_bytes()
    data = DataConfig(format="manifest", root=str(manifest), split_file=str(tmp_path / "split.json"))
    cfg = _cfg(tmp_path, data, epochs=2, bootstrap=0)
    _stopped_run(monkeypatch, cfg, 1)
    run = Path(cfg.output)
    provenance = (run / "provenance.json").read_bytes()

    swap = {"anger": "happiness", "happiness": "anger"}
    _rewrite(manifest, lambda row: row.update(label=swap.get(row["label"], row["label"])))
    with pytest.raises(ResumeError) as err:
        train(cfg, resume=True)
    message = str(err.value)
    assert "16 labels changed (anger -> happiness: 8, happiness -> anger: 8): images/anger/anger_0.png" in message
    assert "[data]" in message and "data_fingerprint.json" in (err.value.hint or "")
    assert json.loads(provenance)["data"]["content"]["labels"].keys() == {"train", "val", "test"}

    manifest.write_bytes(original)
    _rewrite(manifest, lambda row: row.update(intention=row["intention"] + " (rewritten)"))
    with pytest.raises(ResumeError, match=r"24 of 24 items' descriptions changed"):
        train(cfg, resume=True)
    assert not (run / "resumes.jsonl").exists() and (run / "provenance.json").read_bytes() == provenance

    manifest.write_bytes(original)  # the data the run started with: accepted
    train(cfg, resume=True)
    assert (run / "provenance.json").read_bytes() == provenance  # never rewritten
    [entry] = [json.loads(x) for x in (run / "resumes.jsonl").read_text().splitlines()]
    assert entry["provenance"]["data"]["content"] == json.loads(provenance)["data"]["content"]

    _rewrite(manifest, lambda row: row.update(label=swap.get(row["label"], row["label"])))
    ev = evaluate_checkpoint(run / "best", cfg, out=tmp_path / "eval", bootstrap=0)
    [line] = [w for w in ev["warnings"] if w.startswith("data content")]
    assert "labels changed" in line and "anger -> happiness" in line
    assert "data content" in (tmp_path / "eval" / "report.md").read_text()


def test_an_item_moved_between_splits_is_named() -> None:
    """Swapping a training and a test item in the split file keeps every label and description: still a change."""
    from mghft.provenance import fingerprint_changes

    saved = {"labels": {"train": {"a.png": "anger", "b.png": "joy"}, "test": {"c.png": "anger"}},
             "descriptions": {"train": {"a.png": "1", "b.png": "2"}, "test": {"c.png": "3"}}}  # fmt: skip
    now = {"labels": {"train": {"c.png": "anger", "b.png": "joy"}, "test": {"a.png": "anger"}},
           "descriptions": {"train": {"c.png": "3", "b.png": "2"}, "test": {"a.png": "1"}}}  # fmt: skip
    moved = "2 item(s) moved between splits: a.png train -> test, c.png test -> train"
    assert fingerprint_changes(saved, now) == [moved]
    assert fingerprint_changes(saved, now, only={"a.png"}) == ["1 item(s) moved between splits: a.png train -> test"]
