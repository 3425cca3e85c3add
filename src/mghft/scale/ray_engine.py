"""``mghft predict`` and ``mghft interpret`` on Ray Data: one row per sticker in a Parquet dataset.

The pipeline (a Ray Data streaming job; the driver only lists locations and collects per-file counts):

1. **read** (Ray tasks): each location's bytes (local file or object-store URI), their SHA-256, and the stickers
   already in the output (by hash) dropped, so a rerun resumes where a killed job stopped.
2. **label** (a pool of Ray actors, each loading the model or the interpreter once, ``num_gpus`` each where
   GPUs exist): decode, predict or describe, and write one Parquet file per batch into the output folder,
   written to a temporary name and renamed, so a file is either whole or absent. A file's name is the hash of
   the stickers it holds, so a batch retried after a node failure replaces its own file instead of adding one.

The output folder is a Parquet dataset (``pyarrow.dataset.dataset(folder)``, pandas, Spark, DuckDB read it);
:func:`read_output` reads it back with one row per (sticker hash, path). ``mghft descriptions import`` reads an
interpret output into a description store for training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mghft.errors import MghftError, UsageError
from mghft.views import VIEWS

PART_PREFIX = "part-"

READ_CPUS = 0.25
"""CPUs Ray reserves per read task: reading and hashing is light, and the label actors must not starve it."""


def _require_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--engine ray needs Ray Data", hint="pip install 'mghft[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, *, progress: bool = True) -> Iterator[Any]:
    """Ray, connected: the running session if there is one, else ``address`` (or ``RAY_ADDRESS``), else a
    local Ray started for this job and stopped after it."""
    ray = _require_ray()
    started = False
    if not ray.is_initialized():
        ray.init(
            address=address or os.environ.get("RAY_ADDRESS") or None,
            include_dashboard=False,
            logging_level="WARNING",
            log_to_driver=False,
        )
        started = True
    ctx = ray.data.DataContext.get_current()
    old = ctx.enable_progress_bars
    ctx.enable_progress_bars = progress
    try:
        yield ray
    finally:
        ctx.enable_progress_bars = old
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------------------------------------
# output folder


def existing_keys(out_dir: str | Path, *, successes_only: bool = False) -> set[str]:
    """Sticker hashes already in an output folder (with ``successes_only``: those without an ``error``)."""
    import pyarrow.parquet as pq

    keys: set[str] = set()
    folder = Path(out_dir)
    if not folder.is_dir():
        return keys
    for f in sorted(folder.glob(f"{PART_PREFIX}*.parquet")):
        cols = ["sha256", "error"] if successes_only else ["sha256"]
        table = pq.read_table(f, columns=cols)
        shas = table.column("sha256").to_pylist()
        errors = table.column("error").to_pylist() if successes_only else [None] * len(shas)
        keys.update(s for s, e in zip(shas, errors, strict=True) if s and e is None)
    return keys


def read_output(out_dir: str | Path) -> Any:
    """The output folder as one pyarrow Table, one row per (sha256, path): a later row replaces an earlier one
    (a retried failure that succeeded), so duplicates never reach the reader.

    Raises:
        MghftError: the folder holds no output files.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(Path(out_dir).glob(f"{PART_PREFIX}*.parquet"), key=lambda f: f.stat().st_mtime_ns)
    if not files:
        raise MghftError(f"{out_dir}: no {PART_PREFIX}*.parquet files (not an mghft --engine ray output)")
    tables = [pq.read_table(f) for f in files]
    table = pa.concat_tables(tables, promote_options="default")
    keep: dict[tuple[str, str], int] = {}
    errors = table.column("error").to_pylist()
    for i, (sha, path) in enumerate(zip(table.column("sha256").to_pylist(), table.column("path").to_pylist(),
                                        strict=True)):  # fmt: skip
        prev = keep.get((sha, path))
        if prev is None or errors[prev] is not None or errors[i] is None:
            keep[(sha, path)] = i
    return table.take(sorted(keep.values()))


