"""The description store: one durable record per image, keyed by the image's content hash.

SQLite in WAL mode: every ``put`` is its own committed transaction, so a crash or Ctrl-C loses only the answers
that had not arrived yet; several threads of one process may write at once (one connection behind a lock), and
several processes may share a store (SQLite's own locking, with a busy timeout). Failures live in their own table:
a failed image is not done, is retried by the next run, and keeps its last error until it succeeds.

A JSONL export/import moves descriptions between stores (and machines, for sharded runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from mghft.errors import DataError, MghftError, UsageError
from mghft.filekinds import jsonl_problem, sqlite_problem
from mghft.interpret.description import Description, image_sha256, utc_now
from mghft.sqlite_rows import rows_where_in

_SCHEMA = """
CREATE TABLE IF NOT EXISTS descriptions (
    image_sha256 TEXT PRIMARY KEY,
    views TEXT NOT NULL,
    ocr_text TEXT NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    created TEXT NOT NULL,
    usage TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    image_sha256 TEXT PRIMARY KEY,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    source TEXT NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    last_attempt TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    image_sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL,
    config TEXT NOT NULL,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

SCHEMA_VERSION = "1"


class MissingStoreError(MghftError):
    """A description store that should be read does not exist (nothing is created in its place)."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"description store {path} does not exist",
            hint=f"make it with `mghft interpret --dataset … --backend … --store {path}`, or set "
            "`data.descriptions: null` to use the descriptions the dataset itself carries (none: image only)",
        )
        self.path = path


class StoreOpenError(MghftError):
    """SQLite cannot open a description store (the message names the file and why)."""

    def __init__(self, path: Path, error: BaseException, *, read_only: bool) -> None:
        hint = (
            "check the file's and its folder's permissions; a store on read-only media or a shared read-only "
            "mount is read by commands that only read it (predict, serve, --engine ray)"
        )
        if not read_only:
            hint = "writing needs a writable folder beside the file (SQLite's journal); " + hint
        super().__init__(f"description store {path}: SQLite cannot open it ({error})", hint=hint)
        self.path = path


NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "lustre", "gpfs",
                                 "ceph", "fuse.ceph", "glusterfs", "fuse.glusterfs", "afs", "beegfs", "fuse.s3fs",
                                 "fuse.gcsfuse", "fuse.juicefs", "virtiofs"})  # fmt: skip
"""Filesystem types (``/proc/mounts``) where SQLite's WAL mode does not work (its shared memory is per host)."""


def filesystem_type(path: str | PathLike[str]) -> str | None:
    """The type of the filesystem holding ``path`` (the longest ``/proc/mounts`` mount point above it), or
    ``None`` where it cannot be told (not Linux)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(Path(path).resolve())
    best, kind = "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def journal_mode(path: str | PathLike[str]) -> str:
    """``WAL`` for a store on a local filesystem, ``DELETE`` (the rollback journal) on a network one."""
    return "DELETE" if filesystem_type(Path(path).parent) in NETWORK_FILESYSTEMS else "WAL"


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection; ``immutable=1`` where SQLite could not create its lock or WAL index files beside the
    store (a read-only folder), so it reads the file as it is."""
    from urllib.parse import quote

    immutable = not os.access(path.parent, os.W_OK)
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")
    return sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None, check_same_thread=False)


class MixedDescriptionsError(MghftError):
    """A store whose descriptions come from several writers (backend/model/prompt version), none chosen."""


def writer_of(desc: Description) -> str:
    """``backend/model/prompt_version``: which writer produced a description."""
    return f"{desc.backend}/{desc.model}/{desc.prompt_version}"


