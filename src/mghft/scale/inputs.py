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
from collections.abc import Callable, Iterable, Sequence
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


def list_inputs(paths: Sequence[str | Path], on_skip: Callable[[str], None] | None = None) -> list[str]:
    """Every sticker location under ``paths``: image files in local folders (the rules of
    :func:`mghft.data.walk.find_images`: recursively, regular files only), the entries of manifests
    (``.csv``/``.jsonl``/``.parquet``), URIs as given.

    Args:
        paths: folders, files, manifests, URIs.
        on_skip: called with ``"<path>: <reason>"`` for each local entry that is not read (FIFO, device, ...).

    Raises:
        UsageError: a path that does not exist, or a manifest without a path column.
    """
    from mghft.data.walk import MISSING, find_images

    out: list[str] = []
    for raw in paths:
        text = str(raw)
        if is_uri(text) and not text.startswith("file://"):
            out.append(text)
            continue
        p = Path(text.removeprefix("file://"))
        if p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
            out.extend(_manifest_paths(p))
            continue
        found = find_images([p])
        for skipped in found.skipped:
            if skipped.reason == MISSING:
                raise UsageError(f"no such file or folder: {skipped.path}")
            if on_skip is not None:
                on_skip(str(skipped))
        out.extend(str(f) for f in found.files)
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
        from mghft.data.images import read_capped

        with filesystem.open_input_stream(path) as f:
            data = read_capped(f, max_bytes)
    else:
        from mghft.data.images import ImageLoadError, read_regular_file

        try:  # regular files only, opened without blocking (a FIFO swapped in is refused, not waited on)
            data = read_regular_file(location.removeprefix("file://"), max_bytes=max_bytes)
        except ImageLoadError as e:
            raise OSError(str(e)) from None
    if len(data) > max_bytes:
        raise OSError(f"{location}: over the {max_bytes}-byte limit")
    return data


__all__ = ["MANIFEST_SUFFIXES", "PATH_COLUMNS", "is_uri", "list_inputs", "read_bytes"]
