"""The batch runner: describe many images into a store, concurrently, resumably, shardably.

A run has two phases. **Plan**: hash every listed file (hashes are cached in the store by path, size and
modification time, so a rerun reads only new or changed files), keep the images of this shard (chosen by content
hash, so shards never overlap and identical files land in the same one), drop duplicates and what the store already
holds. **Describe**: ``concurrency`` workers take images from the plan, call the backend and commit each
description the moment it arrives. A crash or Ctrl-C therefore loses only the requests in flight, and the next
run picks up exactly the images that are still missing, failures included.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mghft.data.images import ImageLoadError
from mghft.data.records import DatasetIndex
from mghft.data.walk import check_input_file
from mghft.interpret.backends import Backend
from mghft.interpret.clients import BackendError, FatalBackendError
from mghft.interpret.description import image_sha256
from mghft.interpret.imaging import DEFAULT_MAX_SIDE, PreparedImage, prepare_image
from mghft.interpret.redact import redact_text
from mghft.interpret.store import DescriptionStore

log = logging.getLogger(__name__)

REDO_CHOICES: tuple[str, ...] = ("none", "stale", "all")


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One image to describe: a key for messages and its file."""

    key: str
    path: Path


def items_from_index(index: DatasetIndex) -> list[WorkItem]:
    """The images of a dataset index, in its order."""
    return [WorkItem(key=s.key, path=Path(s.path)) for s in index.samples]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0-based ``i`` < ``n``) -> ``(i, n)``."""
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ValueError(f"shard must look like i/n, e.g. 0/4, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def in_shard(sha: str, shard: tuple[int, int]) -> bool:
    """Whether the image with this hash belongs to shard ``(i, n)``."""
    i, n = shard
    return int(sha[:16], 16) % n == i


@dataclass
class RunSummary:
    """What a run did; printed at the end and stored with the run."""

    listed: int = 0
    unreadable: int = 0
    out_of_shard: int = 0
    duplicates: int = 0
    skipped: int = 0
    other_writer: int = 0
    """Described before by another backend, model or prompt version: described again (``reuse="same"``)."""
    todo: int = 0
    described: int = 0
    failed: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    fatal_error: str = ""
    fatal_hint: str = ""
    fatal_exit_code: int = 2  # 1 when the server could not be reached at all (found at run time)
    errors: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What the client changed or noticed (a parameter switched for a server, an endpoint unreachable)."""

    def add_usage(self, usage: dict[str, int]) -> None:
        """Count one image's requests and tokens (described or failed)."""
        self.requests += int(usage.get("requests", 0))
        self.prompt_tokens += int(usage.get("prompt_tokens", 0))
        self.completion_tokens += int(usage.get("completion_tokens", 0))

    @property
    def remaining(self) -> int:
        """Images of this shard that are still not described."""
        return self.todo - self.described

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with the rate."""
        out = asdict(self)
        out["remaining"] = self.remaining
        out["images_per_s"] = round(self.described / self.elapsed_s, 3) if self.elapsed_s > 0 else 0.0
        out["elapsed_s"] = round(self.elapsed_s, 3)
        return out

    def format(self, *, with_fatal: bool = True) -> str:
        """A few human-readable lines (``with_fatal=False``: without the line of a fatal error, raised instead)."""
        lines = [
            f"described {self.described}, skipped (already done) {self.skipped}, failed {self.failed}, "
            f"remaining {self.remaining} of {self.todo} to do",
            f"listed {self.listed}: {self.duplicates} duplicate content, {self.out_of_shard} in other shards, "
            f"{self.unreadable} unreadable file{'' if self.unreadable == 1 else 's'}",
            f"requests {self.requests}, tokens {self.prompt_tokens} in + {self.completion_tokens} out, "
            f"{self.elapsed_s:.1f} s ({self.as_dict()['images_per_s']} images/s)",
        ]
        if self.other_writer:
            lines.append(
                f"{self.other_writer} images described before by another backend, model or prompt version were "
                "described again (--reuse any keeps such descriptions)"
            )
        if self.errors:
            top = ", ".join(f"{k} x{v}" for k, v in Counter(self.errors).most_common(5))
            lines.append(f"errors: {top}")
        lines.extend(f"note: {note}" for note in self.notes)
        if self.interrupted:
            lines.append("interrupted: rerun the same command to continue")
        if self.fatal_error and with_fatal:
            lines.append(f"stopped: {self.fatal_error}")
        return "\n".join(lines)


class TodoList(Sequence[tuple[str, WorkItem]]):
    """The images a plan will describe, ``(sha256, WorkItem)`` in order, kept compactly: each image's hash, key and
    path as strings (the path only where it differs from the key), its ``WorkItem`` made when it is read. About a
    third of the memory of a list of ``WorkItem``, for plans of hundreds of thousands of images."""

    def __init__(self) -> None:
        self._shas: list[str] = []
        self._keys: list[str] = []
        self._paths: list[str | None] = []

    def append(self, sha: str, item: WorkItem) -> None:
        path = str(item.path)
        self._shas.append(sha)
        self._keys.append(item.key)
        self._paths.append(None if path == item.key else path)

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` images."""
        del self._shas[n:], self._keys[n:], self._paths[n:]

    def __len__(self) -> int:
        return len(self._shas)

    def _at(self, i: int) -> tuple[str, WorkItem]:
        path = self._paths[i]
        return self._shas[i], WorkItem(key=self._keys[i], path=Path(self._keys[i] if path is None else path))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._at(i) for i in range(*index.indices(len(self)))]
        return self._at(range(len(self))[index])

    def __iter__(self) -> Iterator[tuple[str, WorkItem]]:
        return (self._at(i) for i in range(len(self._shas)))


