"""Reader for SER30K (Liu et al., ACM MM 2022) and for the public MGHFT code's description copy of its annotations.

Layout::

    root/Images/<topic>/<file_name>
    root/Annotations/all_annos.json
    root/Annotations/image-level/{train,val,test}.json

Each JSON is ``{"annotations": [...], "categories": [...]}``; a record has ``topic``, ``file_name``, ``text``
(in-sticker text), ``anno1..anno3`` (annotators) and ``anno`` (the 1-based final label).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from mghft.data.errors import DataFormatError, parse_int
from mghft.data.records import DatasetIndex, Sample
from mghft.views import OFFICIAL_HEADERS, SECTION_HEADER_RE, parse_official_text, unknown_section_headers

SER30K_CLASSES: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
"""SER30K's classes in the order of its tables; used when a JSON has no ``categories``."""

SER30K_SPLITS: tuple[str, ...] = ("train", "val", "test", "all")

TextFormat = Literal["auto", "ocr", "descriptions"]


def _resolve(root: Path, path: str | Path) -> Path:
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    return root / path


def annotation_file(root: str | Path, split: str = "train", annotations: str | Path | None = None) -> Path:
    """The JSON file ``read_ser30k`` reads for ``split``.

    ``annotations`` may be a JSON file, or an annotation folder such as the public code's ``Annotations_mg``
    holding ``image-level/<split>.json`` (or ``<split>.json``). Relative paths that do not exist from the working
    directory are taken relative to ``root``.
    """
    if split not in SER30K_SPLITS:
        raise ValueError(f"split must be one of {list(SER30K_SPLITS)}, got {split!r}")
    root = Path(root)
    if annotations is None:
        folder = root / "Annotations"
    else:
        candidate = _resolve(root, annotations)
        if not candidate.is_dir():
            return candidate
        folder = candidate
    if split == "all":
        options = [folder / "all_annos.json", folder / "all.json"]
    else:
        options = [folder / "image-level" / f"{split}.json", folder / f"{split}.json"]
    for option in options:
        if option.is_file():
            return option
    return options[0]


def _record_lines(text: str) -> list[int]:
    """Line number on which each element of the top-level ``annotations`` array starts (best effort)."""
    match = re.search(r'"annotations"\s*:\s*\[', text)
    if match is None:
        return []
    decoder = json.JSONDecoder()
    pos, lines = match.end(), []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return lines
        lines.append(text.count("\n", 0, pos) + 1)
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return lines


def _categories(path: Path, raw: Any) -> tuple[tuple[str, ...], dict[int, int]]:
    """Class names and the map from ``anno`` value to 0-based label.

    Accepted: a list of names (``anno`` k is the k-th, 1-based); a list of ``{"id", "name"}`` objects (``anno`` is
    the id; order by id); a mapping ``{id: name}`` or ``{name: id}``.
    """

    def bad(reason: str) -> DataFormatError:
        return DataFormatError(path, reason, field="categories")

    pairs: list[tuple[int, str]] = []
    if isinstance(raw, list) and raw and all(isinstance(c, str) for c in raw):
        pairs = [(i + 1, c) for i, c in enumerate(raw)]
    elif isinstance(raw, list) and raw and all(isinstance(c, Mapping) for c in raw):
        for i, c in enumerate(raw):
            name = c.get("name")
            if not isinstance(name, str) or not name:
                raise bad(f"entry {i} has no 'name'")
            cid = parse_int(c["id"]) if "id" in c else i + 1
            if cid is None:
                raise bad(f"entry {i} has a non-integer 'id' {c['id']!r}")
            pairs.append((cid, name))
    elif isinstance(raw, Mapping) and raw:
        if all(parse_int(k) is not None and isinstance(v, str) for k, v in raw.items()):
            pairs = [(parse_int(k), v) for k, v in raw.items()]  # type: ignore[misc]
        elif all(isinstance(k, str) and parse_int(v) is not None for k, v in raw.items()):
            pairs = [(parse_int(v), k) for k, v in raw.items()]  # type: ignore[misc]
        else:
            raise bad("expected {id: name} or {name: id}")
    else:
        raise bad(f"expected a non-empty list or mapping of class names, got {type(raw).__name__}")
    pairs.sort()
    ids = [cid for cid, _ in pairs]
    names = [name for _, name in pairs]
    if len(set(ids)) != len(ids):
        raise bad(f"duplicate category ids {ids}")
    if len(set(names)) != len(names):
        raise bad(f"duplicate category names {names}")
    return tuple(names), {cid: i for i, cid in enumerate(ids)}


def _has_official_headers(text: Any) -> bool:
    return isinstance(text, str) and (SECTION_HEADER_RE.search(text) is not None or bool(unknown_section_headers(text)))