def read_descriptions(
    store_path: str | PathLike[str],
    images: Mapping[str, Sequence[str | PathLike[str]]],
    source: str | None = None,
) -> tuple[dict[str, list[Description | None]], dict[str, Any]]:
    """The descriptions of the images of each split, checked for one writer, and what was found.

    Args:
        store_path: an existing store (``mghft interpret`` output).
        images: split name -> image files, in sample order.
        source: the writer (``backend/model/prompt_version``) to use, images described only by others counting as
            missing; ``"any"``: mix every writer on purpose; ``None``: the store must hold one writer only.

    Returns:
        split -> one description (or ``None``) per image, and a summary ``{"source": "store", "store", "writers":
        {writer: count used}, "missing", "other_writers": {writer: count ignored}, "description_source",
        "mixed"}``.

    Raises:
        MissingStoreError: no store at ``store_path``.
        MixedDescriptionsError: several writers and no ``source``; or ``source`` names no writer of these images.
        MghftError: the store describes none of the images.
    """
    found: dict[str, list[Description | None]] = {}
    with DescriptionStore(store_path, read_only=True) as store:
        for name, paths in images.items():
            found[name] = [store.get(image_sha256(p)) for p in paths]
    writers: dict[str, int] = {}
    for descs in found.values():
        for d in descs:
            if d is not None:
                writers[writer_of(d)] = writers.get(writer_of(d), 0) + 1
    total = sum(len(v) for v in found.values())
    if not writers:
        raise MghftError(
            f"description store {store_path} describes none of the {total} images",
            hint=f"describe them with `mghft interpret --dataset … --store {store_path}`, or set "
            "`data.descriptions: null` to train on the dataset's own descriptions (none: image only)",
        )
    counts = ", ".join(f"{w}: {c}" for w, c in sorted(writers.items()))
    if source is None and len(writers) > 1:
        raise MixedDescriptionsError(
            f"description store {store_path} mixes {len(writers)} writers (backend/model/prompt version) over "
            f"these images: {counts}",
            hint="set `data.description_source` to one of them (the others count as missing), or to `any` to mix "
            "them on purpose",
        )
    other: dict[str, int] = {}
    if source not in (None, "any"):
        if source not in writers:
            raise MixedDescriptionsError(
                f"data.description_source {source!r} wrote none of these images in {store_path}; writers: {counts}",
                hint="set `data.description_source` to one of the writers listed, or to `any`",
            )
        other = {w: c for w, c in writers.items() if w != source}
        writers = {source: writers[source]}
        found = {n: [d if d is not None and writer_of(d) == source else None for d in v] for n, v in found.items()}
    missing = sum(d is None for v in found.values() for d in v)
    summary = {
        "source": "store",
        "store": str(store_path),
        "writers": dict(sorted(writers.items())),
        "missing": missing,
        "other_writers": dict(sorted(other.items())),
        "description_source": source,
        "mixed": len(writers) > 1,
    }
    return found, summary


@dataclass(frozen=True)
class Failure:
    """The last failed attempt to describe an image."""

    image_sha256: str
    error: str
    attempts: int
    source: str
    backend: str
    model: str
    last_attempt: str