def _write_part(out_dir: Path, table: Any) -> str:
    """Write ``table`` as ``part-<hash of its keys>.parquet`` atomically; returns the file name."""
    import pyarrow.parquet as pq

    keys = sorted(f"{s}\t{p}" for s, p in zip(table.column("sha256").to_pylist(), table.column("path").to_pylist(),
                                               strict=True))  # fmt: skip
    name = f"{PART_PREFIX}{hashlib.sha256(chr(10).join(keys).encode()).hexdigest()[:24]}.parquet"
    tmp = out_dir / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out_dir / name)
    finally:
        tmp.unlink(missing_ok=True)
    return name


# ------------------------------------------------------------------------------------------------------------
# stage 1: read (Ray tasks)

_DONE_CACHE: dict[str, frozenset[str]] = {}


def _read_batch(batch: Any, done: list[Any], max_bytes: int) -> Any:
    """locations -> (path, sha256, data, error), without the stickers whose hash is in ``done[0]``."""
    import pyarrow as pa
    import ray

    from mghft.scale.inputs import read_bytes

    ref = done[0]
    key = ref.hex()
    if key not in _DONE_CACHE:
        _DONE_CACHE.clear()
        _DONE_CACHE[key] = ray.get(ref)
    skip = _DONE_CACHE[key]
    paths, shas, datas, errors = [], [], [], []
    for loc in batch.column("path").to_pylist():
        try:
            data = read_bytes(loc, max_bytes)
            sha, err = hashlib.sha256(data).hexdigest(), None
        except OSError as e:
            data, sha, err = b"", hashlib.sha256(f"unreadable:{loc}".encode()).hexdigest(), str(e) or "unreadable"
        if sha in skip:
            continue
        paths.append(loc)
        shas.append(sha)
        datas.append(data)
        errors.append(err)
    schema = pa.schema([("path", pa.string()), ("sha256", pa.string()), ("data", pa.binary()),
                        ("read_error", pa.string())])  # fmt: skip
    return pa.table([paths, shas, datas, errors], schema=schema)


# ------------------------------------------------------------------------------------------------------------
# stage 2: label (Ray actors)


def predict_schema(classes: Sequence[str]) -> Any:
    """The Parquet schema of ``mghft predict --engine ray`` output for these classes."""
    import pyarrow as pa

    return pa.schema(
        [("sha256", pa.string()), ("path", pa.string()), ("label", pa.string()), ("confidence", pa.float64())]
        + [(f"p_{c}", pa.float64()) for c in classes]
        + [("emoji", pa.list_(pa.string())), ("view_source", pa.string())]
        + [(f"view_{v}", pa.string()) for v in VIEWS]
        + [("calibrated", pa.bool_()), ("temperature", pa.float64()), ("model", pa.string()), ("error", pa.string())]
    )


INTERPRET_COLUMNS = ("sha256", "path", *VIEWS, "ocr_text", "backend", "model", "prompt_version", "created",
                     "usage", "error")  # fmt: skip


def interpret_schema() -> Any:
    """The Parquet schema of ``mghft interpret --engine ray`` output (``usage`` is a JSON object as text)."""
    import pyarrow as pa

    return pa.schema([(c, pa.string()) for c in INTERPRET_COLUMNS])


