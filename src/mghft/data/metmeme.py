"""Reader for MET-MEME (Xu et al., SIGIR 2022): 6,045 Chinese and 4,000 English memes.

Files: ``label_C.csv``/``label_E.csv`` (annotations) and ``C_text.csv``/``E_text.csv`` (in-image text), found
anywhere under the root (file names compared case-insensitively), plus the image folders. The real files' quirks,
all handled here:

* GBK bytes, also in the English files (curly quotes, a few Chinese cells); UTF-8 files work too;
* the key column is ``images_name`` in the Chinese files and ``file_name`` in the English ones;
* English names contain a space (``image_ (0).jpg``), Chinese ones do not (``Image_(1).jpg``); a name that is
  not found exactly is matched ignoring case and white space;
* trailing empty columns (ignored), quoted newlines inside texts (kept), rows with no text (``ocr_text=""``),
  rows whose image is missing (``missing_images``);
* cells like ``4(sorrow)`` (also ``4``, ``4（悲伤）``): the number is the class id, the word its name.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mghft.data.errors import DataFormatError, csv_rows, decode_text, normalize_header
from mghft.data.images import IMAGE_EXTENSIONS
from mghft.data.records import DatasetIndex, Sample
from mghft.data.walk import check_input_file

METMEME_SENTIMENTS: tuple[str, ...] = ("happiness", "love", "anger", "sorrow", "fear", "hate", "surprise")
"""MET-MEME sentiment names for ids 1..7, used when the data cells carry only numbers."""

_KEY_COLUMNS = ("images name", "file name", "image name", "image", "file")
_SENTIMENT = "sentiment category"
_CELL_RE = re.compile(r"^\s*([+-]?\d+)\s*(?:[(（]\s*(.*?)\s*[)）])?\s*$")

Language = Literal["E", "C", "both"]
MissingPolicy = Literal["skip", "keep", "error"]


def parse_coded_cell(value: str) -> tuple[int, str | None] | None:
    """``"4(sorrow)"`` -> ``(4, "sorrow")``; ``"4"`` -> ``(4, None)``; empty -> ``None``.

    Raises:
        ValueError: any other text.
    """
    if not value.strip():
        return None
    match = _CELL_RE.match(value)
    if match is None:
        raise ValueError(f"expected a cell like '4(sorrow)' or '4', got {value!r}")
    name = match.group(2)
    return int(match.group(1)), (name or None)


def _squash(name: str) -> str:
    return "".join(name.split()).lower()


def _find_file(root: Path, name: str) -> Path | None:
    """``name`` (case-insensitive) in ``root`` or up to two folder levels below; the shallowest wins."""
    wanted = name.lower()
    for depth in range(3):
        pattern = "/".join(["*"] * depth + ["*"])
        hits = sorted(p for p in root.glob(pattern) if p.is_file() and p.name.lower() == wanted)
        if hits:
            return hits[0]
    return None


@dataclass
class _Table:
    path: Path
    header: list[str]  # normalised names; "" for unnamed (trailing) columns
    rows: list[tuple[int, list[str]]]  # (line, cells) of non-empty rows


def _read_table(path: Path, encoding: str | None) -> _Table:
    text = decode_text(path, path.read_bytes(), encoding)
    rows = [(line, row) for line, row in csv_rows(text) if any(cell.strip() for cell in row)]
    if not rows:
        raise DataFormatError(path, "no header row")
    _, header = rows[0]
    return _Table(path, [normalize_header(h) for h in header], rows[1:])


def _key_column(table: _Table) -> int:
    for wanted in _KEY_COLUMNS:
        if wanted in table.header:
            return table.header.index(wanted)
    raise DataFormatError(
        table.path, f"no image-name column (looked for images_name or file_name in {table.header})", line=1
    )


def _cell(row: list[str], column: int) -> str:
    return row[column].strip() if column < len(row) else ""


def _read_texts(path: Path, encoding: str | None) -> dict[str, str]:
    table = _read_table(path, encoding)
    key_col = _key_column(table)
    text_col = next((i for i, h in enumerate(table.header) if "text" in h and i != key_col), None)
    if text_col is None:
        text_col = next((i for i, h in enumerate(table.header) if h and i != key_col), None)
    if text_col is None:
        raise DataFormatError(path, "no text column", line=1)
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, row in table.rows:
        name = _cell(row, key_col)
        if not name:
            raise DataFormatError(path, "empty image name", line=line, field=table.header[key_col])
        value = _cell(row, text_col)
        if name in texts and texts[name] != value:
            raise DataFormatError(
                path,
                f"{name!r} has a different text at line {first_line[name]}",
                line=line,
                field=table.header[text_col],
            )
        texts[name] = value
        first_line.setdefault(name, line)
    return texts


class _ImageFinder:
    """Finds images by name under some folders: exactly, then ignoring case and white space."""

    def __init__(self, folders: list[Path]) -> None:
        self.exact: dict[str, list[Path]] = {}
        self.loose: dict[str, list[Path]] = {}
        for folder in folders:
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for filename in sorted(filenames):
                    path = Path(dirpath) / filename
                    if path.suffix.lower() in IMAGE_EXTENSIONS and not check_input_file(path):
                        self.exact.setdefault(filename, []).append(path)
                        self.loose.setdefault(_squash(filename), []).append(path)


def _read_language(
    root: Path,
    lang: str,
    image_dir: Path | None,
    encoding: str | None,
    names: dict[int, str],
) -> tuple[list[tuple[str, Path | None, int | None, str, dict[str, str], Path, int]], Path]:
    """Rows of one language: (name, image path or None, class id, text, meta, file, line); fills ``names``."""
    label_path = _find_file(root, f"label_{lang}.csv")
    if label_path is None:
        raise FileNotFoundError(f"MET-MEME label file label_{lang}.csv not found under {root}")
    text_path = _find_file(root, f"{lang}_text.csv")
    texts = _read_texts(text_path, encoding) if text_path is not None else {}

    table = _read_table(label_path, encoding)
    key_col = _key_column(table)
    if _SENTIMENT not in table.header:
        raise DataFormatError(label_path, f"no 'sentiment category' column in {table.header}", line=1)
    sent_col = table.header.index(_SENTIMENT)
    meta_cols = [(i, h.replace(" ", "_")) for i, h in enumerate(table.header) if h and i not in (key_col, sent_col)]

    finder = _ImageFinder([image_dir] if image_dir is not None else [root])
    names_in_file = [_cell(row, key_col) for _, row in table.rows]
    exact_parents = Counter(p.parent for name in names_in_file for p in finder.exact.get(name, []))
    loose_parents = Counter(p.parent for name in names_in_file for p in finder.loose.get(_squash(name), []))
    parents = exact_parents or loose_parents
    home = image_dir if image_dir is not None else (parents.most_common(1)[0][0] if parents else root)

    def locate(name: str) -> Path | None:
        # Exact names may live anywhere (home first); loose matches only in the home folder, so that a missing
        # English ``image_ (1).jpg`` never picks up the Chinese ``Image_(1).jpg``.
        exact = finder.exact.get(name, [])
        loose = [p for p in finder.loose.get(_squash(name), []) if p.parent == home]
        ranked = [p for p in exact if p.parent == home] + exact + loose
        return ranked[0] if ranked else None

    rows = []
    seen: dict[str, int] = {}
    local_names: dict[int, tuple[str, int]] = {}
    for line, row in table.rows:
        name = _cell(row, key_col)
        if not name:
            raise DataFormatError(label_path, "empty image name", line=line, field=table.header[key_col])
        if name in seen:
            raise DataFormatError(
                label_path, f"{name!r} already listed at line {seen[name]}", line=line, field=table.header[key_col]
            )
        seen[name] = line
        raw = _cell(row, sent_col)
        try:
            coded = parse_coded_cell(raw)
        except ValueError as exc:
            raise DataFormatError(label_path, str(exc), line=line, field=_SENTIMENT) from exc
        class_id = None
        if coded is not None:
            class_id, class_name = coded
            if class_name is not None:
                first = local_names.setdefault(class_id, (class_name, line))
                if first[0] != class_name:
                    raise DataFormatError(
                        label_path,
                        f"class {class_id} is called {class_name!r} here but {first[0]!r} at line {first[1]}",
                        line=line,
                        field=_SENTIMENT,
                    )
                names.setdefault(class_id, class_name)
        path = locate(name)
        meta = {field: _cell(row, col) for col, field in meta_cols}
        meta["sentiment_category"] = raw
        meta["language"] = lang
        rows.append((name, path, class_id, texts.get(name, ""), meta, label_path, line))
    return rows, home


def read_metmeme(
    root: str | Path,
    language: Language = "E",
    *,
    image_dirs: Mapping[str, str | Path] | None = None,
    encoding: str | None = None,
    missing_images: MissingPolicy = "skip",
) -> DatasetIndex:
    """Read MET-MEME's sentiment task.

    Args:
        root: the dataset folder.
        language: ``"E"`` (English), ``"C"`` (Chinese) or ``"both"``.
        image_dirs: language -> image folder (relative to ``root`` or absolute). By default images are looked up by
            name anywhere under ``root``; where a name exists twice, the folder holding most of that language's
            images wins.
        encoding: the CSV encoding; ``None`` tries UTF-8, then GB18030 (which reads GBK).
        missing_images: a row whose image is not found is left out and listed in ``index.skipped`` (``"skip"``),
            kept with the path it would have (``"keep"``; ``validate_index`` reports it), or an error (``"error"``).

    Returns:
        A ``DatasetIndex`` named ``metmeme-<language>``. Classes are the sentiment ids found in the data, in id order,
        named by the cells (``4(sorrow)`` -> ``sorrow``; English names win where the two files differ; ids without a
        name use ``METMEME_SENTIMENTS``). Keys are ``<language>/<image name>``; the other label columns are in
        ``meta``. A row with an empty sentiment cell is unlabelled.

    Raises:
        FileNotFoundError: a label file is missing.
        DataFormatError: a broken file or row (names the file, line and column).
    """
    if language not in ("E", "C", "both"):
        raise ValueError(f"language must be 'E', 'C' or 'both', got {language!r}")
    if missing_images not in ("skip", "keep", "error"):
        raise ValueError(f"missing_images must be 'skip', 'keep' or 'error', got {missing_images!r}")
    root = Path(root)
    languages = ["E", "C"] if language == "both" else [language]
    names: dict[int, str] = {}
    collected = []
    for lang in languages:
        image_dir = None
        if image_dirs is not None and lang in image_dirs:
            image_dir = Path(image_dirs[lang])
            image_dir = image_dir if image_dir.is_absolute() else root / image_dir
            if not image_dir.is_dir():
                raise FileNotFoundError(f"MET-MEME image folder for {lang!r} not found: {image_dir}")
        rows, home = _read_language(root, lang, image_dir, encoding, names)
        collected.append((lang, rows, home))

    ids = sorted({row[2] for _, rows, _ in collected for row in rows if row[2] is not None})
    classes = tuple(
        names[i] if i in names else (METMEME_SENTIMENTS[i - 1] if 1 <= i <= len(METMEME_SENTIMENTS) else str(i))
        for i in ids
    )
    label_of = {class_id: k for k, class_id in enumerate(ids)}
    samples: list[Sample] = []
    skipped: dict[str, str] = {}
    for lang, rows, home in collected:
        for name, path, class_id, text, meta, file, line in rows:
            key = f"{lang}/{name}"
            if path is None:
                if missing_images == "error":
                    raise DataFormatError(file, f"image {name!r} not found under {home}", line=line)
                if missing_images == "skip":
                    skipped[key] = f"image not found ({file.name} line {line})"
                    continue
                path = home / name
            label = label_of[class_id] if class_id is not None else None
            samples.append(Sample(path, label, key, text, None, None, meta))
    return DatasetIndex(name=f"metmeme-{language}", root=root, classes=classes, samples=samples, skipped=skipped)