class DescriptionStore:
    """A durable map ``image_sha256 -> Description`` with a failure log.

    Args:
        path: the SQLite file (created with its folder if missing, unless ``must_exist`` or ``read_only``).
        must_exist: refuse a missing file instead of creating it.
        read_only: open it for reading only (SQLite ``mode=ro``; ``immutable=1`` where its folder is not writable,
            e.g. read-only media, where SQLite could not create its lock files): nothing is created or written,
            and a missing file is refused.

    Where it lives decides the journal: WAL on a local filesystem (readers do not wait for the writer), SQLite's
    rollback journal on a network filesystem (NFS, SMB, ...), where WAL's shared memory does not work.

    Raises:
        MissingStoreError: ``must_exist`` or ``read_only`` and no file at ``path``.
        StoreOpenError: SQLite cannot open it (the message names the file and SQLite's reason).
    """

    def __init__(self, path: str | PathLike[str], *, must_exist: bool = False, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if (must_exist or read_only) and not self.path.is_file():
            raise MissingStoreError(self.path)
        problem = sqlite_problem(self.path)  # by content: a CSV named .sqlite would otherwise end in sqlite3's words
        if problem:
            raise UsageError(f"description store: {problem}", hint="give the SQLite file `mghft interpret` wrote")
        self._lock = threading.RLock()
        try:
            if read_only:
                self._db = _connect_read_only(self.path)
                self._check_schema()
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA journal_mode={journal_mode(self.path)}")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=60000")
            with self._lock:
                self._db.executescript(_SCHEMA)
                row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            self._check_schema()
        except (sqlite3.Error, OSError) as e:
            raise StoreOpenError(self.path, e, read_only=read_only) from None

    def _check_schema(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None or row[0] != SCHEMA_VERSION:
            raise ValueError(
                f"{self.path}: store schema {row[0] if row else 'none'}, this version reads {SCHEMA_VERSION}"
            )

    # --- descriptions ---------------------------------------------------------------------------------------------

    @staticmethod
    def _row_to_description(row: tuple[Any, ...]) -> Description:
        sha, views, ocr, backend, model, prompt_version, created, usage = row
        return Description(
            image_sha256=sha,
            views=json.loads(views),
            ocr_text=ocr,
            backend=backend,
            model=model,
            prompt_version=prompt_version,
            created=created,
            usage=json.loads(usage),
        )

    def get(self, sha: str) -> Description | None:
        """The description of the image with this hash, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT * FROM descriptions WHERE image_sha256=?", (sha,)).fetchone()
        return None if row is None else self._row_to_description(row)

    def put(self, desc: Description, *, overwrite: bool = True) -> bool:
        """Store (or replace) a description and clear the image's failure record; committed on return.

        Returns:
            whether it was written (``False`` only when ``overwrite`` is off and the image was already described).
        """
        values = (
            desc.image_sha256,
            json.dumps(desc.views, ensure_ascii=False),
            desc.ocr_text,
            desc.backend,
            desc.model,
            desc.prompt_version,
            desc.created,
            json.dumps(desc.usage, sort_keys=True),
        )
        verb = "INSERT OR REPLACE" if overwrite else "INSERT OR IGNORE"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(f"{verb} INTO descriptions VALUES (?,?,?,?,?,?,?,?)", values)
                self._db.execute("DELETE FROM failures WHERE image_sha256=?", (desc.image_sha256,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return cur.rowcount > 0

    def delete(self, sha: str) -> bool:
        """Remove one description; returns whether it existed."""
        with self._lock:
            return self._db.execute("DELETE FROM descriptions WHERE image_sha256=?", (sha,)).rowcount > 0

    def __contains__(self, sha: object) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM descriptions WHERE image_sha256=?", (sha,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM descriptions").fetchone()[0])

    def __iter__(self) -> Iterator[Description]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM descriptions ORDER BY image_sha256").fetchall()
        return (self._row_to_description(row) for row in rows)

    def shas(self) -> set[str]:
        """Hashes of all described images."""
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT image_sha256 FROM descriptions")}

    def provenance(self, shas: Iterable[str] | None = None) -> dict[str, str]:
        """Hash -> ``"backend/model/prompt_version"`` of every description, or of those of ``shas`` only (one
        indexed query per 500 hashes: what a plan asks about its next files, without reading the whole store)."""
        query = "SELECT image_sha256, backend, model, prompt_version FROM descriptions"
        with self._lock:
            if shas is None:
                rows: Iterable[tuple[Any, ...]] = self._db.execute(query)
            else:
                rows = rows_where_in(self._db, query, "image_sha256", list(dict.fromkeys(shas)))
            return {sha: f"{b}/{m}/{p}" for sha, b, m, p in rows}

    # --- failures -------------------------------------------------------------------------------------------------

    def record_failure(self, sha: str, error: str, *, source: str = "", backend: str = "", model: str = "") -> None:
        """Remember the last error for an image (attempt counter incremented); committed on return."""
        with self._lock:
            self._db.execute(
                "INSERT INTO failures VALUES (?,?,1,?,?,?,?) ON CONFLICT(image_sha256) DO UPDATE SET "
                "error=excluded.error, attempts=attempts+1, source=excluded.source, backend=excluded.backend, "
                "model=excluded.model, last_attempt=excluded.last_attempt",
                (sha, error[:2000], source, backend, model, utc_now()),
            )

    def failure(self, sha: str) -> Failure | None:
        """The failure record of an image, if its last attempt failed."""
        with self._lock:
            row = self._db.execute("SELECT * FROM failures WHERE image_sha256=?", (sha,)).fetchone()
        return None if row is None else Failure(*row)

    def failures(self) -> list[Failure]:
        """All failure records (images that are not described)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM failures ORDER BY image_sha256").fetchall()
        return [Failure(*row) for row in rows]

    # --- file hash cache ------------------------------------------------------------------------------------------

    def cached_sha(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The remembered hash of a file, if its size and modification time are unchanged."""
        with self._lock:
            row = self._db.execute("SELECT size, mtime_ns, image_sha256 FROM files WHERE path=?", (path,)).fetchone()
        return row[2] if row and row[0] == size and row[1] == mtime_ns else None

    def remember_files(self, rows: Iterable[tuple[str, int, int, str]]) -> None:
        """Cache ``(path, size, mtime_ns, sha)`` rows so that reruns need not re-read unchanged files."""
        rows = list(rows)
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # --- runs -----------------------------------------------------------------------------------------------------

    def start_run(self, config: dict[str, Any]) -> int:
        """Record the resolved configuration of a run; returns its id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO runs (started, config) VALUES (?, ?)", (utc_now(), json.dumps(config, sort_keys=True))
            )
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, summary: dict[str, Any]) -> None:
        """Attach the closing summary to a recorded run."""
        with self._lock:
            self._db.execute("UPDATE runs SET summary=? WHERE id=?", (json.dumps(summary, sort_keys=True), run_id))

    def runs(self) -> list[dict[str, Any]]:
        """Every recorded run: id, start time, configuration and summary."""
        with self._lock:
            rows = self._db.execute("SELECT id, started, config, summary FROM runs ORDER BY id").fetchall()
        return [
            {"id": i, "started": s, "config": json.loads(c), "summary": json.loads(m) if m else None}
            for i, s, c, m in rows
        ]

    # --- interchange ----------------------------------------------------------------------------------------------

    def export_jsonl(self, path: str | PathLike[str]) -> int:
        """Write every description as one JSON line; returns the count."""
        count = 0
        with open(path, "w", encoding="utf-8") as fh:
            for desc in self:
                fh.write(json.dumps(desc.to_dict(), ensure_ascii=False, sort_keys=True) + "\n")
                count += 1
        return count

    def import_jsonl(self, path: str | PathLike[str], *, overwrite: bool = False) -> int:
        """Read descriptions written by :meth:`export_jsonl`; returns how many were added (or replaced)."""
        problem = jsonl_problem(Path(path))
        if problem:
            raise UsageError(problem, hint="give a file `mghft descriptions export-jsonl` wrote")
        added = 0
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    desc = Description.from_dict(json.loads(line))
                except (ValueError, KeyError, TypeError) as err:
                    raise DataError(f"{path}:{line_no}: not a description: {err}") from err
                added += self.put(desc, overwrite=overwrite)
        return added

    def close(self) -> None:
        """Close the database (idempotent). The last writer to close leaves the file in rollback-journal mode: a
        store at rest is one file, which a reader opens read-only without creating WAL files beside it (copied to
        a node or on read-only media)."""
        with self._lock:
            if not self.read_only:
                with contextlib.suppress(sqlite3.Error):  # another connection still open: it stays in WAL for now
                    self._db.execute("PRAGMA busy_timeout=0")
                    self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.close()

    def __enter__(self) -> DescriptionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DescriptionStore({str(self.path)!r})"
