"""Where a catalogue's stickers are: local folders and files, manifests (CSV, JSONL, Parquet) of paths or URIs.

A URI with a scheme (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``, ``file://`` ...) is opened with the
filesystem pyarrow derives from it (:func:`pyarrow.fs.FileSystem.from_uri`), so credentials come from the usual
places of each store; a plain path is a local file. Listing happens on the driver (paths only, never images);
reading happens in the Ray tasks.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from mghft.errors import UsageError

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
PATH_COLUMNS = ("path", "uri", "image", "file", "file_path", "image_path")
"""Column names a manifest's sticker location may have, tried in this order."""

MAX_STICKER_BYTES = 64 << 20
"""A file larger than this is not a sticker: it is refused before it is read."""


def is_uri(text: str) -> bool:
    """``scheme://...`` (not a Windows drive letter)."""
    head, sep, _ = text.partition("://")
    return bool(sep) and len(head) > 1 and head.replace("+", "").isalnum()


def _manifest_paths(path: Path) -> list[str]:
    """The sticker locations listed in a manifest, relative paths resolved against its folder."""
    suffix = path.suffix.lower()
    rows: Iterable[dict]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        names = table.column_names
        column = next((c for c in PATH_COLUMNS if c in names), None)
        if column is None:
            raise UsageError(f"{path}: no path column (one of {', '.join(PATH_COLUMNS)}) among {names}")
        values = table.column(column).to_pylist()
        rows = ({column: v} for v in values)
    elif suffix == ".jsonl":
        parsed = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        parsed.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UsageError(f"{path}, line {n}: not JSON ({e.msg})") from None
        rows, column = parsed, next((c for c in PATH_COLUMNS if parsed and c in parsed[0]), None)
    else:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            column = next((c for c in PATH_COLUMNS if c in fields), None)
            rows = list(reader)
    if column is None:
        raise UsageError(f"{path}: no path column (one of {', '.join(PATH_COLUMNS)})")
    out = []
    for n, row in enumerate(rows, 1):
        value = row.get(column) if isinstance(row, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"{path}, row {n}: field {column!r} is empty")
        value = value.strip()
        out.append(value if is_uri(value) or os.path.isabs(value) else str(path.parent / value))
    return out


def list_inputs(paths: Sequence[str | Path]) -> list[str]:
    """Every sticker location under ``paths``: image files in local folders (recursively, regular files only,
    hidden entries skipped), the entries of manifests (``.csv``/``.jsonl``/``.parquet``), URIs as given.

    Raises:
        UsageError: a path that does not exist, or a manifest without a path column.
    """
    from mghft.data.images import IMAGE_EXTENSIONS

    out: list[str] = []
    for raw in paths:
        text = str(raw)
        if is_uri(text) and not text.startswith("file://"):
            out.append(text)
            continue
        p = Path(text.removeprefix("file://"))
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for f in sorted(filenames):
                    full = Path(dirpath) / f
                    if f.startswith(".") or full.suffix.lower() not in IMAGE_EXTENSIONS:
                        continue
                    try:
                        regular = stat.S_ISREG(full.stat().st_mode)
                    except OSError:
                        regular = False
                    if regular:
                        out.append(str(full))
        elif p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
            out.extend(_manifest_paths(p))
        elif p.exists():
            out.append(str(p))
        else:
            raise UsageError(f"no such file or folder: {p}")
    return out


def read_bytes(location: str, max_bytes: int = MAX_STICKER_BYTES) -> bytes:
    """The bytes of one sticker: a local regular file, or a URI through pyarrow's filesystems.

    Raises:
        OSError: not found, not a regular file, larger than ``max_bytes``, or unreadable (the message names it).
    """
    if is_uri(location) and not location.startswith("file://"):
        from pyarrow import fs

        filesystem, path = fs.FileSystem.from_uri(location)
        info = filesystem.get_file_info(path)
        if info.type != fs.FileType.File:
            raise OSError(f"{location}: not a file")
        if info.size is not None and info.size > max_bytes:
            raise OSError(f"{location}: {info.size} bytes, over the {max_bytes}-byte limit")
        with filesystem.open_input_stream(path) as f:
            data = f.read(max_bytes + 1)
    else:
        path = location.removeprefix("file://")
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path}: not a regular file")
        if st.st_size > max_bytes:
            raise OSError(f"{path}: {st.st_size} bytes, over the {max_bytes}-byte limit")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(f"{location}: over the {max_bytes}-byte limit")
    return data


__all__ = ["MANIFEST_SUFFIXES", "PATH_COLUMNS", "is_uri", "list_inputs", "read_bytes"]
