"""Per-view text features computed once and cached on disk.

A frozen text encoder gives the same feature for the same string every time, so training never needs to run it:
each distinct view text is encoded once and stored. The cache is content-addressed:

- one folder per *encoder setting* (encoder id, the identity of its weights, layers averaged, masked or unmasked
  mean, padding, max length), named by a fingerprint of those settings: changing any of them starts a new folder.
  The weights' identity is the hub revision (commit) of a hub id, or the sha256 of every file of a local folder,
  so a fine-tuned encoder re-saved into the same folder never serves the old features;
- inside it, one row per distinct *text*, keyed by the sha256 of the text: a changed description is a new text
  and is encoded on the next use, while unchanged texts are reused.

Rows live in append-only ``shard-<unique id>.safetensors`` files; ``index.sqlite`` (SQLite, WAL mode) maps each
text to its shard and row. A shard is complete on disk before one transaction adds its rows to the index, so
several processes can fill one cache at once and an interrupted run loses at most the shard it was writing; the
index grows by its new rows only, and lookups are indexed queries (nothing proportional to the cache is held in
memory or rewritten).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from mghft.config import TextConfig
from mghft.errors import MghftError
from mghft.hub import hub_revision
from mghft.models.text import TextEncoder, view_texts
from mghft.sqlite_rows import rows_where_in

CACHE_FORMAT = 3
_FINGERPRINT_FIELDS = ("encoder", "dim", "max_length", "last_layers", "masked_mean", "pad_to_max_length")
_FILE_HASHES: dict[tuple[int, int, int, int, int], str] = {}
_RACY_NS = 2_000_000_000
"""A file changed less than this before it was hashed is hashed again next time (timestamps are coarse)."""
INDEX_FILE = "index.sqlite"
_INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, shard TEXT NOT NULL, row INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _file_sha256(path: Path) -> str:
    """sha256 of a file, remembered for the life of the process under its (device, inode, size, mtime, ctime).

    The memo cannot go stale: replacing a file's content changes its ctime, which no user can set (``cp -p`` and
    ``rsync -a`` preserve the mtime of a same-size replacement, not its ctime), and a file whose ctime is within
    :data:`_RACY_NS` of the moment it was hashed is never memoised, so a change in the same clock tick is not
    missed either.
    """
    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key in _FILE_HASHES:
        return _FILE_HASHES[key]
    started = time.time_ns()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if path.stat().st_ctime_ns == st.st_ctime_ns and st.st_ctime_ns < started - _RACY_NS:
        _FILE_HASHES[key] = digest.hexdigest()
    return digest.hexdigest()


def folder_sha256(folder: str | Path) -> str:
    """One sha256 over every file of a folder (relative names and contents; hidden files and folders skipped)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            digest.update(f"{rel.as_posix()}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def encoder_identity(cfg: TextConfig) -> dict[str, Any]:
    """What identifies the text encoder's weights and pooling: id, hub revision or weight-file hash, settings.

    A local folder (or the packaged MiniLM) is identified by :func:`folder_sha256`; a hub id by the commit of the
    snapshot in the local Hugging Face cache, or, when it is not cached yet and the network is allowed, the hub's
    current commit (:func:`mghft.hub.hub_revision`); the encoder is then loaded at exactly that commit.

    Raises:
        TextEncoderUnavailable: a hub id that is neither cached nor reachable (offline mode).
    """
    from mghft.models.text import TextEncoderUnavailable, resolve_encoder_source

    out: dict[str, Any] = {k: getattr(cfg, k) for k in _FINGERPRINT_FIELDS}
    if cfg.encoder is None:
        return out
    source = resolve_encoder_source(cfg.encoder)
    if os.path.isdir(source):
        out["weights_sha256"] = folder_sha256(source)
        return out
    try:
        out["revision"] = hub_revision(cfg.encoder)
    except LookupError as e:
        raise TextEncoderUnavailable(
            f"text encoder {cfg.encoder!r} is not in the Hugging Face cache, so its revision is unknown (offline mode)"
        ) from e
    return out


def encoder_fingerprint(cfg: TextConfig, identity: Mapping[str, Any] | None = None) -> str:
    """A short id of everything that changes a text's feature, the encoder's weights included."""
    spec = dict(identity if identity is not None else encoder_identity(cfg))
    spec["format"] = CACHE_FORMAT
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TextFeatureCache:
    """Disk cache of pooled text-encoder features for one encoder setting.

    Rows live in append-only shard files; ``index.sqlite`` maps each text's key to its shard and row. A shard is
    written under a temporary name and renamed, then its rows are added to the index in one transaction, so a
    crash loses at most the shard being written and the index never names a missing or partial shard. Several
    processes may fill and read one cache at once (SQLite's locking; a row written twice keeps the first). Each
    lookup is one indexed query, so neither time per text nor memory grows with the number of cached texts.

    A folder written by an earlier version (rows listed in ``index.json``) is read: its rows are copied into
    ``index.sqlite`` on first open and ``index.json`` is renamed ``index.json.imported``.

    Args:
        root: cache root; the features go to ``root/<fingerprint>/``.
        cfg: the text config whose encoder and pooling produce the features.
        encoder_factory: builds the encoder when a text is missing (never called when everything is cached).

    Raises:
        MghftError: the folder's index is unreadable (not a cache index, or a newer layout than this version's).
    """

    def __init__(
        self, root: str | Path, cfg: TextConfig, encoder_factory: Callable[[], TextEncoder] | None = None
    ) -> None:
        self.cfg = cfg
        self.identity = encoder_identity(cfg)
        self.dir = Path(root) / encoder_fingerprint(cfg, self.identity)
        self.dir.mkdir(parents=True, exist_ok=True)
        revision = self.identity.get("revision")  # a hub encoder is loaded at the commit its features are filed under
        self._factory = encoder_factory or (lambda: TextEncoder.from_config(cfg, revision=revision))
        self._encoder: TextEncoder | None = None
        self._shards: dict[str, Tensor] = {}
        self._db: sqlite3.Connection | None = None
        self._db_pid = -1
        self.computed = 0
        self.reused = 0
        with self._locked():
            self._open_index()
            self._import_json_index()
            if not (self.dir / "settings.json").exists():
                (self.dir / "settings.json").write_text(json.dumps(self.identity, indent=2), encoding="utf-8")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the cache folder (creating the index, importing an old one)."""
        with open(self.dir / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _open_index(self) -> sqlite3.Connection:
        """The index connection of this process (a forked child opens its own)."""
        if self._db is not None and self._db_pid == os.getpid():
            return self._db
        path = self.dir / INDEX_FILE
        try:
            db = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_INDEX_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if row is None:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (str(CACHE_FORMAT),))
            elif row[0] != str(CACHE_FORMAT):
                raise MghftError(
                    f"text-feature cache {self.dir}: index format {row[0]}, this version reads {CACHE_FORMAT}",
                    hint=f"use the mghft version that wrote it, or delete the folder {self.dir} (its texts are "
                    "encoded again on the next run)",
                )
        except sqlite3.DatabaseError as err:
            raise MghftError(
                f"text-feature cache {self.dir}: {path.name} is not a readable cache index ({err})",
                hint=f"delete the folder {self.dir}; its texts are encoded again on the next run",
            ) from err
        self._db, self._db_pid = db, os.getpid()
        return db

    def _import_json_index(self) -> None:
        """Copy the rows of an earlier version's ``index.json`` into the index (call under the lock)."""
        old = self.dir / "index.json"
        if not old.exists():
            return
        try:
            meta = json.loads(old.read_text(encoding="utf-8"))
            rows = [(str(k), str(shard), int(row)) for k, (shard, row) in meta["rows"].items()]
            fmt = meta.get("format")
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise MghftError(
                f"text-feature cache {self.dir}: index.json is not a cache index ({err})",
                hint=f"delete the folder {self.dir}; its texts are encoded again on the next run",
            ) from err
        if fmt != CACHE_FORMAT:
            raise MghftError(
                f"text-feature cache {self.dir}: index.json has format {fmt!r}, this version reads {CACHE_FORMAT}",
                hint=f"delete the folder {self.dir}; its texts are encoded again on the next run",
            )
        missing = sorted({s for _, s, _ in rows if not (self.dir / s).is_file()})
        if missing:
            raise MghftError(
                f"text-feature cache {self.dir}: index.json names {len(missing)} missing shard file(s), "
                f"e.g. {missing[0]}",
                hint=f"delete the folder {self.dir}; its texts are encoded again on the next run",
            )
        self._insert(rows)
        os.replace(old, self.dir / "index.json.imported")

    def _insert(self, rows: Sequence[tuple[str, str, int]]) -> None:
        db = self._open_index()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO rows VALUES (?,?,?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _where(self, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
        """Shard and row of those of ``keys`` that are cached (one indexed query per 500 keys)."""
        rows = rows_where_in(self._open_index(), "SELECT key, shard, row FROM rows", "key", keys)
        return {k: (shard, row) for k, shard, row in rows}

    def _features(self, shard: str, row: int) -> Tensor:
        if shard not in self._shards:
            self._shards[shard] = load_file(str(self.dir / shard))["features"]
        return self._shards[shard][row]

    def __len__(self) -> int:
        return int(self._open_index().execute("SELECT COUNT(*) FROM rows").fetchone()[0])

    def __contains__(self, text: str) -> bool:
        return bool(self._where([text_key(text)]))

    def _save_shard(self, keys: list[str], feats: Tensor) -> str:
        name = f"shard-{uuid.uuid4().hex}.safetensors"  # unique: concurrent writers never share a file
        tmp = self.dir / f".{name}.tmp"
        save_file({"features": feats.contiguous()}, str(tmp))
        os.replace(tmp, self.dir / name)  # complete before the index names it
        self._insert([(k, name, row) for row, k in enumerate(keys)])
        return name

    def fill(self, texts: Iterable[str], batch_size: int = 64, shard_size: int = 4096) -> int:
        """Encode and store the texts not cached yet, streaming: returns how many were added.

        Reads ``texts`` once, ``shard_size`` missing texts at a time, and keeps no features and no index in memory,
        so a cache for any number of texts is built in bounded memory.
        """
        added = 0
        chunk: dict[str, str] = {}  # missing texts waiting to be encoded
        pending: dict[str, str] = {}  # texts not looked up yet

        def flush() -> None:
            nonlocal added
            if self._encoder is None:
                self._encoder = self._factory()
            feats = self._encoder.encode(list(chunk.values()), batch_size).float()
            self._save_shard(list(chunk), feats)
            self.computed += len(chunk)
            added += len(chunk)
            chunk.clear()

        def look_up() -> None:
            cached = self._where(list(pending))
            for k, text in pending.items():
                if k not in cached:
                    chunk[k] = text
                    if len(chunk) >= shard_size:
                        flush()
            pending.clear()

        for text in texts:
            k = text_key(text)
            if k in chunk or k in pending:
                continue
            pending[k] = text
            if len(pending) >= 500:
                look_up()
        look_up()
        if chunk:
            flush()
        return added

    def get(self, texts: Sequence[str], batch_size: int = 64, shard_size: int = 4096) -> Tensor:
        """Features (n, dim) of ``texts``, encoding and storing the ones not cached yet."""
        keys = [text_key(t) for t in texts]
        unique = list(dict.fromkeys(keys))
        where = self._where(unique)
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in where}
        self.reused += len(unique) - len(missing)
        if missing:
            if self._encoder is None:
                self._encoder = self._factory()
            items = list(missing.items())
            for i in range(0, len(items), shard_size):
                chunk = items[i : i + shard_size]
                feats = self._encoder.encode([t for _, t in chunk], batch_size=batch_size).float()
                name = self._save_shard([k for k, _ in chunk], feats)
                self._shards[name] = feats
                self.computed += len(chunk)
            where = self._where(unique)  # another process may have written some first: its rows are the ones kept
        if not keys:
            return torch.zeros(0, self.cfg.dim)
        return torch.stack([self._features(*where[k]) for k in keys])

    def close(self) -> None:
        """Close the index (idempotent; a later use reopens it)."""
        if self._db is not None and self._db_pid == os.getpid():
            self._db.close()
        self._db = None


def view_feature_table(
    descriptions: Sequence[Mapping[str, str] | str | None],
    cache: TextFeatureCache,
) -> tuple[Tensor, Tensor]:
    """Per-sample view features (N, 4, dim) and the mask of present views (N, 4) for a dataset.

    The view strings follow the cache's text config (``identical_views`` reproduces the public code).
    """
    per_sample = [view_texts(d, cache.cfg.identical_views) for d in descriptions]
    present = [t for row in per_sample for t in row if t is not None]
    unique = list(dict.fromkeys(present))
    feats = cache.get(unique)
    row_of = {t: i for i, t in enumerate(unique)}
    n = len(per_sample)
    table = torch.zeros(n, 4, cache.cfg.dim)
    mask = torch.zeros(n, 4, dtype=torch.bool)
    for i, row in enumerate(per_sample):
        for v, t in enumerate(row):
            if t is not None:
                table[i, v] = feats[row_of[t]]
                mask[i, v] = True
    return table, mask
