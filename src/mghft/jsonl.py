"""JSON Lines files that the project appends to, read back and continued safely after a killed run.

Every line is one JSON value written with its newline in one ``write``, so a process killed while appending leaves
at most one *half-written last line*: bytes after the last newline that do not parse as JSON. Every JSONL the
project appends to (``mghft zeroshot``'s ``predictions.jsonl``, a run's ``log.jsonl`` and ``resumes.jsonl``) is
read with :func:`read_jsonl` and continued with :func:`open_append`:

- a half-written last line is reported (:class:`TornLineWarning`, naming the file and line) and left out of what
  is read; continuing the file (a resumed run) drops it from the file first, so the next line starts clean;
- a complete last line that only lacks its newline is kept, and the newline is added before the next append;
- an unreadable line anywhere else is not a kill's trace but damage: :class:`JsonlError` names the file and line.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, TextIO

from mghft.errors import MghftError


class JsonlError(MghftError):
    """A JSON Lines file has an unreadable line that is not a half-written last line; the message names it."""


class TornLineWarning(UserWarning):
    """A JSON Lines file ends in a half-written line (its writer was stopped); the line is left out."""


def _split(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (without their newline) and the bytes after the last newline."""
    *lines, tail = data.split(b"\n")
    return lines, tail


def _parse(path: Path, number: int, raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise JsonlError(
            f"{path}:{number}: not a JSON line ({err})",
            hint=f"the file is damaged at line {number}: restore it, or remove that line by hand",
        ) from None


def _tail(path: Path, line_no: int, tail: bytes, action: str) -> tuple[Any | None, bool]:
    """The last line without a newline: ``(value, complete)``; a half-written one warns and gives ``(None, False)``."""
    if not tail.strip():
        return None, True
    try:
        return json.loads(tail.decode("utf-8")), True
    except (UnicodeDecodeError, json.JSONDecodeError):
        warnings.warn(
            f"{path}:{line_no}: half-written last line ({len(tail)} bytes; its writer was stopped while writing "
            f"it): {action}",
            TornLineWarning,
            stacklevel=3,
        )
        return None, False


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """The values of a JSON Lines file in order (blank lines skipped); ``[]`` when the file does not exist.

    A half-written last line is left out with a :class:`TornLineWarning` naming the file and line; the file is not
    changed (:func:`open_append` drops the line when the file is continued).

    Raises:
        JsonlError: any other line is not JSON (names the file and the line number).
    """
    path = Path(path)
    if not path.exists():
        return []
    lines, tail = _split(path.read_bytes())
    out = [_parse(path, n, raw) for n, raw in enumerate(lines, 1) if raw.strip()]
    value, complete = _tail(path, len(lines) + 1, tail, "left out")
    if complete and value is not None:
        out.append(value)
    return out


def repair_tail(path: str | os.PathLike[str]) -> bool:
    """Make ``path`` end at a line boundary before it is appended to: a half-written last line is cut off (with a
    :class:`TornLineWarning` naming the file and line), a complete one gets its newline. Returns whether the file
    changed. Only the tail is read, so this costs the same for any file size."""
    path = Path(path)
    if not path.exists():
        return False
    size = path.stat().st_size
    if size == 0:
        return False
    with open(path, "rb") as fh:
        start = size
        chunk = b""
        while start > 0:  # find the last newline, reading backwards
            step = min(1 << 16, start)
            start -= step
            fh.seek(start)
            chunk = fh.read(step) + chunk
            if b"\n" in chunk:
                break
    cut = chunk.rfind(b"\n")
    tail = chunk[cut + 1 :]
    if not tail:
        return False
    boundary = start + cut + 1  # the byte after the last newline (0 when there is none)
    with open(path, "rb") as fh:
        line_no = fh.read(boundary).count(b"\n") + 1
    _, complete = _tail(path, line_no, tail, "dropped from the file before it is continued")
    with open(path, "r+b") as fh:
        if complete:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        else:
            fh.truncate(boundary)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def open_append(path: str | os.PathLike[str]) -> TextIO:
    """``path`` opened for appending text lines, after :func:`repair_tail` (a half-written last line is dropped)."""
    repair_tail(path)
    return open(path, "a", encoding="utf-8")  # noqa: SIM115 - the caller closes it (a ``with`` block)


def append_jsonl(path: str | os.PathLike[str], *values: Any, ensure_ascii: bool = True) -> None:
    """Append one line per value (each written whole, with its newline, in one ``write``), after
    :func:`repair_tail`."""
    with open_append(path) as fh:
        for value in values:
            fh.write(json.dumps(value, ensure_ascii=ensure_ascii) + "\n")
