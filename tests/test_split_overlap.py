"""Train, val and test never share an item: by key (the same listed image) or by content (a copy of its bytes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mghft.train.config import DataConfig
from mghft.train.data import SplitOverlapError, load_splits
from tests import synthetic


def _annotations(root: Path, split: str) -> tuple[Path, dict]:
    path = root / "Annotations" / "image-level" / f"{split}.json"
    return path, json.loads(path.read_text())


def test_an_item_listed_in_train_and_test_is_an_error_naming_it(tmp_path: Path) -> None:
    root = synthetic.write_ser30k(tmp_path / "ser", 5)
    _, train = _annotations(root, "train")
    test_path, test = _annotations(root, "test")
    leaked = train["annotations"][0]
    test["annotations"].append(leaked)
    test_path.write_text(json.dumps(test))
    key = f"{leaked['topic']}/{leaked['file_name']}"
    with pytest.raises(SplitOverlapError, match=r"1 item\(s\) are listed in more than one split") as err:
        load_splits(DataConfig(format="ser30k", root=str(root)), tmp_path / "run")
    assert f"{key} in test and train: {root / 'Images' / key}" in str(err.value)
    # Allowing duplicate images does not allow the same item twice.
    with pytest.raises(SplitOverlapError, match=key):
        load_splits(DataConfig(format="ser30k", root=str(root), allow_duplicate_images=True), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "duplicates.json").read_text())
    assert [e["key"] for e in saved["keys"]] == [key] and saved["keys"][0]["splits"] == ["test", "train"]


def test_a_copy_of_a_training_image_in_test_is_an_error_unless_allowed(tmp_path: Path) -> None:
    root = synthetic.write_ser30k(tmp_path / "ser", 5)
    _, train = _annotations(root, "train")
    test_path, test = _annotations(root, "test")
    src = train["annotations"][0]
    copy = {**src, "topic": "copies", "file_name": "copy.png"}
    (root / "Images" / "copies").mkdir()
    shutil.copy(root / "Images" / src["topic"] / src["file_name"], root / "Images" / "copies" / "copy.png")
    test["annotations"].append(copy)
    test_path.write_text(json.dumps(test))
    cfg = DataConfig(format="ser30k", root=str(root))
    with pytest.raises(SplitOverlapError, match=r"1 image\(s\) appear in more than one split") as err:
        load_splits(cfg, tmp_path / "run")
    message = str(err.value)
    assert f"train: {root / 'Images' / src['topic'] / src['file_name']}" in message
    assert f"test: {root / 'Images' / 'copies' / 'copy.png'}" in message
    assert "data.allow_duplicate_images" in (err.value.hint or "")
    parts = load_splits(DataConfig(format="ser30k", root=str(root), allow_duplicate_images=True), tmp_path / "ok")
    assert "copies/copy.png" in {s.key for s in parts["test"].samples}
    saved = json.loads((tmp_path / "ok" / "duplicates.json").read_text())
    assert saved["keys"] == [] and saved["images"][0]["splits"] == ["test", "train"]


def test_disjoint_splits_pass_and_write_no_report(tmp_path: Path) -> None:
    root = synthetic.write_ser30k(tmp_path / "ser", 5)
    parts = load_splits(DataConfig(format="ser30k", root=str(root)), tmp_path / "run")
    assert sum(len(p) for p in parts.values()) == 15
    assert not (tmp_path / "run" / "duplicates.json").exists()
