"""MET-MEME reader on files that carry every quirk of the real ones (GBK, key columns, spaces, trailing columns,
quoted newlines, missing texts and images, coded cells)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mghft.data import DataFormatError, read_metmeme
from mghft.data.metmeme import parse_coded_cell

LABEL_COLUMNS = (
    "sentiment category,sentiment degree,intention detection,offensiveness detection,metaphor occurrence,"
    "metaphor category,target domain,source domain,target modality,source modality"
)
TRAILING = ",,,,"


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (9, 9, 9)).save(path)


def _write(path: Path, lines: list[str]) -> None:
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("gbk"))


@pytest.fixture
def met_root(tmp_path: Path) -> Path:
    root = tmp_path / "MET-MEME"
    (root / "label").mkdir(parents=True)
    _write(
        root / "label" / "label_E.csv",
        [
            f"file_name,{LABEL_COLUMNS}{TRAILING}",
            f"image_ (0).jpg,4(sorrow),2(moderately),2(expressive),1(non-offensive),1(literal),,,,,{TRAILING}",
            f"image_ (1).jpg,1(happiness),1(slightly),3(entertaining),1(non-offensive),2(metaphorical),"
            f"2(text),pig,man,1(text),2(image){TRAILING}",
            f"image_ (2).jpg,7(surprise),3(very),1(interactive),2(slightly),1(literal),,,,,{TRAILING}",
            f"image_ (3).jpg,4(sorrow),1(slightly),2(expressive),1(non-offensive),1(literal),,,,,{TRAILING}",
            f"image_(4).jpg,1(happiness),1(slightly),2(expressive),1(non-offensive),1(literal),,,,,{TRAILING}",
            f",,,,,,,,,,{TRAILING}",
        ],
    )
    _write(
        root / "E_text.csv",
        [
            "file_name,text,,,",
            "image_ (0).jpg,\u201cI can\u2019t\u201d said the cat,,,",
            'image_ (1).jpg,"when monday\r\nhits you",,,',
            "image_ (2).jpg,,,,",
            "image_(4).jpg,caf\u00e9 \u4e2d\u6587,,,",
        ],
    )
    _write(
        root / "label_C.csv",
        [
            f"images_name,{LABEL_COLUMNS}",
            "Image_(1).jpg,1(happiness),1(slightly),2(expressive),1(non-offensive),1(literal),,,,,",
            "Image_(2).jpg,6(hate),2(moderately),2(expressive),3(moderately),1(literal),,,,,",
        ],
    )
    _write(root / "C_text.csv", ["images_name,text", "Image_(1).jpg,\u4eca\u5929\u5f88\u5f00\u5fc3", "Image_(2).jpg,"])
    for name in ("image_ (0).jpg", "image_ (1).jpg", "image_ (2).jpg", "image_ (4).jpg"):  # (3) is missing
        _image(root / "Eimages" / name)
    for name in ("Image_(1).jpg", "Image_(2).jpg"):
        _image(root / "Cimages" / name)
    return root


def test_parse_coded_cell() -> None:
    assert parse_coded_cell("4(sorrow)") == (4, "sorrow")
    assert parse_coded_cell(" 4 ( sorrow ) ") == (4, "sorrow")
    assert parse_coded_cell("4（悲伤）") == (4, "悲伤")
    assert parse_coded_cell("7") == (7, None)
    assert parse_coded_cell("  ") is None
    with pytest.raises(ValueError, match="sorrow4"):
        parse_coded_cell("sorrow4")


def test_english_with_all_quirks(met_root: Path) -> None:
    index = read_metmeme(met_root, "E")
    assert index.name == "metmeme-E"
    assert index.classes == ("happiness", "sorrow", "surprise")  # ids 1, 4, 7 found in the data
    by_key = {s.key: s for s in index.samples}
    assert set(by_key) == {"E/image_ (0).jpg", "E/image_ (1).jpg", "E/image_ (2).jpg", "E/image_(4).jpg"}
    assert by_key["E/image_ (0).jpg"].label == 1
    assert by_key["E/image_ (0).jpg"].ocr_text == "\u201cI can\u2019t\u201d said the cat"  # GBK curly quotes
    assert by_key["E/image_ (1).jpg"].ocr_text == "when monday\nhits you"  # quoted newline kept
    assert by_key["E/image_ (2).jpg"].ocr_text == ""  # no text
    assert by_key["E/image_(4).jpg"].ocr_text == "caf\u00e9 \u4e2d\u6587"
    # Listed without the space, stored with it: matched ignoring white space.
    assert by_key["E/image_(4).jpg"].path == met_root / "Eimages" / "image_ (4).jpg"
    assert all(s.path.is_file() for s in index.samples)
    # The row whose image is missing is left out and said so.
    assert list(index.skipped) == ["E/image_ (3).jpg"]
    assert "label_E.csv line 5" in index.skipped["E/image_ (3).jpg"]
    meta = by_key["E/image_ (1).jpg"].meta
    assert meta["source_domain"] == "man" and meta["sentiment_degree"] == "1(slightly)" and meta["language"] == "E"


def test_missing_image_policies(met_root: Path) -> None:
    kept = read_metmeme(met_root, "E", missing_images="keep")
    missing = [s for s in kept.samples if s.key == "E/image_ (3).jpg"]
    assert len(missing) == 1 and missing[0].path == met_root / "Eimages" / "image_ (3).jpg"
    assert not missing[0].path.exists() and not kept.skipped
    with pytest.raises(DataFormatError, match=r"label_E\.csv, line 5: image 'image_ \(3\)\.jpg' not found"):
        read_metmeme(met_root, "E", missing_images="error")


def test_chinese_and_both(met_root: Path) -> None:
    chinese = read_metmeme(met_root, "C")
    assert chinese.classes == ("happiness", "hate")
    assert chinese.samples[0].ocr_text == "\u4eca\u5929\u5f88\u5f00\u5fc3"
    assert chinese.samples[0].path == met_root / "Cimages" / "Image_(1).jpg"
    both = read_metmeme(met_root, "both")
    assert both.classes == ("happiness", "sorrow", "hate", "surprise")
    assert {s.key.split("/")[0] for s in both.samples} == {"E", "C"}
    labels = {s.key: both.classes[s.label] for s in both.samples}
    assert labels["C/Image_(2).jpg"] == "hate" and labels["E/image_ (2).jpg"] == "surprise"


def test_loose_match_never_crosses_languages(met_root: Path) -> None:
    # "image_ (9).jpg" is missing in English; the Chinese "Image_(9).jpg" squashes to the same name but lives
    # in the other language's folder.
    _image(met_root / "Cimages" / "Image_(9).jpg")
    path = met_root / "label" / "label_E.csv"
    text = path.read_bytes().decode("gbk").rstrip("\r\n")
    path.write_bytes((text + "\r\nimage_ (9).jpg,1(happiness),,,,,,,,,\r\n").encode("gbk"))
    index = read_metmeme(met_root, "E")
    assert "E/image_ (9).jpg" in index.skipped


def test_explicit_image_dirs(met_root: Path) -> None:
    index = read_metmeme(met_root, "C", image_dirs={"C": "Cimages"})
    assert len(index) == 2
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_metmeme(met_root, "C", image_dirs={"C": "nowhere"})


def test_utf8_files_also_work(met_root: Path) -> None:
    for name in ("label_C.csv", "C_text.csv"):
        path = met_root / name
        path.write_text(path.read_bytes().decode("gbk"), encoding="utf-8")
    assert read_metmeme(met_root, "C").samples[0].ocr_text == "\u4eca\u5929\u5f88\u5f00\u5fc3"


def test_wrong_encoding_names_file_and_line(met_root: Path) -> None:
    with pytest.raises(DataFormatError, match=r"E_text\.csv, line 2: cannot decode as utf-8"):
        read_metmeme(met_root, "E", encoding="utf-8")


def _replace_line(path: Path, line_no: int, new: str) -> None:
    lines = path.read_bytes().decode("gbk").split("\r\n")
    lines[line_no - 1] = new
    path.write_bytes("\r\n".join(lines).encode("gbk"))


def test_bad_cell_names_file_line_and_column(met_root: Path) -> None:
    _replace_line(met_root / "label_C.csv", 3, "Image_(2).jpg,hateful,2(moderately),,,,,,,,")
    with pytest.raises(DataFormatError) as info:
        read_metmeme(met_root, "C")
    err = info.value
    assert err.file.name == "label_C.csv" and err.line == 3 and err.field == "sentiment category"
    assert "label_C.csv, line 3, field 'sentiment category'" in str(err) and "hateful" in str(err)


def test_conflicting_class_names_rejected(met_root: Path) -> None:
    _replace_line(met_root / "label_C.csv", 3, "Image_(2).jpg,1(joy),2(moderately),,,,,,,,")
    with pytest.raises(DataFormatError, match=r"line 3.*class 1 is called 'joy' here but 'happiness' at line 2"):
        read_metmeme(met_root, "C")


def test_duplicate_and_missing_key_column(met_root: Path) -> None:
    _replace_line(met_root / "label_C.csv", 3, "Image_(1).jpg,6(hate),,,,,,,,,")
    with pytest.raises(DataFormatError, match=r"label_C\.csv, line 3, field 'images name': 'Image_\(1\)\.jpg' already"):
        read_metmeme(met_root, "C")
    _replace_line(met_root / "label_C.csv", 1, f"name,{LABEL_COLUMNS}")
    with pytest.raises(DataFormatError, match=r"label_C\.csv, line 1: no image-name column"):
        read_metmeme(met_root, "C")


def test_quoted_newline_shifts_line_numbers(met_root: Path) -> None:
    # The row of image_ (1) spans lines 3-4 of E_text.csv, so a row inserted after it starts on line 5.
    path = met_root / "E_text.csv"
    lines = path.read_bytes().decode("gbk").split("\r\n")
    lines.insert(4, "image_ (1).jpg,different text,,,")  # a second, different text for image_ (1)
    path.write_bytes("\r\n".join(lines).encode("gbk"))
    with pytest.raises(
        DataFormatError, match=r"E_text\.csv, line 5, field 'text': 'image_ \(1\)\.jpg' has a different"
    ):
        read_metmeme(met_root, "E")


def test_missing_label_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="label_E.csv"):
        read_metmeme(tmp_path, "E")