def read_ser30k_json(path: str | Path, images_root: str | Path, *, text: TextFormat = "auto") -> DatasetIndex:
    """Read one SER30K-format annotation JSON; images are ``images_root/<topic>/<file_name>``.

    Args:
        path: the JSON file.
        images_root: the ``Images`` folder.
        text: what the ``text`` field holds. ``"ocr"``: the in-sticker text (goes to ``ocr_text``).
            ``"descriptions"``: the public code's ``#The sticker's ...`` sections (parsed into ``descriptions``;
            ``ocr_text`` left empty). ``"auto"``: ``"descriptions"`` when any record's text contains one of the
            headers, else ``"ocr"``; decided once per file.

    Raises:
        FileNotFoundError: the JSON file does not exist.
        DataFormatError: broken JSON or a broken record (names the file, line, record and field).
    """
    path = Path(path)
    images_root = Path(images_root)
    if not path.is_file():
        raise FileNotFoundError(f"SER30K annotation file not found: {path}")
    raw_text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(raw_text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"invalid JSON ({exc.msg}, column {exc.colno})", line=exc.lineno) from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("annotations"), list):
        raise DataFormatError(path, "expected an object with an 'annotations' list", field="annotations")
    records: list[Any] = data["annotations"]
    if "categories" in data:
        classes, anno_to_label = _categories(path, data["categories"])
    else:
        classes, anno_to_label = SER30K_CLASSES, {i + 1: i for i in range(len(SER30K_CLASSES))}
    if text not in ("auto", "ocr", "descriptions"):
        raise ValueError(f"text must be 'auto', 'ocr' or 'descriptions', got {text!r}")
    as_descriptions = text == "descriptions" or (
        text == "auto" and any(isinstance(r, Mapping) and _has_official_headers(r.get("text")) for r in records)
    )

    line_cache: list[int] | None = None

    def bad(i: int, reason: str, field: str | None = None) -> DataFormatError:
        nonlocal line_cache
        if line_cache is None:
            line_cache = _record_lines(raw_text)
        line = line_cache[i] if i < len(line_cache) else None
        return DataFormatError(path, reason, line=line, record=i, field=field)

    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise bad(i, f"expected an object, got {type(rec).__name__}")
        for field in ("topic", "file_name"):
            value = rec.get(field)
            if not isinstance(value, str) or not value.strip():
                raise bad(i, f"missing or empty ({value!r})", field)
        topic, file_name = rec["topic"], rec["file_name"]
        if "anno" not in rec:
            raise bad(i, "missing", "anno")
        anno = parse_int(rec["anno"])
        if anno is None or anno not in anno_to_label:
            raise bad(i, f"{rec['anno']!r} is not one of the category ids {sorted(anno_to_label)}", "anno")
        raw = rec.get("text")
        if raw is None:
            raw = ""
        if not isinstance(raw, str):
            raise bad(i, f"expected a string, got {type(raw).__name__}", "text")
        key = f"{topic}/{file_name}"
        if key in seen:
            raise bad(i, f"duplicate image {key!r} (first at record {seen[key]})", "file_name")
        seen[key] = i
        meta = {k: v for k, v in rec.items() if k not in ("topic", "file_name", "text", "anno")}
        label = anno_to_label[anno]
        if as_descriptions:
            unknown = unknown_section_headers(raw)
            if unknown:
                raise bad(i, f"section header {unknown[0]!r} is not one of {list(OFFICIAL_HEADERS.values())}", "text")
            views = parse_official_text(raw) or None
            samples.append(Sample(images_root / topic / file_name, label, key, "", topic, views, meta))
        else:
            samples.append(Sample(images_root / topic / file_name, label, key, raw.strip(), topic, None, meta))
    return DatasetIndex(name=path.stem, root=images_root, classes=classes, samples=samples)


def read_ser30k(
    root: str | Path,
    split: str = "train",
    annotations: str | Path | None = None,
    *,
    text: TextFormat = "auto",
    descriptions_from: str | Path | None = None,
) -> DatasetIndex:
    """Read a SER30K split.

    Args:
        root: the dataset folder (holding ``Images/`` and ``Annotations/``).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (``all_annos.json``).
        annotations: another annotation JSON file or folder to read instead (see ``annotation_file``), e.g. the
            public code's ``Annotations_mg`` whose ``text`` holds descriptions.
        text: how to read the ``text`` field (see ``read_ser30k_json``); auto-detected by default.
        descriptions_from: a second annotation file or folder in the public code's description format; its
            descriptions are attached by key (``topic/file_name``) while OCR text and labels come from the first.
            Samples it lacks keep ``descriptions=None``; a label that disagrees is an error.

    Returns:
        A ``DatasetIndex`` named ``ser30k-<split>``: key ``topic/file_name``, group = topic, ``anno`` - 1 as label
        (through ``categories``), annotator labels ``anno1..3`` in ``meta``.
    """
    root = Path(root)
    path = annotation_file(root, split, annotations)
    index = read_ser30k_json(path, root / "Images", text=text)
    index.name = f"ser30k-{split}"
    if descriptions_from is not None:
        extra_path = annotation_file(root, split, descriptions_from)
        extra = read_ser30k_json(extra_path, root / "Images", text="descriptions")
        by_key = {s.key: s for s in extra.samples}
        merged = []
        for s in index.samples:
            other = by_key.get(s.key)
            if other is not None and extra.classes[other.label] != index.classes[s.label]:  # type: ignore[index]
                raise DataFormatError(
                    extra_path,
                    f"label of {s.key!r} is {extra.classes[other.label]!r} here but "  # type: ignore[index]
                    f"{index.classes[s.label]!r} in {path}",  # type: ignore[index]
                    field="anno",
                )
            views = other.descriptions if other is not None else None
            merged.append(Sample(s.path, s.label, s.key, s.ocr_text, s.group, views, s.meta))
        index.samples = merged
    return index
