"""The catalogue output of ``--engine ray``: a Delta Lake table with one current row per (path, fingerprint).

Every row says what wrote it (``fingerprint``: :mod:`mghft.fingerprint`, with its readable ``fingerprint_parts``)
and what it was written from (``path`` and the bytes' ``sha256``). Rows are committed in chunks, each chunk one
Delta transaction (a keyed merge on (path, fingerprint)), so a killed job keeps every committed chunk and nothing
half-written; a chunk committed twice (a retried batch, however regrouped) changes nothing. Within one
(path, fingerprint), a later row replaces the current one when it is a success, when the current one is an error,
or when the file's bytes changed (another ``sha256``); a later error never replaces a success of the same bytes.

The table is read by any Delta Lake reader (``deltalake``, DuckDB's ``delta_scan``, Spark, Polars, pandas through
``deltalake``) or :func:`read_output`; :func:`export_output` writes a plain Parquet or CSV file of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mghft.errors import MghftError, UsageError

MERGE_KEY = ("path", "fingerprint")
"""The table holds one row per these columns; a row's full identity is (path, sha256, fingerprint)."""

KINDS = ("predict", "interpret")


def _require_deltalake() -> Any:
    try:
        import deltalake
    except ImportError:
        raise UsageError("--engine ray writes a Delta Lake table", hint="pip install 'mghft[ray]'") from None
    return deltalake


def is_table(folder: str | Path) -> bool:
    """Whether ``folder`` holds a Delta table (a ``_delta_log`` folder)."""
    return (Path(folder) / "_delta_log").is_dir()


def _open(folder: str | Path) -> Any:
    deltalake = _require_deltalake()
    folder = Path(folder)
    if not is_table(folder):
        hint = "give the --out folder of an `--engine ray` run"
        if any(folder.glob("part-*.parquet")):
            hint = "this folder holds Parquet part files of an earlier version: write to a new --out folder"
        raise MghftError(f"{folder}: not an mghft --engine ray output (no Delta table: no _delta_log)", hint=hint)
    return deltalake.DeltaTable(str(folder))


def table_kind(folder: str | Path) -> str:
    """``predict`` or ``interpret``: what wrote the table (its Delta metadata name ``mghft-<kind>``)."""
    name = _open(folder).metadata().name or ""
    return name.removeprefix("mghft-")


def ensure_table(folder: str | Path, schema: Any, kind: str) -> None:
    """Create the table at ``folder`` (an empty folder or none) for ``kind``; an existing one must be of ``kind``.

    Raises:
        UsageError: ``folder`` holds another kind of output, part files of an earlier version, or other files.
    """
    deltalake = _require_deltalake()
    folder = Path(folder)
    if is_table(folder):
        have = table_kind(folder)
        if have != kind:
            raise UsageError(
                f"--out {folder} holds a `mghft {have}` table; this run writes `mghft {kind}` rows",
                hint="give another --out folder",
            )
        return
    if folder.is_dir() and any(p.name not in ("_jobs", "_job.json") for p in folder.iterdir()):
        raise UsageError(
            f"--out {folder} is a folder with other files, not an `--engine ray` output table",
            hint="give a new or empty folder (output of earlier versions, Parquet part files, stays where it is)",
        )
    folder.mkdir(parents=True, exist_ok=True)
    deltalake.DeltaTable.create(str(folder), schema=schema, mode="ignore", name=f"mghft-{kind}")


def _one_per_key(table: Any) -> Any:
    """The rows of one chunk with one per (path, fingerprint): a success before an error, else the later row (a
    merge's source may hold each key once)."""
    keep: dict[tuple[str, str], int] = {}
    errors = table.column("error").to_pylist()
    for i, key in enumerate(zip(*(table.column(k).to_pylist() for k in MERGE_KEY), strict=True)):
        prev = keep.get(key)
        if prev is None or errors[prev] is not None or errors[i] is None:
            keep[key] = i
    return table if len(keep) == table.num_rows else table.take(sorted(keep.values()))