class _PredictActor:
    """Loads the predictor once; labels batches and writes each as one Parquet file."""

    def __init__(self, out_dir: str, model: str, options: dict[str, Any], store: str | None) -> None:
        import torch

        from mghft.serve.predictor import load_predictor

        threads = options.pop("threads", None)
        if threads:
            torch.set_num_threads(int(threads))
        self.out_dir = Path(out_dir)
        self.model_name = model
        self.predictor = load_predictor(model, **options)
        if store:
            from mghft.interpret import DescriptionStore
            from mghft.serve.predictor import StoreOnlyInterpreter

            self.predictor.interpreter = StoreOnlyInterpreter(DescriptionStore(store))
        self.schema = predict_schema(self.predictor.class_names)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        from mghft.data.images import ImageLoadError

        p = self.predictor
        rows: list[dict[str, Any]] = []
        good, texts, sources, where = [], [], [], []
        for path, sha, data, read_error in zip(*(batch.column(c).to_pylist() for c in
                                                 ("path", "sha256", "data", "read_error")), strict=True):  # fmt: skip
            row: dict[str, Any] = {"sha256": sha, "path": path, "model": self.model_name, "error": read_error}
            if read_error is None:
                try:
                    loaded = p.load(data, name=path)
                    views, source = p.resolve_views(loaded)
                    good.append(loaded)
                    texts.append(views)
                    sources.append(source)
                    where.append(len(rows))
                except (ImageLoadError, LookupError, ValueError) as e:
                    row["error"] = str(e)
            rows.append(row)
        for i, pred in zip(where, p.run(good, texts, sources, explain=False), strict=True):
            rows[i].update(
                label=pred.label,
                confidence=pred.confidence,
                emoji=list(pred.emoji),
                view_source=pred.view_source,
                calibrated=pred.calibrated,
                temperature=p.temperature,
                **{f"p_{c}": v for c, v in pred.probabilities.items()},
                **{f"view_{v}": pred.views[v] for v in VIEWS},
            )
        table = pa.Table.from_pylist(rows, schema=self.schema)
        name = _write_part(self.out_dir, table) if rows else ""
        errors = sum(r["error"] is not None for r in rows)
        return pa.table({"file": [name], "rows": [len(rows)], "errors": [errors]})


class _InterpretActor:
    """Builds the interpreter backend once; describes batches (``concurrency`` images at a time) and writes
    each batch as one Parquet file."""

    def __init__(self, out_dir: str, backend_factory: Callable[[], Any], concurrency: int, max_side: int) -> None:
        from mghft.interpret import Interpreter

        self.out_dir = Path(out_dir)
        self.interpreter = Interpreter(backend_factory(), None, max_side=max_side)
        self.concurrency = max(1, concurrency)

    def _one(self, item: tuple[str, str, bytes, str | None]) -> dict[str, Any]:
        path, sha, data, read_error = item
        row: dict[str, Any] = {"sha256": sha, "path": path, "error": read_error}
        if read_error is not None:
            return row
        try:
            d = self.interpreter.describe(data, use_cache=False)
        except Exception as e:  # recorded per sticker and retried on the next run; never stops the job
            row["error"] = f"{type(e).__name__}: {e}"
            return row
        row.update(
            {v: d.views.get(v) for v in VIEWS},
            ocr_text=d.ocr_text,
            backend=d.backend,
            model=d.model,
            prompt_version=d.prompt_version,
            created=d.created,
            usage=json.dumps(d.usage, sort_keys=True),
        )
        return row

    def __call__(self, batch: Any) -> Any:
        from concurrent.futures import ThreadPoolExecutor

        import pyarrow as pa

        items = list(zip(*(batch.column(c).to_pylist() for c in ("path", "sha256", "data", "read_error")),
                         strict=True))  # fmt: skip
        with ThreadPoolExecutor(self.concurrency) as pool:
            rows = list(pool.map(self._one, items))
        table = pa.Table.from_pylist(rows, schema=interpret_schema())
        name = _write_part(self.out_dir, table) if rows else ""
        errors = sum(r["error"] is not None for r in rows)
        return pa.table({"file": [name], "rows": [len(rows)], "errors": [errors]})


# ------------------------------------------------------------------------------------------------------------
# the job


@dataclass
class RayJobSummary:
    """What a Ray job did.

    Attributes:
        inputs: sticker locations given.
        already_done: of those, skipped because their hash is in the output (resume).
        written: rows written by this run; ``errors``: of those, stickers that failed (named in the ``error`` column).
        files: Parquet files written by this run.
        output_rows: distinct (hash, path) rows in the output folder after the run.
        seconds: wall time of the job.
    """

    inputs: int
    already_done: int = 0
    written: int = 0
    errors: int = 0
    files: int = 0
    output_rows: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.inputs} stickers: {self.already_done} already in the output, {self.written} written "
            f"({self.errors} failed, named in the 'error' column) in {self.files} files, {rate:.1f}/s; "
            f"the output holds {self.output_rows} rows"
        )


