"""The error every dataset reader raises on broken input, and the small parsing helpers the readers share."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from mghft.errors import MghftError


class DataFormatError(MghftError, ValueError):
    """Broken dataset input. The message names the file, the row (line number or record index) and the field.

    Attributes:
        file: the file at fault.
        line: 1-based line number where the row starts, if known.
        record: 0-based record index (JSON arrays), if known.
        field: the column or key at fault, if any.
        reason: what is wrong.
    """

    def __init__(
        self,
        file: str | Path,
        reason: str,
        *,
        line: int | None = None,
        record: int | None = None,
        field: str | None = None,
    ) -> None:
        where = [str(file)]
        if line is not None:
            where.append(f"line {line}")
        if record is not None:
            where.append(f"record {record}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {reason}")
        self.file = Path(file)
        self.line = line
        self.record = record
        self.field = field
        self.reason = reason


def decode_text(path: Path, data: bytes, encoding: str | None) -> str:
    """Decode a text file's bytes; ``encoding=None`` tries UTF-8 (with or without BOM), then GB18030 (a GBK superset).

    UTF-8 is tried first because GBK decoding of UTF-8 bytes usually "succeeds" with garbage, while GBK bytes are
    almost never valid UTF-8.

    Raises:
        DataFormatError: naming the line of the first byte that no candidate encoding accepts.
    """
    candidates = [encoding] if encoding else ["utf-8-sig", "gb18030"]
    error: UnicodeDecodeError | None = None
    for candidate in candidates:
        try:
            text = data.decode(candidate)
        except UnicodeDecodeError as exc:
            error = exc if error is None or exc.start > error.start else error
            continue
        return text.replace("\r\n", "\n").replace("\r", "\n")
    assert error is not None
    line = data.count(b"\n", 0, error.start) + 1
    raise DataFormatError(path, f"cannot decode as {' or '.join(candidates)} (byte offset {error.start})", line=line)


def csv_rows(text: str, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """Rows of CSV text with the line number each row starts on (quoted newlines make rows span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 1
    for row in reader:
        yield start, row
        start = reader.line_num + 1


def normalize_header(name: str) -> str:
    """Column name for matching: lower case, ``_``/``-`` as spaces, runs of spaces collapsed, BOM stripped."""
    return " ".join(name.replace("\ufeff", "").replace("_", " ").replace("-", " ").lower().split())


def parse_int(value: object) -> int | None:
    """An integer from an int, an integral float or a decimal string; ``None`` for anything else (bools too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit():
            return int(text)
    return None