@dataclass
class Plan:
    """The images a run will describe, and why the others are left out."""

    todo: TodoList
    summary: RunSummary
    unreadable: list[tuple[WorkItem, str]]


PLAN_CHUNK = 512
"""Files hashed, looked up in the store and decided on at a time while planning."""


def _hash_item(item: WorkItem, store: DescriptionStore) -> tuple[str | None, tuple[str, int, int, str] | None, str]:
    reason = check_input_file(item.path)  # before opening: a FIFO would block, /dev/zero never ends
    if reason:
        return None, None, f"{item.path}: {reason}"
    try:
        stat = item.path.stat()
        cached = store.cached_sha(str(item.path), stat.st_size, stat.st_mtime_ns)
        if cached:
            return cached, None, ""
        sha = image_sha256(item.path)
        return sha, (str(item.path), stat.st_size, stat.st_mtime_ns, sha), ""
    except OSError as err:
        return None, None, f"{item.path}: {err.strerror or err}"


def plan_batch(
    items: Iterable[WorkItem],
    store: DescriptionStore,
    *,
    shard: tuple[int, int] = (0, 1),
    redo: str = "none",
    prompt_version: str = "",
    limit: int | None = None,
    progress: bool = False,
    backend: Backend | None = None,
    reuse: str = "same",
) -> Plan:
    """Hash the listed files and decide what to describe.

    Streams: ``items`` is read once, :data:`PLAN_CHUNK` files at a time (a generator is fine), and the store is
    asked about those files only, so planning holds the plan (:class:`TodoList`) and the set of hashes seen, not
    the listed items or the store's contents.

    Args:
        items: images to consider.
        store: the description store (read for what is done; its file-hash cache is updated).
        shard: ``(i, n)``: keep only images whose hash falls in shard ``i`` of ``n``.
        redo: ``none`` (skip described images), ``stale`` (redo those written with another prompt version),
            ``all``.
        prompt_version: the current prompt version (for ``stale``).
        limit: describe at most this many.
        progress: show a bar while hashing.
        backend: the backend that will describe (with ``reuse="same"``, what counts as done).
        reuse: ``same``: a stored description counts as done only when ``backend`` wrote it (same backend, model
            and prompt version, :func:`~mghft.interpret.interpreter.same_writer`); ``any``: whoever wrote it.
    """
    if redo not in REDO_CHOICES:
        raise ValueError(f"redo must be one of {REDO_CHOICES}, got {redo!r}")
    if reuse not in ("same", "any"):
        raise ValueError(f"reuse must be 'same' or 'any', got {reuse!r}")
    summary = RunSummary()
    same_writer = reuse == "same" and backend is not None
    unreadable: list[tuple[WorkItem, str]] = []
    seen: set[str] = set()  # the same string objects as the plan's hashes
    todo = TodoList()
    bar = None
    total = len(items) if isinstance(items, Sized) else None
    if progress and (total is None or total > 1000):
        from tqdm import tqdm

        bar = tqdm(total=total, desc="hashing", unit="file")
    # In chunks, streaming: the listed items are read once and nothing per file is held but the plan itself.
    source = iter(items)
    try:
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
            while chunk := list(itertools.islice(source, PLAN_CHUNK)):
                results = list(pool.map(lambda it: _hash_item(it, store), chunk))
                summary.listed += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                store.remember_files(row for _, row, _ in results if row is not None)
                hashes = [sha for sha, _, _ in results if sha is not None and in_shard(sha, shard)]
                done = store.provenance(hashes) if redo != "all" else {}
                for item, (sha, _, error) in zip(chunk, results, strict=True):
                    if sha is None:
                        summary.unreadable += 1
                        unreadable.append((item, error))
                        log.warning("skipped %s", error)
                        continue
                    if not in_shard(sha, shard):
                        summary.out_of_shard += 1
                        continue
                    if sha in seen:
                        summary.duplicates += 1
                        continue
                    seen.add(sha)
                    stamp = done.get(sha)
                    if stamp is not None and same_writer and not _written_by(stamp, backend):
                        summary.other_writer += 1
                    elif stamp is not None and (redo == "none" or stamp.endswith("/" + prompt_version)):
                        summary.skipped += 1
                        continue
                    todo.append(sha, item)
    finally:
        if bar is not None:
            bar.close()
    if limit is not None:
        todo.truncate(max(0, limit))
    summary.todo = len(todo)
    return Plan(todo=todo, summary=summary, unreadable=unreadable)


