"""Per-view text features computed once and cached on disk.

A frozen text encoder gives the same feature for the same string every time, so training never needs to run it:
each distinct view text is encoded once and stored. The cache is content-addressed:

- one folder per *encoder setting* (encoder id, the identity of its weights, layers averaged, masked or unmasked
  mean, padding, max length), named by a fingerprint of those settings: changing any of them starts a new folder.
  The weights' identity is the hub revision (commit) of a hub id, or the sha256 of every file of a local folder,
  so a fine-tuned encoder re-saved into the same folder never serves the old features;
- inside it, one row per distinct *text*, keyed by the sha256 of the text: a changed description is a new text
  and is encoded on the next use, while unchanged texts are reused.

Rows live in append-only ``shard-<unique id>.safetensors`` files; ``index.json`` maps each text to its shard and
row and is merged and replaced atomically under a file lock after each shard is written, so several processes can
fill one cache at once and an interrupted run loses at most the shard it was writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from mghft.config import TextConfig
from mghft.models.text import TextEncoder, view_texts

CACHE_FORMAT = 3
_FINGERPRINT_FIELDS = ("encoder", "dim", "max_length", "last_layers", "masked_mean", "pad_to_max_length")
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for the life of the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


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
    current commit.

    Raises:
        TextEncoderUnavailable: a hub id that is neither cached nor reachable (offline mode).
    """
    from mghft.models.text import TextEncoderUnavailable, offline_mode, resolve_encoder_source

    out: dict[str, Any] = {k: getattr(cfg, k) for k in _FINGERPRINT_FIELDS}
    if cfg.encoder is None:
        return out
    source = resolve_encoder_source(cfg.encoder)
    if os.path.isdir(source):
        out["weights_sha256"] = folder_sha256(source)
        return out
    try:
        from huggingface_hub import snapshot_download

        out["revision"] = Path(snapshot_download(cfg.encoder, local_files_only=True)).name
    except Exception as cached_error:  # not in the local cache (the hub raises several types for this)
        if offline_mode():
            raise TextEncoderUnavailable(
                f"text encoder {cfg.encoder!r} is not in the Hugging Face cache, so its revision is unknown "
                "(offline mode)"
            ) from cached_error
        from huggingface_hub import HfApi

        out["revision"] = HfApi().model_info(cfg.encoder).sha
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

    Args:
        root: cache root; the features go to ``root/<fingerprint>/``.
        cfg: the text config whose encoder and pooling produce the features.
        encoder_factory: builds the encoder when a text is missing (never called when everything is cached).
    """

    def __init__(
        self, root: str | Path, cfg: TextConfig, encoder_factory: Callable[[], TextEncoder] | None = None
    ) -> None:
        self.cfg = cfg
        self.identity = encoder_identity(cfg)
        self.dir = Path(root) / encoder_fingerprint(cfg, self.identity)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._factory = encoder_factory or (lambda: TextEncoder.from_config(cfg))
        self._encoder: TextEncoder | None = None
        self._rows: dict[str, tuple[str, int]] = {}
        self._shards: dict[str, Tensor] = {}
        self.computed = 0
        self.reused = 0
        with self._locked():
            self._merge_index()
            if not (self.dir / "settings.json").exists():
                (self.dir / "settings.json").write_text(json.dumps(self.identity, indent=2), encoding="utf-8")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the cache folder: several processes may fill one cache at the same time."""
        with open(self.dir / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _merge_index(self) -> None:
        """Take in the rows other processes have written (call under the lock)."""
        index = self.dir / "index.json"
        if index.exists():
            meta = json.loads(index.read_text(encoding="utf-8"))
            for k, (shard, row) in meta["rows"].items():
                self._rows.setdefault(k, (shard, row))

    def _features(self, shard: str, row: int) -> Tensor:
        if shard not in self._shards:
            self._shards[shard] = load_file(str(self.dir / shard))["features"]
        return self._shards[shard][row]

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self._rows

    def _save_shard(self, keys: list[str], feats: Tensor) -> str:
        name = f"shard-{uuid.uuid4().hex}.safetensors"  # unique: concurrent writers never share a file
        save_file({"features": feats.contiguous()}, str(self.dir / name))
        self._shards[name] = feats
        with self._locked():
            self._merge_index()
            for row, k in enumerate(keys):
                self._rows.setdefault(k, (name, row))
            meta = {"format": CACHE_FORMAT, "rows": self._rows}
            tmp = self.dir / f"index.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(meta), encoding="utf-8")
            os.replace(tmp, self.dir / "index.json")
        return name

    def fill(self, texts: Iterable[str], batch_size: int = 64, shard_size: int = 4096) -> int:
        """Encode and store the texts not cached yet, streaming: returns how many were added.

        Reads ``texts`` once, ``shard_size`` missing texts at a time, and keeps no features in memory, so a
        cache for any number of texts is built in bounded memory (the index of cached texts aside).
        """
        added = 0
        chunk: dict[str, str] = {}

        def flush() -> None:
            nonlocal added
            if self._encoder is None:
                self._encoder = self._factory()
            name = self._save_shard(list(chunk), self._encoder.encode(list(chunk.values()), batch_size).float())
            self._shards.pop(name, None)  # written to disk; read back only if asked for
            self.computed += len(chunk)
            added += len(chunk)
            chunk.clear()

        for text in texts:
            k = text_key(text)
            if k in self._rows or k in chunk:
                continue
            chunk[k] = text
            if len(chunk) >= shard_size:
                flush()
        if chunk:
            flush()
        return added

    def get(self, texts: Sequence[str], batch_size: int = 64, shard_size: int = 4096) -> Tensor:
        """Features (n, dim) of ``texts``, encoding and storing the ones not cached yet."""
        keys = [text_key(t) for t in texts]
        missing: dict[str, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k not in self._rows and k not in missing:
                missing[k] = t
        self.reused += len(set(keys)) - len(missing)
        if missing:
            if self._encoder is None:
                self._encoder = self._factory()
            items = list(missing.items())
            for i in range(0, len(items), shard_size):
                chunk = items[i : i + shard_size]
                feats = self._encoder.encode([t for _, t in chunk], batch_size=batch_size)
                self._save_shard([k for k, _ in chunk], feats.float())
                self.computed += len(chunk)
        if not keys:
            return torch.zeros(0, self.cfg.dim)
        return torch.stack([self._features(s, r) for s, r in (self._rows[k] for k in keys)])


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
