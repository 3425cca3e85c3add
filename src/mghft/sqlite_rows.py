"""Rows of an SQLite table looked up by many keys, an indexed ``IN (...)`` query per batch of keys."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

KEYS_PER_QUERY = 500
"""Under SQLite's default limit of bound parameters per statement (999 before 3.32)."""


def rows_where_in(db: sqlite3.Connection, query: str, column: str, keys: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
    """The rows of ``query`` (a ``SELECT`` without ``WHERE``) whose ``column`` is one of ``keys``."""
    for i in range(0, len(keys), KEYS_PER_QUERY):
        part = keys[i : i + KEYS_PER_QUERY]
        yield from db.execute(f"{query} WHERE {column} IN ({','.join('?' * len(part))})", part)
