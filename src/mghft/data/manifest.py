"""Generic datasets: a manifest file (CSV or JSON Lines) or a folder per class.

Manifest columns (CSV header / JSONL keys):

* ``path`` (required): the image; a relative path is resolved against the manifest's folder.
* ``label``: the class name; empty or absent means unlabelled.
* ``text`` (or ``ocr_text``): text written in the image.
* ``intention``, ``style``, ``main_role``, ``posture_expression``: per-view descriptions; or ``descriptions``,
  either a JSON object ``{view: text}`` (JSONL) or the public code's ``#The sticker's ...`` text (CSV or JSONL).
* ``key`` (default: ``path`` as written) and ``group`` (what must stay on one side of a split).
* anything else is kept in ``Sample.meta``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mghft.data.classes import check_near_duplicates, nearest
from mghft.data.errors import DataFormatError, csv_rows, decode_text, parse_int
from mghft.data.images import IMAGE_EXTENSIONS
from mghft.data.records import DatasetIndex, Sample
from mghft.data.walk import find_images
from mghft.errors import did_you_mean
from mghft.views import VIEWS, parse_official_text, unknown_section_headers

_TEXT_FIELDS = ("text", "ocr_text")
_KNOWN_FIELDS = {"path", "label", "key", "group", "descriptions", *_TEXT_FIELDS, *VIEWS}


def _class_order(labels: set[str]) -> tuple[str, ...]:
    """Sorted names; numerically when every name is an integer (so ``10`` follows ``9``)."""
    if labels and all(parse_int(x) is not None for x in labels):
        return tuple(sorted(labels, key=lambda x: parse_int(x)))  # type: ignore[arg-type,return-value]
    return tuple(sorted(labels))


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` (split on ``\\n``), one at a time: no list of every line, no second copy of the text."""
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end]
        start = end + 1
    yield text[start:]


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row dict) of a CSV/TSV/JSONL manifest, one at a time; blank lines skipped."""
    suffix = path.suffix.lower()
    text = decode_text(path, path.read_bytes(), "utf-8-sig")
    if suffix in (".jsonl", ".ndjson"):
        for line_no, line in enumerate(_lines(text), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(path, f"invalid JSON ({exc.msg}, column {exc.colno})", line=line_no) from exc
            if not isinstance(row, Mapping):
                raise DataFormatError(path, f"expected a JSON object, got {type(row).__name__}", line=line_no)
            yield line_no, dict(row)
        return
    if suffix not in (".csv", ".tsv"):
        raise ValueError(f"{path}: manifest must end in .csv, .tsv, .jsonl or .ndjson")
    parsed = [(line, row) for line, row in csv_rows(text, "\t" if suffix == ".tsv" else ",") if any(row)]
    if not parsed:
        raise DataFormatError(path, "empty manifest (no header row)", line=1)
    header_line, header = parsed[0]
    header = [h.strip() for h in header]
    named = [h for h in header if h]
    if len(set(named)) != len(named):
        raise DataFormatError(path, f"duplicate column names in {header}", line=header_line)
    for line, cells in parsed[1:]:
        extra = [c for c in cells[len(header) :] if c.strip()]
        if extra:
            raise DataFormatError(path, f"{len(cells)} cells but the header has {len(header)} columns", line=line)
        yield line, {h: c for h, c in zip(header, cells, strict=False) if h}


def _text(path: Path, line: int, row: Mapping[str, Any], field: str) -> str:
    value = row.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(path, f"expected text, got {type(value).__name__}", line=line, field=field)
    return value.strip()


def _descriptions(path: Path, line: int, row: Mapping[str, Any]) -> dict[str, str] | None:
    views: dict[str, str] = {}
    raw = row.get("descriptions")
    if isinstance(raw, Mapping):
        unknown = sorted(set(raw) - set(VIEWS))
        if unknown:
            raise DataFormatError(
                path, f"unknown view(s) {unknown}; views are {list(VIEWS)}", line=line, field="descriptions"
            )
        for view, text in raw.items():
            if not isinstance(text, str):
                raise DataFormatError(path, f"view {view!r} is not text", line=line, field="descriptions")
            if text.strip():
                views[view] = text.strip()
    elif isinstance(raw, str):
        unknown = unknown_section_headers(raw)
        if unknown:
            raise DataFormatError(
                path,
                f"section header {unknown[0]!r} is not one of the four (#The sticker's intention/style/main role/"
                "gesture)",
                line=line,
                field="descriptions",
            )
        views.update(parse_official_text(raw))
    elif raw is not None:
        raise DataFormatError(path, "expected an object or text", line=line, field="descriptions")
    for view in VIEWS:
        text = _text(path, line, row, view)
        if text:
            views[view] = text
    return views or None


def read_manifest(path: str | Path, *, classes: Sequence[str] | None = None, name: str | None = None) -> DatasetIndex:
    """Read a CSV, TSV or JSON Lines manifest (columns in the module docstring).

    Args:
        path: the manifest; its suffix picks the format (``.csv``, ``.tsv``, ``.jsonl``, ``.ndjson``).
        classes: class names in label order; default: the label names found, sorted (numerically if all integers).
            With ``classes`` given, a label outside it is an error; without, two labels that look like one name
            mistyped (:func:`mghft.data.classes.check_labels`) are.
        name: the index's name (default: the manifest's stem).

    Raises:
        DataFormatError: a broken row, naming the file, line and field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    base = path.parent
    rows = _rows(path)
    parsed = []
    seen: dict[str, int] = {}
    for line, row in rows:
        raw_path = row.get("path")
        if not isinstance(raw_path, str) or not raw_path.strip():
            found = [str(k) for k in row if k]
            raise DataFormatError(
                path,
                f"missing or empty ({raw_path!r}); the columns found are {found}"
                + ("" if "path" in row else did_you_mean("path", found) + " (a manifest's image column is 'path')"),
                line=line,
                field="path",
            )
        raw_label = row.get("label")
        if isinstance(raw_label, bool) or (raw_label is not None and not isinstance(raw_label, str | int)):
            raise DataFormatError(path, f"expected a class name, got {raw_label!r}", line=line, field="label")
        label_name = str(raw_label).strip() if raw_label is not None else ""
        key = row.get("key")
        key = key.strip() if isinstance(key, str) and key.strip() else raw_path.strip()
        if key in seen:
            raise DataFormatError(path, f"duplicate key {key!r} (first at line {seen[key]})", line=line, field="key")
        seen[key] = line
        group = row.get("group")
        group = str(group).strip() if group is not None and str(group).strip() else None
        text = _text(path, line, row, "text") or _text(path, line, row, "ocr_text")
        meta = {k: v for k, v in row.items() if k not in _KNOWN_FIELDS}
        image = Path(raw_path.strip())
        image = image if image.is_absolute() else base / image
        descriptions = _descriptions(path, line, row)  # the row itself is not kept
        parsed.append((line, image, label_name, key, text, group, meta, descriptions))

    if classes is None:
        check_near_duplicates(path, [(p[0], p[2]) for p in parsed if p[2]])  # a typo never becomes a class
        class_names = _class_order({p[2] for p in parsed if p[2]})
    else:
        class_names = tuple(classes)
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"duplicate class names in {list(class_names)}")
    label_of = {c: i for i, c in enumerate(class_names)}
    samples = []
    for line, image, label_name, key, text, group, meta, descriptions in parsed:
        if label_name and label_name not in label_of:
            near = nearest(label_name, class_names)
            raise DataFormatError(
                path,
                f"unknown class {label_name!r}; classes are {list(class_names)}"
                + (f" (did you mean {near!r}?)" if near else ""),
                line=line,
                field="label",
            )
        label = label_of[label_name] if label_name else None
        samples.append(Sample(image, label, key, text, group, descriptions, meta))
    return DatasetIndex(name=name or path.stem, root=base, classes=class_names, samples=samples)


