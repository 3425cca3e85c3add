"""SER30K reader: layout, class order, OCR text vs. the public code's description variant, and rejections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mghft.data import DataFormatError, read_ser30k
from mghft.views import format_official_text

CLASSES = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]


def _record(topic: str, name: str, anno: int, text: str = "") -> dict:
    return {"topic": topic, "file_name": name, "text": text, "anno1": anno, "anno2": anno, "anno3": 1, "anno": anno}


def _tree(
    root: Path, records: dict[str, list[dict]], categories: object = CLASSES, folder: str = "Annotations"
) -> None:
    for recs in records.values():
        for r in recs:
            path = root / "Images" / r["topic"] / r["file_name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                Image.new("RGB", (4, 4), (10, 20, 30)).save(path)
    level = root / folder / "image-level"
    level.mkdir(parents=True, exist_ok=True)
    for split, recs in records.items():
        data = {"annotations": recs, "categories": categories}
        target = root / folder / "all_annos.json" if split == "all" else level / f"{split}.json"
        target.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


@pytest.fixture
def ser_root(tmp_path: Path) -> Path:
    _tree(
        tmp_path,
        {
            "train": [
                _record("cat01", "1.png", 4, "LOL"),
                _record("cat01", "2.png", 1),
                _record("dog02", "a.png", 7, "what?!"),
            ],
            "val": [_record("dog02", "b.png", 6)],
            "test": [_record("owl03", "x.png", 2, "ugh")],
            "all": [_record("cat01", "1.png", 4, "LOL"), _record("owl03", "x.png", 2, "ugh")],
        },
    )
    return tmp_path


def test_reads_split_with_zero_based_labels(ser_root: Path) -> None:
    index = read_ser30k(ser_root, "train")
    assert index.name == "ser30k-train"
    assert index.classes == tuple(CLASSES)
    assert [s.key for s in index.samples] == ["cat01/1.png", "cat01/2.png", "dog02/a.png"]
    assert [s.label for s in index.samples] == [3, 0, 6]
    first = index.samples[0]
    assert first.path == ser_root / "Images" / "cat01" / "1.png" and first.path.is_file()
    assert first.ocr_text == "LOL" and first.group == "cat01" and first.descriptions is None
    assert first.meta["anno3"] == 1
    assert index.class_counts()["happiness"] == 1
    assert len(read_ser30k(ser_root, "val")) == 1
    assert [s.key for s in read_ser30k(ser_root, "all").samples] == ["cat01/1.png", "owl03/x.png"]


@pytest.mark.parametrize(
    "categories",
    [
        [{"id": i + 1, "name": n} for i, n in reversed(list(enumerate(CLASSES)))],
        {str(i + 1): n for i, n in enumerate(CLASSES)},
        {n: i + 1 for i, n in enumerate(CLASSES)},
    ],
)
def test_category_formats(tmp_path: Path, categories: object) -> None:
    _tree(tmp_path, {"train": [_record("t", "1.png", 5)]}, categories=categories)
    index = read_ser30k(tmp_path, "train")
    assert index.classes == tuple(CLASSES)
    assert index.samples[0].label == 4


def test_class_order_comes_from_categories(tmp_path: Path) -> None:
    _tree(tmp_path, {"train": [_record("t", "1.png", 1)]}, categories=["zeta", "alpha"])
    index = read_ser30k(tmp_path, "train")
    assert index.classes == ("zeta", "alpha") and index.samples[0].label == 0


def test_description_variant_is_detected(tmp_path: Path) -> None:
    views = {"intention": "teasing a friend", "style": "flat cartoon", "posture_expression": "arms crossed"}
    text = "Here is my analysis.\n" + format_official_text(views)
    _tree(tmp_path, {"train": [_record("t", "1.png", 2, text), _record("t", "2.png", 3, "")]}, folder="Annotations_mg")
    index = read_ser30k(tmp_path, "train", annotations="Annotations_mg")
    first, second = index.samples
    assert first.descriptions == views and first.ocr_text == ""
    assert second.descriptions is None
    # Forced OCR reading keeps the raw text.
    raw = read_ser30k(tmp_path, "train", annotations="Annotations_mg", text="ocr")
    assert raw.samples[0].descriptions is None and raw.samples[0].ocr_text.startswith("Here is my analysis.")
    # A single JSON file works as well.
    single = read_ser30k(tmp_path, "train", annotations=tmp_path / "Annotations_mg" / "image-level" / "train.json")
    assert single.samples[0].descriptions == views


def test_descriptions_merged_from_second_file(ser_root: Path) -> None:
    described = [
        _record("cat01", "1.png", 4, format_official_text({"intention": "joy", "style": "pixel art"})),
        _record("dog02", "a.png", 7, format_official_text({"main_role": "a dog"})),
    ]
    _tree(ser_root, {"train": described}, folder="Annotations_mg")
    index = read_ser30k(ser_root, "train", descriptions_from="Annotations_mg")
    by_key = {s.key: s for s in index.samples}
    assert by_key["cat01/1.png"].ocr_text == "LOL"
    assert by_key["cat01/1.png"].descriptions == {"intention": "joy", "style": "pixel art"}
    assert by_key["cat01/2.png"].descriptions is None
    assert by_key["dog02/a.png"].descriptions == {"main_role": "a dog"}


def test_descriptions_with_conflicting_label_rejected(ser_root: Path) -> None:
    _tree(ser_root, {"train": [_record("cat01", "1.png", 5, "#The sticker's style: x")]}, folder="Annotations_mg")
    with pytest.raises(DataFormatError, match="cat01/1.png"):
        read_ser30k(ser_root, "train", descriptions_from="Annotations_mg")


def _write_raw(root: Path, records: list) -> Path:
    path = root / "Annotations" / "image-level" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"annotations": records, "categories": CLASSES}, indent=2), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({"topic": "t", "file_name": "2.png", "text": "", "anno": 8}, "anno", "not one of the category ids"),
        ({"topic": "t", "file_name": "2.png", "text": "", "anno": "x"}, "anno", "not one of the category ids"),
        ({"topic": "t", "file_name": "2.png", "text": ""}, "anno", "missing"),
        ({"file_name": "2.png", "text": "", "anno": 1}, "topic", "missing or empty"),
        ({"topic": "t", "file_name": "", "text": "", "anno": 1}, "file_name", "missing or empty"),
        ({"topic": "t", "file_name": "2.png", "text": 3, "anno": 1}, "text", "expected a string"),
        ({"topic": "t", "file_name": "1.png", "text": "", "anno": 1}, "file_name", "duplicate image"),
    ],
)
def test_broken_record_names_file_record_line_and_field(tmp_path: Path, bad: dict, field: str, reason: str) -> None:
    path = _write_raw(tmp_path, [_record("t", "1.png", 1), bad])
    with pytest.raises(DataFormatError) as info:
        read_ser30k(tmp_path, "train")
    err = info.value
    assert err.file == path and err.record == 1 and err.field == field
    # indent=2: the object opens on line 2 of the file, record 0 on line 3 and spans 9 lines.
    assert err.line == 12
    message = str(err)
    assert str(path) in message and "record 1" in message and "line 12" in message and f"'{field}'" in message
    assert reason in message


def test_invalid_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "Annotations" / "image-level" / "train.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"annotations": [\n  {"topic": "t",\n  "file_name": }\n]}\n')
    with pytest.raises(DataFormatError, match=r"train\.json, line 3: invalid JSON"):
        read_ser30k(tmp_path, "train")


def test_bad_categories_and_missing_file(tmp_path: Path) -> None:
    _tree(tmp_path, {"train": [_record("t", "1.png", 1)]}, categories=["a", "a"])
    with pytest.raises(DataFormatError, match="field 'categories': duplicate category names"):
        read_ser30k(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="test.json"):
        read_ser30k(tmp_path, "test")
    with pytest.raises(ValueError, match="split must be one of"):
        read_ser30k(tmp_path, "dev")
