"""Interchange with the public MGHFT code: a SER30K annotation JSON whose ``text`` holds the four sections.

The public code reads descriptions from a copy of the SER30K annotation file (``{"annotations": [...],
"categories": [...]}``) in which each record's ``text`` is replaced by ``#The sticker's intention: ...`` and the
three other sections (see :mod:`mghft.views`). Records find their image as ``<images_root>/<topic>/<file_name>``
(``<images_root>/<file_name>`` without a topic); the store is keyed by the image's content hash.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from mghft.interpret.description import Description, InvalidAnswer, image_sha256
from mghft.interpret.store import DescriptionStore
from mghft.views import VIEWS, format_official_text, parse_official_text

IMPORT_BACKEND = "official-import"


@dataclass
class InterchangeReport:
    """Counts of an export or import, and the keys of records that could not be matched."""

    records: int = 0
    written: int = 0
    existing: int = 0
    missing_image: list[str] = field(default_factory=list)
    missing_description: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)

    def format(self) -> str:
        """One line."""
        return (
            f"{self.records} records: {self.written} written, {self.existing} already present, "
            f"{len(self.missing_image)} without image file, {len(self.missing_description)} without description, "
            f"{len(self.incomplete)} with fewer than {len(VIEWS)} views"
        )


def infer_images_root(annotations_json: str | PathLike[str]) -> Path:
    """The SER30K ``Images`` folder next to an ``Annotations`` tree holding ``annotations_json``.

    Raises:
        FileNotFoundError: no ancestor folder of the file has an ``Images`` subfolder.
    """
    path = Path(annotations_json).resolve()
    for parent in path.parents:
        if (parent / "Images").is_dir():
            return parent / "Images"
    raise FileNotFoundError(f"no Images folder above {annotations_json}; pass images_root")


def _record_key(record: dict[str, Any]) -> str:
    topic = str(record.get("topic") or "")
    name = str(record.get("file_name") or "")
    return f"{topic}/{name}" if topic else name


def _sha_of(path: Path, store: DescriptionStore) -> str | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    cached = store.cached_sha(str(path), stat.st_size, stat.st_mtime_ns)
    if cached:
        return cached
    sha = image_sha256(path)
    store.remember_files([(str(path), stat.st_size, stat.st_mtime_ns, sha)])
    return sha


def _load(path: str | PathLike[str]) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: not a SER30K annotation file (no 'annotations' list)")
    return data


def export_official_json(
    store: DescriptionStore,
    annotations_json: str | PathLike[str],
    out_path: str | PathLike[str],
    *,
    images_root: str | PathLike[str] | None = None,
    on_missing: str = "error",
) -> InterchangeReport:
    """Write a copy of a SER30K annotation JSON with each record's ``text`` replaced by the four sections.

    Args:
        store: where the descriptions are.
        annotations_json: e.g. ``SER30K/Annotations/image-level/train.json``.
        out_path: the copy to write (every other field unchanged).
        images_root: the ``Images`` folder; default: found next to the ``Annotations`` folder.
        on_missing: for a record without description (or image file): ``error`` (raise, write nothing),
            ``empty`` (``text`` becomes ``""``) or ``keep`` (original ``text`` kept).

    Raises:
        ValueError: ``on_missing="error"`` and some records have no description.
    """
    if on_missing not in ("error", "empty", "keep"):
        raise ValueError(f"on_missing must be error, empty or keep, got {on_missing!r}")
    root = Path(images_root) if images_root is not None else infer_images_root(annotations_json)
    data = _load(annotations_json)
    out = copy.deepcopy(data)
    report = InterchangeReport(records=len(out["annotations"]))
    for record in out["annotations"]:
        key = _record_key(record)
        sha = _sha_of(root / key, store)
        desc = store.get(sha) if sha else None
        if desc is None:
            (report.missing_image if sha is None else report.missing_description).append(key)
            if on_missing == "empty":
                record["text"] = ""
            continue
        record["text"] = format_official_text(desc.views)
        report.written += 1
    missing = report.missing_image + report.missing_description
    if missing and on_missing == "error":
        raise ValueError(f"{len(missing)} records have no description (first: {missing[:3]}); {report.format()}")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(out, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    return report


def import_official_json(
    path: str | PathLike[str],
    images_root: str | PathLike[str],
    store: DescriptionStore,
    *,
    model: str = "unknown",
    overwrite: bool = False,
) -> InterchangeReport:
    """Read descriptions from a public-code annotation JSON into the store, keyed by the images' content hash.

    Records whose image file is missing, or whose text lacks one of the four sections, are reported, not stored.

    Args:
        path: the annotation JSON with descriptions in ``text``.
        images_root: the ``Images`` folder the records point into.
        store: where to put them.
        model: recorded as the model that wrote them (the public descriptions do not say).
        overwrite: replace descriptions the store already has.
    """
    data = _load(path)
    root = Path(images_root)
    report = InterchangeReport(records=len(data["annotations"]))
    for record in data["annotations"]:
        key = _record_key(record)
        sha = _sha_of(root / key, store)
        if sha is None:
            report.missing_image.append(key)
            continue
        views = parse_official_text(str(record.get("text") or ""))
        try:
            desc = Description(
                image_sha256=sha, views=views, backend=IMPORT_BACKEND, model=model, prompt_version="official"
            )
        except InvalidAnswer:
            report.incomplete.append(key)
            continue
        if store.put(desc, overwrite=overwrite):
            report.written += 1
        else:
            report.existing += 1
    return report
