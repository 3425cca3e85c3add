"""Manifest (CSV, JSONL) and folder-per-class readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mghft.data import DataFormatError, read_folder, read_manifest, write_manifest
from mghft.views import format_official_text


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)
    return path


def test_csv_manifest(tmp_path: Path) -> None:
    _image(tmp_path / "imgs" / "a.png")
    manifest = tmp_path / "sets" / "train.csv"
    manifest.parent.mkdir()
    official = format_official_text({"intention": "mocking", "main_role": "a frog"})
    manifest.write_text(
        "path,label,text,style,descriptions,source\n"
        f'../imgs/a.png,happy,"two\nlines",,"{official}",web\n'
        f"{tmp_path / 'imgs' / 'b.png'},sad,,watercolour,,\n"
        "c.png,,,,,\n",
        encoding="utf-8",
    )
    index = read_manifest(manifest)
    assert index.name == "train" and index.classes == ("happy", "sad")
    a, b, c = index.samples
    assert a.path == manifest.parent / "../imgs/a.png" and a.path.is_file()
    assert a.key == "../imgs/a.png" and a.label == 0 and a.ocr_text == "two\nlines"
    assert a.descriptions == {"intention": "mocking", "main_role": "a frog"}
    assert a.meta == {"source": "web"}
    assert b.path.is_absolute() and b.label == 1 and b.descriptions == {"style": "watercolour"}
    assert c.label is None and c.path == manifest.parent / "c.png" and c.descriptions is None


def test_jsonl_manifest_and_explicit_classes(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    rows = [
        {"path": "x.png", "label": "sad", "descriptions": {"style": "ink", "posture_expression": "crying"}},
        {},
        {"path": "y.png", "label": "happy", "ocr_text": "yay", "key": "pack1/y", "group": "pack1", "score": 3},
    ]
    manifest.write_text("\n".join(json.dumps(r) if r else "" for r in rows) + "\n", encoding="utf-8")
    index = read_manifest(manifest, classes=["sad", "happy", "angry"])
    assert index.classes == ("sad", "happy", "angry")
    x, y = index.samples
    assert x.label == 0 and x.descriptions == {"style": "ink", "posture_expression": "crying"}
    assert y.label == 1 and y.key == "pack1/y" and y.group == "pack1" and y.ocr_text == "yay"
    assert y.meta == {"score": 3}


def test_numeric_label_names_sort_numerically(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,10\nb.png,9\nc.png,1\n")
    assert read_manifest(manifest).classes == ("1", "9", "10")


@pytest.mark.parametrize(
    ("content", "line", "field", "reason"),
    [
        ("path,label\na.png,cat\n,dog\n", 3, "path", "missing or empty"),
        ('path,label,text\na.png,cat,"multi\nline"\nb.png,cow\n', 4, "label", "unknown class 'cow'"),
        ("path,label\na.png,cat\na.png,dog\n", 3, "key", "duplicate key"),
        ("path,label\na.png,cat,extra\n", 2, None, "3 cells but the header has 2 columns"),
    ],
)
def test_csv_rejections_name_file_line_field(
    tmp_path: Path, content: str, line: int, field: str | None, reason: str
) -> None:
    manifest = tmp_path / "bad.csv"
    manifest.write_text(content)
    with pytest.raises(DataFormatError) as info:
        read_manifest(manifest, classes=["cat", "dog"])
    err = info.value
    assert err.file == manifest and err.line == line and err.field == field
    assert f"bad.csv, line {line}" in str(err) and reason in str(err)


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"path": "a.png", "label": True}, "label", "expected a class name"),
        ({"path": "a.png", "descriptions": {"mood": "x"}}, "descriptions", "unknown view(s) ['mood']"),
        ({"path": "a.png", "text": 5}, "text", "expected text"),
        ({"label": "cat"}, "path", "missing or empty"),
    ],
)
def test_jsonl_rejections(tmp_path: Path, row: dict, field: str, reason: str) -> None:
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text(json.dumps({"path": "ok.png", "label": "cat"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataFormatError) as info:
        read_manifest(manifest)
    assert info.value.line == 2 and info.value.field == field and reason in str(info.value)
    assert "bad.jsonl, line 2" in str(info.value)


def test_jsonl_invalid_json(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"path": "a.png"}\n{"path": \n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl, line 2: invalid JSON"):
        read_manifest(manifest)


def test_manifest_round_trip(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"path": "a.png", "label": "b", "text": "hi", "descriptions": {"style": "flat"}, "n": 1})
        + "\n"
        + json.dumps({"path": "sub/c.png", "label": "a", "group": "g"})
        + "\n"
    )
    index = read_manifest(manifest)
    out = write_manifest(index, tmp_path / "copy" / "m.jsonl")
    again = read_manifest(out, classes=index.classes)
    assert [(s.path.resolve(), s.label, s.key, s.ocr_text, s.group, s.descriptions, s.meta) for s in again.samples] == [
        (s.path.resolve(), s.label, s.key, s.ocr_text, s.group, s.descriptions, s.meta) for s in index.samples
    ]


def test_unknown_suffix(tmp_path: Path) -> None:
    manifest = tmp_path / "m.txt"
    manifest.write_text("path\n")
    with pytest.raises(ValueError, match="must end in"):
        read_manifest(manifest)


def test_read_folder(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _image(root / "sad" / "1.png")
    _image(root / "happy" / "packA" / "2.jpg")
    _image(root / "happy" / "3.webp")
    (root / "happy" / "notes.txt").write_text("not an image")
    _image(root / "happy" / ".hidden.png")
    index = read_folder(root)
    assert index.classes == ("happy", "sad")
    assert [(s.key, s.label, s.group) for s in index.samples] == [
        ("happy/3.webp", 0, None),
        ("happy/packA/2.jpg", 0, "packA"),
        ("sad/1.png", 1, None),
    ]
    ordered = read_folder(root, classes=["sad", "happy", "angry"])
    assert ordered.class_counts() == {"sad": 1, "happy": 2, "angry": 0}
    with pytest.raises(DataFormatError, match=r"class folder\(s\) \['happy'\] not in classes"):
        read_folder(root, classes=["sad"])