def commit(folder: str | Path, rows: Any) -> int:
    """Merge ``rows`` (a pyarrow Table of the table's schema) into the table in one transaction; returns the rows
    inserted or updated."""
    if rows.num_rows == 0:
        return 0
    dt = _open(folder)
    source = _one_per_key(rows)
    on = " AND ".join(f"t.{k} = s.{k}" for k in MERGE_KEY)
    replace = "s.error IS NULL OR t.error IS NOT NULL OR s.sha256 <> t.sha256"
    metrics = (
        dt.merge(source, predicate=on, source_alias="s", target_alias="t", merge_schema=True)
        .when_matched_update_all(predicate=replace)
        .when_not_matched_insert_all()
        .execute()
    )
    return int(metrics.get("num_target_rows_inserted", 0)) + int(metrics.get("num_target_rows_updated", 0))


def done_pairs(folder: str | Path, fingerprint: str) -> set[tuple[str, str]]:
    """(path, sha256) of the success rows written with ``fingerprint`` (what a rerun skips)."""
    if not is_table(folder):
        return set()
    t = _open(folder).to_pyarrow_table(columns=["path", "sha256", "error"], filters=[("fingerprint", "=", fingerprint)])
    return {
        (p, s)
        for p, s, e in zip(*(t.column(c).to_pylist() for c in ("path", "sha256", "error")), strict=True)
        if e is None
    }


def fingerprints(folder: str | Path) -> dict[str, int]:
    """fingerprint -> rows, for every fingerprint in the table."""
    import pyarrow.compute as pc

    t = _open(folder).to_pyarrow_table(columns=["fingerprint"])
    counts = pc.value_counts(t.column("fingerprint")).to_pylist()
    return {c["values"]: int(c["counts"]) for c in counts}


def read_output(folder: str | Path, fingerprint: str | None = None) -> Any:
    """The table as one pyarrow Table: one current row per (path, fingerprint) (the table holds no other).

    Args:
        folder: the ``--out`` folder of an ``--engine ray`` run.
        fingerprint: only the rows of this fingerprint (a prefix of at least 8 hex digits is enough); ``None``:
            every fingerprint's rows.

    Raises:
        MghftError: ``folder`` is not such a table, or ``fingerprint`` matches none (or several) of its fingerprints.
    """
    dt = _open(folder)
    if fingerprint is None:
        return dt.to_pyarrow_table()
    return dt.to_pyarrow_table(filters=[("fingerprint", "=", resolve_fingerprint(folder, fingerprint))])


def resolve_fingerprint(folder: str | Path, prefix: str) -> str:
    """The table's fingerprint that starts with ``prefix``.

    Raises:
        MghftError: none or several start with it (the message lists them).
    """
    have = fingerprints(folder)
    hits = [f for f in have if f.startswith(prefix)] if len(prefix) >= 8 else [f for f in have if f == prefix]
    if len(hits) != 1:
        listed = ", ".join(f"{f} ({n} rows)" for f, n in sorted(have.items())) or "none"
        raise MghftError(
            f"{folder}: fingerprint {prefix!r} matches {len(hits)} of the table's fingerprints: {listed}",
            hint="give one of them (at least 8 hex digits)",
        )
    return hits[0]


def export_output(folder: str | Path, dest: str | Path, fmt: str, fingerprint: str | None = None) -> int:
    """Write the table (or one fingerprint's rows) as one Parquet or CSV file; returns the rows written.

    List columns (``emoji``, ``emotions``) are written to CSV as JSON text.

    Raises:
        UsageError: ``fmt`` is not ``parquet`` or ``csv``.
    """
    import json

    import pyarrow as pa

    table = read_output(folder, fingerprint)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, tmp)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        for i, f in enumerate(table.schema):
            if pa.types.is_list(f.type) or pa.types.is_struct(f.type):
                text = pa.array([None if v is None else json.dumps(v, ensure_ascii=False)
                                 for v in table.column(i).to_pylist()], pa.string())  # fmt: skip
                table = table.set_column(i, f.name, text)
        pcsv.write_csv(table, tmp)
    else:
        raise UsageError(f"--format {fmt!r}: not one of parquet, csv")
    tmp.replace(dest)
    return table.num_rows


def columns_missing(table: Any, needed: Sequence[str]) -> list[str]:
    return [c for c in needed if c not in table.column_names]


__all__ = [
    "MERGE_KEY",
    "commit",
    "done_pairs",
    "ensure_table",
    "export_output",
    "fingerprints",
    "is_table",
    "read_output",
    "resolve_fingerprint",
    "table_kind",
]