def write_manifest(index: DatasetIndex, path: str | Path) -> Path:
    """Write ``index`` as a JSON Lines manifest (paths relative to its folder where possible); ``read_manifest`` reads
    it back with the same classes when given ``classes=index.classes``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for s in index.samples:
            try:
                rel = os.path.relpath(s.path, path.parent)
            except ValueError:  # another drive on Windows
                rel = str(s.path)
            row: dict[str, Any] = {"path": Path(rel).as_posix(), "key": s.key}
            if s.label is not None:
                row["label"] = index.classes[s.label]
            if s.ocr_text:
                row["text"] = s.ocr_text
            if s.group is not None:
                row["group"] = s.group
            if s.descriptions:
                row["descriptions"] = dict(s.descriptions)
            for k, v in s.meta.items():
                if k not in _KNOWN_FIELDS:
                    row[k] = v
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_folder(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    name: str | None = None,
) -> DatasetIndex:
    """Read a folder-per-class dataset: ``root/<class>/**/<image>``.

    Hidden files and folders are ignored, as are files whose extension is not in ``extensions``. Keys are paths
    relative to ``root``; an image in a sub-folder of its class folder gets that sub-folder as ``group`` (a sticker
    pack, say).

    Args:
        root: the dataset folder.
        classes: class names in label order (default: the class folders, sorted); a class folder outside it is an
            error, a listed class without a folder simply has no images.
        extensions: image file extensions (compared case-insensitively).
        name: the index's name (default: the folder's name).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        check_near_duplicates(root, [(0, f) for f in folders], unit="class folder")  # a typo never becomes a class
    class_names = _class_order(set(folders)) if classes is None else tuple(classes)
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise DataFormatError(root, f"class folder(s) {unknown} not in classes {list(class_names)}")
    allowed = {e.lower() for e in extensions}
    samples = []
    skipped: dict[str, str] = {}
    for label, class_name in enumerate(class_names):
        class_dir = root / class_name
        if not class_dir.is_dir():
            continue
        found = find_images([class_dir], extensions=tuple(allowed))
        for s in found.skipped:  # FIFOs, devices, broken links: never opened, reported with the reason
            skipped[s.path.relative_to(root).as_posix()] = s.reason
        for image in found.files:
            sub = image.parent.relative_to(class_dir)
            group = sub.as_posix() if sub.parts else None
            samples.append(Sample(image, label, image.relative_to(root).as_posix(), group=group))
    if not samples:
        raise DataFormatError(root, f"no images with extensions {sorted(allowed)} in class folders")
    return DatasetIndex(name=name or root.name, root=root, classes=class_names, samples=samples, skipped=skipped)
