"""What kind of file a path holds, judged by its content rather than its name, for error messages.

Used wherever a file is read (description stores, JSONL exports, configs), so that a CSV named ``.sqlite`` is
refused in the user's terms, not in SQLite's.
"""

from __future__ import annotations

from pathlib import Path

SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a SQLite database, judged by its content (its first 16 bytes), or None.

    A missing or empty file is fine (a new database is created there).
    """
    if path.is_dir():
        return f"{path} is a folder, not a SQLite file"
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        return None
    return f"{path} is not a SQLite database ({looks_like(path)})"


def jsonl_problem(path: Path) -> str | None:
    """Why ``path`` is not JSON Lines (one JSON object a line), judged by its first non-blank line, or None."""
    import json

    if path.is_dir():
        return f"{path} is a folder, not a JSONL file"
    if not path.is_file():
        return None  # the caller's open names a missing file
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw.strip()
            if not line:
                continue
            try:
                if isinstance(json.loads(line), dict):
                    return None
            except ValueError:
                pass
            return f"{path} is not JSONL: its first line is not a JSON object ({looks_like(path)})"
    return None


def looks_like(path: Path) -> str:
    """A few words on what a file seems to be, from its first bytes, for an error message."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(SQLITE_MAGIC):
        return "it is a SQLite database"
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff":
        return "it is an image"
    if head[:4] == b"PK\x03\x04":
        return "it is a zip archive"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "it is binary"
    first = text.splitlines()[0] if text.strip() else ""
    if first.lstrip().startswith(("{", "[")):
        return "it looks like JSON"
    if "," in first or "\t" in first:
        return f"it looks like CSV: {first[:60]!r}"
    return f"it starts {first[:60]!r}"


__all__ = ["SQLITE_MAGIC", "jsonl_problem", "looks_like", "sqlite_problem"]