def _run(
    locations: Sequence[str],
    out_dir: Path,
    actor: type,
    constructor_kwargs: dict[str, Any],
    *,
    successes_only: bool,
    batch_size: int,
    num_actors: int,
    gpus_per_actor: float,
    cpus_per_actor: float,
    progress: bool,
    address: str | None,
    max_bytes: int,
) -> RayJobSummary:
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    done = existing_keys(out_dir, successes_only=successes_only)
    summary = RayJobSummary(inputs=len(locations))
    with ray_session(address, progress=progress) as ray:
        _check_resources(ray, num_actors, cpus_per_actor, gpus_per_actor)
        done_ref = ray.put(frozenset(done))
        blocks = max(1, min(len(locations) // max(1, batch_size), 1000))
        ds = ray.data.from_items([{"path": p} for p in locations], override_num_blocks=blocks)
        ds = ds.map_batches(_read_batch, fn_kwargs={"done": [done_ref], "max_bytes": max_bytes},
                            batch_format="pyarrow", batch_size=batch_size,
                            num_cpus=READ_CPUS)  # fmt: skip
        ds = ds.map_batches(
            actor,
            fn_constructor_kwargs={"out_dir": str(out_dir), **constructor_kwargs},
            batch_format="pyarrow",
            batch_size=batch_size,
            concurrency=max(1, num_actors),
            num_gpus=gpus_per_actor or None,
            num_cpus=cpus_per_actor,
        )  # Ray Data retries tasks and restarts actors lost with a node (max_retries / max_restarts = -1)
        results = ds.take_all()
    summary.written = sum(int(r["rows"]) for r in results)
    summary.errors = sum(int(r["errors"]) for r in results)
    summary.files = len({r["file"] for r in results if r["file"]})
    summary.already_done = len(locations) - summary.written
    summary.output_rows = read_output(out_dir).num_rows if summary.files or done else 0
    summary.seconds = time.time() - t0
    return summary


def _check_resources(ray: Any, num_actors: int, cpus_per_actor: float, gpus_per_actor: float) -> None:
    """Stop before the job when the actors would hold every CPU (the read tasks could then never run: the job
    would wait forever) or ask for more GPUs than the cluster has.

    Raises:
        UsageError: naming the flags and the cluster's resources.
    """
    have = ray.cluster_resources()
    cpus, gpus = float(have.get("CPU", 0)), float(have.get("GPU", 0))
    need = max(1, num_actors) * cpus_per_actor
    if need + READ_CPUS > cpus:
        raise UsageError(
            f"--actors {num_actors} x --cpus-per-actor {cpus_per_actor:g} = {need:g} CPUs leave none of the cluster's "
            f"{cpus:g} for reading the stickers (each read task takes {READ_CPUS:g})",
            hint="lower --actors or --cpus-per-actor (e.g. --cpus-per-actor 0.5), or add nodes",
        )
    if gpus_per_actor and max(1, num_actors) * gpus_per_actor > gpus:
        raise UsageError(
            f"--actors {num_actors} x --gpus-per-actor {gpus_per_actor:g} GPUs, but the cluster has {gpus:g}",
            hint="lower --actors or --gpus-per-actor",
        )


def predict_ray(
    locations: Sequence[str],
    out_dir: str | Path,
    *,
    model: str,
    batch_size: int = 16,
    num_actors: int = 1,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float = 1.0,
    threads_per_actor: int | None = None,
    calibrated: bool = True,
    emoji: dict[str, str] | None = None,
    max_pixels: int | None = 50_000_000,
    store: str | Path | None = None,
    progress: bool = True,
    address: str | None = None,
    max_bytes: int | None = None,
    precision: str = "fp32",
    calibration: Sequence[str] | None = None,
) -> RayJobSummary:
    """Predict every sticker at ``locations`` on Ray; one Parquet row each in ``out_dir`` (schema
    :func:`predict_schema`). Stickers whose hash is already there are skipped.

    Args:
        locations: local paths or object-store URIs (:func:`mghft.scale.inputs.list_inputs`).
        out_dir: the output folder (created; appended to).
        model: a checkpoint folder every Ray node can read, or a Hugging Face Hub repo id.
        batch_size: stickers per forward pass and per output file.
        num_actors: model replicas (each loads the model once).
        gpus_per_actor: GPUs each replica holds (0: CPU).
        cpus_per_actor: CPUs Ray reserves per replica.
        threads_per_actor: torch threads per CPU replica (default: torch's).
        calibrated, emoji, max_pixels: as :func:`mghft.load_predictor`.
        store: a description store every node can read (views for the stickers it holds), or ``None``.
        progress: Ray Data's progress bars.
        address: Ray cluster address (default ``RAY_ADDRESS``, else a local Ray).
        max_bytes: largest sticker file read.
        precision, calibration: as :func:`mghft.load_predictor` (each replica checks its own CPU).
    """
    from mghft.scale.inputs import MAX_STICKER_BYTES

    options: dict[str, Any] = {
        "device": "cuda" if gpus_per_actor else "cpu",
        "calibrated": calibrated,
        "emoji": emoji,
        "max_pixels": max_pixels,
        "batch_size": batch_size,
        "threads": threads_per_actor,
        "precision": precision,
        "calibration": list(calibration) if calibration else None,
    }
    return _run(
        locations,
        Path(out_dir),
        _PredictActor,
        {"model": str(model), "options": options, "store": str(store) if store else None},
        successes_only=False,
        batch_size=batch_size,
        num_actors=num_actors,
        gpus_per_actor=gpus_per_actor,
        cpus_per_actor=cpus_per_actor,
        progress=progress,
        address=address,
        max_bytes=max_bytes or MAX_STICKER_BYTES,
    )


def interpret_ray(
    locations: Sequence[str],
    out_dir: str | Path,
    *,
    backend_factory: Callable[[], Any],
    batch_size: int = 32,
    num_actors: int = 1,
    cpus_per_actor: float = 0.25,
    concurrency: int = 8,
    max_side: int = 512,
    progress: bool = True,
    address: str | None = None,
    max_bytes: int | None = None,
) -> RayJobSummary:
    """Describe every sticker at ``locations`` on Ray; one Parquet row each in ``out_dir`` (schema
    :func:`interpret_schema`). Stickers already described there are skipped; failures are recorded with their
    ``error`` and described again on the next run.

    Args:
        backend_factory: a picklable callable returning the backend (each actor builds its own).
        cpus_per_actor: CPUs Ray reserves per actor (it mostly waits on the servers).
        concurrency: requests in flight per actor (the server fleet sees ``num_actors x concurrency``).
        Others: as :func:`predict_ray`.
    """
    from mghft.scale.inputs import MAX_STICKER_BYTES

    return _run(
        locations,
        Path(out_dir),
        _InterpretActor,
        {"backend_factory": backend_factory, "concurrency": concurrency, "max_side": max_side},
        successes_only=True,
        batch_size=batch_size,
        num_actors=num_actors,
        gpus_per_actor=0.0,
        cpus_per_actor=cpus_per_actor,
        progress=progress,
        address=address,
        max_bytes=max_bytes or MAX_STICKER_BYTES,
    )


def import_descriptions(out_dir: str | Path, store: Any, *, overwrite: bool = False) -> tuple[int, int]:
    """Put the successful rows of an interpret output into a description store; returns (added, failures)."""
    from mghft.interpret import Description

    table = read_output(out_dir)
    missing = [c for c in INTERPRET_COLUMNS if c not in table.column_names]
    if missing:
        raise MghftError(f"{out_dir}: not an interpret output (no column {missing[0]!r})")
    added = failed = 0
    for row in table.to_pylist():
        if row["error"] is not None:
            failed += 1
            continue
        desc = Description(
            image_sha256=row["sha256"],
            views={v: row[v] for v in VIEWS if row[v]},
            ocr_text=row["ocr_text"] or "",
            backend=row["backend"] or "",
            model=row["model"] or "",
            prompt_version=row["prompt_version"] or "",
            **({"created": row["created"]} if row["created"] else {}),
            usage=json.loads(row["usage"] or "{}"),
        )
        added += store.put(desc, overwrite=overwrite)
    return added, failed


__all__ = [
    "RayJobSummary",
    "existing_keys",
    "import_descriptions",
    "interpret_ray",
    "interpret_schema",
    "predict_ray",
    "predict_schema",
    "ray_session",
    "read_output",
]