def _written_by(stamp: str, backend: Backend) -> bool:
    """Whether a store stamp ``backend/model/prompt_version`` (the model may hold ``/``) is ``backend``'s."""
    from types import SimpleNamespace

    from mghft.interpret.interpreter import same_writer

    name, _, rest = stamp.partition("/")
    model, _, version = rest.rpartition("/")
    return same_writer(SimpleNamespace(backend=name, model=model, prompt_version=version), backend)  # type: ignore[arg-type]


def _redacted(value: Any) -> Any:
    """``value`` (a JSON-like configuration) with every URL in its strings redacted."""
    if isinstance(value, str):
        return redact_text(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    return value


def _client_notes(backend: Backend) -> list[str]:
    """The notes of a server backend's client (parameter switches, unreachable endpoints), else none."""
    return list(getattr(getattr(backend, "client", None), "notes", []))


def _error_kind(message: str) -> str:
    head = message.split(":", 1)[0]
    return head if len(head) <= 40 else head[:40]


async def describe_plan(
    plan: Plan,
    backend: Backend,
    store: DescriptionStore,
    *,
    concurrency: int = 8,
    max_side: int = DEFAULT_MAX_SIDE,
    progress: bool = True,
) -> RunSummary:
    """Describe the planned images with ``concurrency`` requests in flight; updates and returns ``plan.summary``.

    Each description is committed as it arrives. A failed image gets a failure record (and is retried by the next
    run); its requests and tokens are counted like those of a described one. A backend with a ``preflight`` (a
    server) is checked for reachability first. A :class:`FatalBackendError` stops every worker and is noted in the
    summary (``fatal_error``, ``fatal_hint``).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    summary = plan.summary
    queue = iter(plan.todo)
    errors: Counter[str] = Counter(summary.errors)

    def stopped(err: FatalBackendError) -> None:
        summary.fatal_error = str(err)
        summary.fatal_hint = err.hint or ""
        summary.fatal_exit_code = err.exit_code
        summary.notes = _client_notes(backend)

    preflight = getattr(backend, "preflight", None)
    if plan.todo and preflight is not None:
        try:
            await preflight()
        except FatalBackendError as err:
            stopped(err)
            summary.elapsed_s = 0.0
            await backend.aclose()
            return summary

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan.todo), unit="img", desc="describing", dynamic_ncols=True, smoothing=0.05)
    started = time.monotonic()

    def fail(sha: str, item: WorkItem, message: str, usage: dict[str, int] | None = None) -> None:
        summary.failed += 1
        summary.add_usage(usage or {})
        errors[_error_kind(message)] += 1
        store.record_failure(sha, message, source=str(item.path), backend=backend.name, model=backend.model)
        log.info("%s: %s", item.key, message)

    def tick() -> None:
        summary.elapsed_s = time.monotonic() - started
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=summary.failed, tokens=summary.prompt_tokens + summary.completion_tokens)

    # Two stages: preparers read, hash and shrink images (in threads) a little ahead of the requesters, so that
    # ``concurrency`` requests stay in flight instead of waiting on image work between answers.
    ready: asyncio.Queue[tuple[str, WorkItem, PreparedImage] | None] = asyncio.Queue(maxsize=concurrency)
    n_requesters = min(concurrency, max(1, len(plan.todo)))

    async def preparer() -> None:
        for sha, item in queue:
            try:
                data = await asyncio.to_thread(item.path.read_bytes)
                actual = image_sha256(data)  # the file may have changed since planning: key what is sent
                prepared = await asyncio.to_thread(
                    prepare_image, data, source=str(item.path), max_side=max_side, sha256=actual
                )
            except (ImageLoadError, OSError) as err:
                summary.unreadable += 1  # found when read for sending, not when listed: counted alike
                fail(sha, item, f"unreadable image: {err}")
                tick()
                continue
            await ready.put((sha, item, prepared))

    async def preparers() -> None:
        await asyncio.gather(*(preparer() for _ in range(min(4, n_requesters))))
        for _ in range(n_requesters):
            await ready.put(None)

    async def requester() -> None:
        while (job := await ready.get()) is not None:
            sha, item, prepared = job
            try:
                desc = await backend.describe(prepared)
            except FatalBackendError as err:
                summary.add_usage(err.usage.as_dict())
                raise
            except BackendError as err:
                fail(sha, item, str(err), err.usage.as_dict())
            else:
                store.put(desc)
                summary.described += 1
                summary.add_usage(desc.usage)
            tick()

    tasks = [asyncio.ensure_future(preparers())]
    tasks += [asyncio.ensure_future(requester()) for _ in range(n_requesters)]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            err = task.exception()
            if isinstance(err, FatalBackendError):
                stopped(err)
            elif err is not None:
                raise err
    except asyncio.CancelledError:
        summary.interrupted = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        summary.elapsed_s = time.monotonic() - started
        summary.errors = dict(errors)
        summary.notes = _client_notes(backend)
        if bar is not None:
            bar.close()
        await backend.aclose()
    return summary


def run_batch(
    items: Iterable[WorkItem],
    backend: Backend,
    store: DescriptionStore,
    *,
    concurrency: int = 8,
    shard: tuple[int, int] = (0, 1),
    redo: str = "none",
    limit: int | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    progress: bool = True,
    config: dict[str, Any] | None = None,
    reuse: str = "same",
) -> RunSummary:
    """Plan and describe (blocking); Ctrl-C stops cleanly with a summary marked ``interrupted``.

    The resolved configuration and the closing summary are recorded in the store's run log; every URL in them is
    redacted (:func:`~mghft.interpret.redact.redact_url`).
    """
    plan = plan_batch(
        items,
        store,
        shard=shard,
        redo=redo,
        prompt_version=backend.prompt_version,
        limit=limit,
        progress=progress,
        backend=backend,
        reuse=reuse,
    )
    client = getattr(backend, "client", None)
    endpoints = [e.shown for e in getattr(client, "endpoints", [])]
    run_id = store.start_run(
        _redacted({"backend": backend.name, "model": backend.model, "prompt_version": backend.prompt_version,
                   "concurrency": concurrency, "shard": f"{shard[0]}/{shard[1]}", "redo": redo, "reuse": reuse,
                   "limit": limit, "max_side": max_side, **({"endpoints": endpoints} if endpoints else {}),
                   **(config or {})})
    )  # fmt: skip
    try:
        asyncio.run(describe_plan(plan, backend, store, concurrency=concurrency, max_side=max_side, progress=progress))
    except KeyboardInterrupt:
        plan.summary.interrupted = True
    finally:
        store.finish_run(run_id, plan.summary.as_dict())
    return plan.summary
