"""A label typo never becomes a class: near-duplicate labels stop the run naming the rows, unless the classes are
declared (``data.classes``), and a label outside declared classes names its row and the class it is close to."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mghft.cli import main
from mghft.data import read_manifest
from mghft.data.errors import DataFormatError
from mghft.train.config import DataConfig
from mghft.train.data import load_splits
from tests import synthetic


def _with_typo(tmp_path: Path) -> tuple[Path, int]:
    """The synthetic manifest with one `happiness` row relabelled `happpiness`; returns it and that row's line."""
    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=10)
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    index = next(i for i, r in enumerate(rows) if r[1] == "happiness")
    rows[index][1] = "happpiness"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return manifest, index + 1


@pytest.mark.parametrize(
    ("a", "b", "close"),
    [
        ("happiness", "happpiness", True),
        ("happiness", "hapiness", True),
        ("sadness", "sadnes", True),
        ("surprise", "suprrise", True),  # two adjacent letters swapped
        ("Anger", "anger", True),
        ("main_role", "main role", True),
        ("anger", "fear", False),
        ("sad", "mad", False),  # short names: only case, spaces, _ and - count
        ("0", "1", False),
        ("happiness", "sadness", False),
    ],
)
def test_near_duplicate_names(a: str, b: str, close: bool) -> None:
    from mghft.data.classes import near_duplicate

    assert near_duplicate(a, b) is close and near_duplicate(b, a) is close


def test_a_typo_label_stops_reading_naming_its_row_unless_the_classes_are_declared(tmp_path: Path) -> None:
    manifest, line = _with_typo(tmp_path)
    with pytest.raises(DataFormatError) as err:
        read_manifest(manifest)
    assert err.value.line == line and err.value.field == "label"
    assert f"line {line}" in str(err.value) and "'happpiness'" in str(err.value) and "'happiness'" in str(err.value)
    assert "data.classes" in (err.value.hint or "")
    with pytest.raises(DataFormatError, match=f"line {line}"):
        load_splits(DataConfig(format="manifest", root=str(manifest)), tmp_path / "run")
    declared = ("anger", "happiness", "happpiness", "sadness")  # the class list says it is a class of its own
    parts = load_splits(DataConfig(format="manifest", root=str(manifest), classes=declared), tmp_path / "run")
    assert parts["train"].classes == declared
    with pytest.raises(DataFormatError, match=r"unknown class 'happpiness'.*did you mean 'happiness'"):
        read_manifest(manifest, classes=["anger", "happiness", "sadness"])


def test_a_typo_class_folder_is_refused(tmp_path: Path) -> None:
    from mghft.data import read_folder

    synthetic.write_images(tmp_path, 2)
    (tmp_path / "images" / "sadness").rename(tmp_path / "images" / "Sadness ")
    (tmp_path / "images" / "sadnes").mkdir()
    synthetic.sticker("sadness", __import__("random").Random(0)).save(tmp_path / "images" / "sadnes" / "x.png")
    with pytest.raises(DataFormatError, match="looks like a typo"):
        read_folder(tmp_path / "images")


def test_training_stops_on_a_typo_label_before_anything_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, line = _with_typo(tmp_path)
    config = tmp_path / "train.yaml"
    config.write_text(
        f"model: mghft_tiny\npretrained: false\nepochs: 1\nmax_steps_per_epoch: 1\nbootstrap: 0\nworkers: 0\n"
        f"tensorboard: false\nprogress: false\noutput: {tmp_path / 'run'}\n"
        f"data: {{format: manifest, root: {manifest}}}\n"
    )
    assert main(["train", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"line {line}" in err and "happpiness" in err and "data.classes" in err
    assert not (tmp_path / "run" / "last").exists()


def test_declared_classes_are_for_readers_without_their_own(tmp_path: Path) -> None:
    from mghft.config import ConfigError

    with pytest.raises(ConfigError, match="data.classes: the ser30k reader has its own classes"):
        load_splits(DataConfig(format="ser30k", root=str(tmp_path), classes=("a", "b")), tmp_path / "run")
    with pytest.raises(ConfigError, match="data.classes: at least two distinct"):
        DataConfig(format="manifest", classes=("a", "a"))
