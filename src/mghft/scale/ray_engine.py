"""``mghft predict`` and ``mghft interpret`` on Ray Data: one row per sticker path in a Delta Lake table.

The pipeline (a Ray Data streaming job):

1. **read** (Ray tasks): each location's bytes (local file or object-store URI) and their SHA-256; the
   (path, sha256) pairs that already have a success row of this run's fingerprint are dropped, so a rerun resumes
   where a killed job stopped and a new path with known bytes still gets its own row.
2. **label** (a pool of Ray actors, each loading the model or the interpreter once, ``num_gpus`` each where
   GPUs exist): decode, predict or describe; each row is stamped with the actor's fingerprint
   (:mod:`mghft.fingerprint`), which must equal the driver's.
3. **commit** (the driver): rows arrive as the actors finish them and are merged into the output table in chunks
   (:mod:`mghft.scale.table`: one Delta transaction per chunk, keyed by (path, fingerprint)), so a killed job
   keeps what it committed and a batch that Ray retried or regrouped adds nothing twice.

Ray retries a failed read task and restarts a lost actor at most :data:`ATTEMPTS` - 1 times, and an actor labels a
batch whose labelling raised at most :data:`ATTEMPTS` times; a batch that still fails becomes error rows (``error``
names the cause: the exception raised, or its worker or node lost each time) and the job ends.
``mghft descriptions import`` reads an interpret output into a description store for training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mghft.errors import MghftError, UsageError
from mghft.fingerprint import Fingerprint
from mghft.scale import table as out_table
from mghft.scale.table import read_output
from mghft.views import VIEWS

READ_CPUS = 0.25
"""CPUs Ray reserves per read task: reading and hashing is light, and the label actors must not starve it."""

ATTEMPTS = 2
"""Tries Ray gives a batch (task retries and actor restarts), after which its stickers get error rows."""

COMMIT_ROWS = 512
"""Rows per commit at most (a commit also happens every :data:`COMMIT_SECONDS`)."""

COMMIT_SECONDS = 10.0


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
    local Ray started for this job and stopped after it. Ray Data lets a batch that failed :data:`ATTEMPTS` times
    through (its stickers become error rows) instead of failing the whole job."""
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
    old = ctx.enable_progress_bars, ctx.max_errored_blocks, ctx.max_consecutive_actor_init_deaths
    ctx.enable_progress_bars = progress
    ctx.max_errored_blocks = -1  # a batch that failed every attempt is reported as error rows, not a crashed job
    try:
        yield ray
    finally:
        ctx.enable_progress_bars, ctx.max_errored_blocks, ctx.max_consecutive_actor_init_deaths = old
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------------------------------------
# stage 1: read (Ray tasks)

_DONE_CACHE: dict[str, frozenset[tuple[str, str]]] = {}


def _read_batch(batch: Any, done: list[Any], max_bytes: int) -> Any:
    """locations -> (path, sha256, data, error), without the (path, sha256) pairs in ``done[0]``."""
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
            data, sha, err = b"", "", str(e) or "unreadable"
        if (loc, sha) in skip:
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

FINGERPRINT_COLUMNS = [("fingerprint", "string"), ("fingerprint_parts", "string")]


def predict_schema(classes: Sequence[str]) -> Any:
    """The schema of ``mghft predict --engine ray`` rows for these classes (``fingerprint_parts``: JSON;
    ``emotions``: the emotions chosen by ``--top-k``/``--min-probability`` with their probabilities, else null)."""
    import pyarrow as pa

    return pa.schema(
        [("path", pa.string()), ("sha256", pa.string()), ("fingerprint", pa.string())]
        + [("label", pa.string()), ("confidence", pa.float64())]
        + [(f"p_{c}", pa.float64()) for c in classes]
        + [("emoji", pa.list_(pa.string()))]
        + [("emotions", pa.list_(pa.struct([("label", pa.string()), ("probability", pa.float64())])))]
        + [("view_source", pa.string())]
        + [(f"view_{v}", pa.string()) for v in VIEWS]
        + [("calibrated", pa.bool_()), ("temperature", pa.float64()), ("calibration", pa.string())]
        + [("model", pa.string()), ("error", pa.string())]
        + [("fingerprint_parts", pa.string())]
    )


INTERPRET_COLUMNS = ("path", "sha256", "fingerprint", *VIEWS, "ocr_text", "backend", "model", "prompt_version",
                     "created", "usage", "error", "fingerprint_parts")  # fmt: skip


def interpret_schema() -> Any:
    """The schema of ``mghft interpret --engine ray`` rows (``usage`` and ``fingerprint_parts``: JSON as text)."""
    import pyarrow as pa

    return pa.schema([(c, pa.string()) for c in INTERPRET_COLUMNS])


def _load_predictor(model: str, options: dict[str, Any], store: str | None) -> Any:
    """The predictor of a predict run, as the driver and every actor build it."""
    from mghft.serve.predictor import load_predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a variant name's "random weights" warning: the driver has shown it
        predictor = load_predictor(model, **options)
    if store:
        from mghft.interpret import DescriptionStore
        from mghft.serve.predictor import StoreOnlyInterpreter

        predictor.interpreter = StoreOnlyInterpreter(DescriptionStore(store, read_only=True))
    return predictor


def predict_fingerprint(predictor: Any, selection: dict[str, Any] | None = None) -> Fingerprint:
    """The fingerprint of a predict run's rows (``selection``: ``top_k``/``min_probability``, which change them)."""
    from mghft.fingerprint import predictor_fingerprint

    return predictor_fingerprint(predictor, selection=selection)


class _CappedAttempts:
    """Labels a batch with ``self._label`` at most :data:`ATTEMPTS` times while it raises; then returns the batch's
    rows as errors naming the last exception, so the cause reaches the table rather than only a worker's log (Ray
    Data would try a raising batch once and report it as lost). A worker that dies is Ray's to restart."""

    def _label(self, batch: Any) -> Any:
        raise NotImplementedError

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        for _ in range(ATTEMPTS):
            try:
                return self._label(batch)
            except Exception as e:  # noqa: PERF203 (each attempt must catch its own failure)
                last = e
        error = f"{type(last).__name__}: {last} (its batch failed {ATTEMPTS} attempts); run again to retry"
        # an actor that never loaded its model has no fingerprint: the driver stamps its own on these error rows
        fp, parts = getattr(self, "fingerprint", None), getattr(self, "parts", None)
        paths, shas = batch.column("path").to_pylist(), batch.column("sha256").to_pylist()
        rows = [{"path": p, "sha256": h, "fingerprint": fp, "fingerprint_parts": parts, "error": error}
                for p, h in zip(paths, shas, strict=True)]  # fmt: skip
        return pa.Table.from_pylist(rows)


class _PredictActor(_CappedAttempts):
    """Loads the predictor on its first batch (a rerun with nothing left to label loads no model); labels batches
    and returns their rows."""

    def __init__(
        self, model: str, options: dict[str, Any], store: str | None, selection: dict[str, Any] | None = None
    ) -> None:
        self.args = (model, dict(options), store)
        self.selection = {k: v for k, v in (selection or {}).items() if v is not None}
        self.predictor: Any = None

    def _setup(self) -> None:
        import torch

        model, options, store = self.args
        threads = options.pop("threads", None)
        if threads:
            torch.set_num_threads(int(threads))
        self.predictor = _load_predictor(model, options, store)
        fp = predict_fingerprint(self.predictor, self.selection)
        self.fingerprint, self.parts = fp.id, json.dumps(fp.parts, sort_keys=True, ensure_ascii=False)
        self.schema = predict_schema(self.predictor.class_names)

    def _label(self, batch: Any) -> Any:
        import pyarrow as pa

        from mghft.data.images import ImageLoadError

        if self.predictor is None:
            self._setup()
        p = self.predictor
        rows: list[dict[str, Any]] = []
        good, texts, sources, where = [], [], [], []
        for path, sha, data, read_error in zip(*(batch.column(c).to_pylist() for c in
                                                 ("path", "sha256", "data", "read_error")), strict=True):  # fmt: skip
            row: dict[str, Any] = {"sha256": sha, "path": path, "model": p.name, "error": read_error,
                                   "fingerprint": self.fingerprint, "fingerprint_parts": self.parts}  # fmt: skip
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
        try:
            preds = p.run(good, texts, sources, explain=False) if good else []
        except Exception as e:  # the batch's rows say why; the job goes on
            preds = []
            for i in where:
                rows[i]["error"] = f"{type(e).__name__}: {e}"
        from mghft.selection import select_emotions

        for i, pred in zip(where, preds, strict=True):
            rows[i].update(
                emotions=select_emotions(pred.probabilities, **self.selection) if self.selection else None,
                label=pred.label,
                confidence=pred.confidence,
                emoji=list(pred.emoji),
                view_source=pred.view_source,
                calibrated=pred.calibrated,
                temperature=pred.temperature,  # per row: the temperature of its input condition
                calibration=pred.calibration,
                **{f"p_{c}": v for c, v in pred.probabilities.items()},
                **{f"view_{v}": pred.views[v] for v in VIEWS},
            )
        return pa.Table.from_pylist(rows, schema=self.schema)


def interpret_fingerprint(backend: Any, max_side: int) -> Fingerprint:
    """The fingerprint of an interpret run's rows: the writer (backend, model, prompt version) and image size."""
    from mghft.fingerprint import writer_fingerprint

    return writer_fingerprint(backend, max_side=max_side)


class _InterpretActor(_CappedAttempts):
    """Builds the interpreter backend once; describes batches (``concurrency`` images at a time) and returns their
    rows."""

    def __init__(self, backend_factory: Callable[[], Any], concurrency: int, max_side: int) -> None:
        from mghft.interpret import Interpreter

        backend = backend_factory()
        self.interpreter = Interpreter(backend, None, max_side=max_side)
        self.concurrency = max(1, concurrency)
        fp = interpret_fingerprint(backend, max_side)
        self.fingerprint, self.parts = fp.id, json.dumps(fp.parts, sort_keys=True, ensure_ascii=False)

    def _one(self, item: tuple[str, str, bytes, str | None]) -> dict[str, Any]:
        path, sha, data, read_error = item
        row: dict[str, Any] = {"sha256": sha, "path": path, "error": read_error, "fingerprint": self.fingerprint,
                               "fingerprint_parts": self.parts}  # fmt: skip
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

    def _label(self, batch: Any) -> Any:
        from concurrent.futures import ThreadPoolExecutor

        import pyarrow as pa

        items = list(zip(*(batch.column(c).to_pylist() for c in ("path", "sha256", "data", "read_error")),
                         strict=True))  # fmt: skip
        with ThreadPoolExecutor(self.concurrency) as pool:
            rows = list(pool.map(self._one, items))
        return pa.Table.from_pylist(rows, schema=interpret_schema())


# ------------------------------------------------------------------------------------------------------------
# the job


class FingerprintMismatchError(MghftError):
    """An actor's model (or writer) is not the one the driver loaded: a node sees another checkpoint."""


@dataclass
class RayJobSummary:
    """What a Ray job did.

    Attributes:
        inputs: sticker locations given.
        already_done: of those, skipped because their (path, sha256) has a success row of this fingerprint.
        written: rows committed by this run; ``errors``: of those, stickers that failed (named in ``error``).
        commits: table transactions of this run.
        output_rows: rows of this fingerprint in the table after the run (one per path).
        fingerprint: the id of what wrote this run's rows.
        seconds: wall time of the job.
    """

    inputs: int
    already_done: int = 0
    written: int = 0
    errors: int = 0
    commits: int = 0
    output_rows: int = 0
    fingerprint: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.inputs} stickers: {self.already_done} already labelled by this model, {self.written} written "
            f"({self.errors} failed, named in the 'error' column) in {self.commits} commits, {rate:.1f}/s; "
            f"the output holds {self.output_rows} rows of fingerprint {self.fingerprint}"
        )


def _lost_rows(schema: Any, lost: Sequence[str], fp: Fingerprint) -> Any:
    """Error rows for stickers whose batch failed every attempt (their bytes are not known here)."""
    import pyarrow as pa

    parts = json.dumps(fp.parts, sort_keys=True, ensure_ascii=False)
    error = f"its batch failed {ATTEMPTS} attempts (its worker or node lost each time); run again to retry"
    rows = [{"path": p, "sha256": "", "fingerprint": fp.id, "fingerprint_parts": parts, "error": error} for p in lost]
    return pa.Table.from_pylist(rows, schema=schema)


def _as_job_rows(batch: Any, schema: Any, fp: Fingerprint) -> Any:
    """Error rows of a failed batch in the job's schema; those of an actor that never loaded its model (no
    fingerprint) are stamped with the driver's, as they hold nothing a model produced."""
    import pyarrow as pa

    parts = json.dumps(fp.parts, sort_keys=True, ensure_ascii=False)
    rows = batch.to_pylist()
    for r in rows:
        if r.get("fingerprint") is None and r.get("error"):
            r["fingerprint"], r["fingerprint_parts"] = fp.id, parts
    return pa.Table.from_pylist(rows, schema=schema)


def _run(
    locations: Sequence[str],
    out_dir: Path,
    actor: type,
    constructor_kwargs: dict[str, Any],
    *,
    kind: str,
    fingerprint: Fingerprint,
    schema: Any,
    batch_size: int,
    num_actors: int,
    gpus_per_actor: float,
    cpus_per_actor: float,
    progress: bool,
    address: str | None,
    max_bytes: int,
    commit_rows: int | None = None,
) -> RayJobSummary:
    t0 = time.time()
    commit_rows = commit_rows or COMMIT_ROWS
    out_table.ensure_table(out_dir, schema, kind)
    done = out_table.done_pairs(out_dir, fingerprint.id)
    summary = RayJobSummary(inputs=len(locations), fingerprint=fingerprint.id)
    seen: set[str] = set()
    pending: list[Any] = []
    pending_rows = 0
    last = time.time()

    def flush() -> None:
        nonlocal pending, pending_rows, last
        if pending:
            import pyarrow as pa

            chunk = pa.concat_tables(pending, promote_options="default")
            out_table.commit(out_dir, chunk)
            summary.commits += 1
            summary.written += chunk.num_rows
            summary.errors += chunk.num_rows - chunk.column("error").null_count
        pending, pending_rows, last = [], 0, time.time()

    with ray_session(address, progress=progress) as ray:
        _check_resources(ray, num_actors, cpus_per_actor, gpus_per_actor)
        from ray.data import ActorPoolStrategy

        done_ref = ray.put(frozenset(done))
        blocks = max(1, min(len(locations) // max(1, batch_size), 1000))
        num_actors = max(1, min(num_actors, blocks))  # an actor with no block to label only costs its start
        # Ray Data 2.60 fails the whole job when an actor of the pool dies before its first task, which includes an
        # actor it cancelled itself while it was starting: allow that as often as the pool has actors, per attempt
        ctx = ray.data.DataContext.get_current()
        ctx.max_consecutive_actor_init_deaths = max(ctx.max_consecutive_actor_init_deaths, ATTEMPTS * num_actors)
        with warnings.catch_warnings():
            # Ray 2.60 names no parameter for task retries and actor restarts other than these remote arguments,
            # and warns that passing them so is deprecated
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            ds = ray.data.from_items([{"path": p} for p in locations], override_num_blocks=blocks)
            ds = ds.map_batches(_read_batch, fn_kwargs={"done": [done_ref], "max_bytes": max_bytes},
                                batch_format="pyarrow", batch_size=batch_size, num_cpus=READ_CPUS,
                                max_retries=ATTEMPTS - 1)  # fmt: skip
            ds = ds.map_batches(
                actor,
                fn_constructor_kwargs=constructor_kwargs,
                batch_format="pyarrow",
                batch_size=batch_size,
                compute=ActorPoolStrategy(size=max(1, num_actors)),
                num_gpus=gpus_per_actor or None,
                num_cpus=cpus_per_actor,
                max_restarts=ATTEMPTS - 1,
                max_task_retries=ATTEMPTS - 1,
            )
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            if batch.num_rows == 0:
                continue
            if batch.schema != schema:  # the error rows of a batch that raised every attempt (_CappedAttempts)
                batch = _as_job_rows(batch, schema, fingerprint)
            got = set(batch.column("fingerprint").to_pylist())
            if got != {fingerprint.id}:
                other = Fingerprint.from_json(
                    json.dumps({"id": sorted(got - {fingerprint.id})[0],
                                "parts": json.loads(batch.column("fingerprint_parts")[0].as_py())})
                )  # fmt: skip
                flush()
                raise FingerprintMismatchError(
                    f"a Ray worker loaded another model than this driver ({other.id} != {fingerprint.id}): "
                    + "; ".join(other.differences(fingerprint)),
                    hint="every node must read the same checkpoint, store and options (a shared path or a Hub id)",
                )
            seen.update(batch.column("path").to_pylist())
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= commit_rows or time.time() - last >= COMMIT_SECONDS:
                flush()
        flush()
    # stickers neither skipped nor returned: their batch failed every attempt
    done_paths = {p for p, _ in done}
    lost = [p for p in dict.fromkeys(locations) if p not in seen and p not in done_paths]
    if lost:
        pending.append(_lost_rows(schema, lost, fingerprint))
        flush()
    summary.already_done = len(locations) - len({*seen, *lost})
    summary.output_rows = out_table.fingerprints(out_dir).get(fingerprint.id, 0)
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
    top_k: int | None = None,
    min_probability: float | None = None,
    precision: str = "fp32",
    agreement_set: Sequence[str] | None = None,
) -> RayJobSummary:
    """Predict every sticker at ``locations`` on Ray; one row per path and model fingerprint in the Delta table
    ``out_dir`` (schema :func:`predict_schema`). The (path, sha256) pairs with a success row of this model's
    fingerprint are skipped; rows of other fingerprints stay beside this run's.

    Args:
        locations: local paths or object-store URIs (:func:`mghft.scale.inputs.list_inputs`).
        out_dir: the output table's folder (created; merged into).
        model: a checkpoint folder every Ray node can read, or a Hugging Face Hub repo id.
        batch_size: stickers per forward pass.
        num_actors: model replicas (each loads the model once).
        gpus_per_actor: GPUs each replica holds (0: CPU).
        cpus_per_actor: CPUs Ray reserves per replica.
        threads_per_actor: torch threads per CPU replica (default: torch's).
        calibrated, emoji, max_pixels: as :func:`mghft.load_predictor`.
        store: a description store every node can read (views for the stickers it holds; opened read-only), or
            ``None``.
        progress: Ray Data's progress bars.
        address: Ray cluster address (default ``RAY_ADDRESS``, else a local Ray).
        max_bytes: largest sticker file read.
        top_k, min_probability: several emotions per sticker in the ``emotions`` column
            (:func:`mghft.selection.select_emotions`); part of the fingerprint.
        precision, agreement_set: as :func:`mghft.load_predictor` (each replica checks its own CPU).

    Raises:
        FingerprintMismatchError: an actor loaded another model than the driver (named part by part).
    """
    from mghft.scale.inputs import MAX_STICKER_BYTES

    options: dict[str, Any] = {
        "device": "cuda" if gpus_per_actor else "cpu",
        "calibrated": calibrated,
        "emoji": emoji,
        "max_pixels": max_pixels,
        "batch_size": batch_size,
        "precision": precision,
        "agreement_set": list(agreement_set) if agreement_set else None,
    }
    store_arg = str(store) if store else None
    from mghft.selection import check_selection

    selection = {"top_k": top_k, "min_probability": min_probability}
    driver = _load_predictor(str(model), {**options, "device": "cpu"}, store_arg)
    check_selection(top_k, min_probability, len(driver.class_names))
    fingerprint = predict_fingerprint(driver, selection)
    schema = predict_schema(driver.class_names)
    if driver.interpreter is not None:
        driver.interpreter.close()
    del driver
    return _run(
        locations,
        Path(out_dir),
        _PredictActor,
        {
            "model": str(model),
            "options": {**options, "threads": threads_per_actor},
            "store": store_arg,
            "selection": selection,
        },  # fmt: skip
        kind="predict",
        fingerprint=fingerprint,
        schema=schema,
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
    """Describe every sticker at ``locations`` on Ray; one row per path and writer fingerprint (backend, model,
    prompt version) in the Delta table ``out_dir`` (schema :func:`interpret_schema`). Stickers this writer already
    described there are skipped; failures are recorded with their ``error`` and described again on the next run.

    Args:
        backend_factory: a picklable callable returning the backend (each actor builds its own).
        cpus_per_actor: CPUs Ray reserves per actor (it mostly waits on the servers).
        concurrency: requests in flight per actor (the server fleet sees ``num_actors x concurrency``).
        Others: as :func:`predict_ray`.
    """
    from mghft.scale.inputs import MAX_STICKER_BYTES

    fingerprint = interpret_fingerprint(backend_factory(), max_side)
    return _run(
        locations,
        Path(out_dir),
        _InterpretActor,
        {"backend_factory": backend_factory, "concurrency": concurrency, "max_side": max_side},
        kind="interpret",
        fingerprint=fingerprint,
        schema=interpret_schema(),
        batch_size=batch_size,
        num_actors=num_actors,
        gpus_per_actor=0.0,
        cpus_per_actor=cpus_per_actor,
        progress=progress,
        address=address,
        max_bytes=max_bytes or MAX_STICKER_BYTES,
    )


def import_descriptions(
    out_dir: str | Path, store: Any, *, overwrite: bool = False, fingerprint: str | None = None
) -> tuple[int, int]:
    """Put the successful rows of an interpret output into a description store; returns (added, failures).

    Args:
        fingerprint: the writer whose rows to import (a prefix of 8+ hex digits); required when the table holds
            several.

    Raises:
        MghftError: not an interpret output; several writers and no ``fingerprint`` (they are listed).
    """
    from mghft.interpret import Description

    if out_table.table_kind(out_dir) != "interpret":
        raise MghftError(f"{out_dir}: not an interpret output", hint="give the --out folder of `mghft interpret "
                         "--engine ray`")  # fmt: skip
    if fingerprint is None:
        have = out_table.fingerprints(out_dir)
        if len(have) > 1:
            listed = "; ".join(f"{f}: {n} rows" for f, n in sorted(have.items()))
            raise MghftError(
                f"{out_dir} holds the rows of {len(have)} writers: {listed}",
                hint="choose one with --fingerprint (its column fingerprint_parts says which writer it is)",
            )
    table = read_output(out_dir, fingerprint)
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
    "ATTEMPTS",
    "FingerprintMismatchError",
    "RayJobSummary",
    "import_descriptions",
    "interpret_ray",
    "interpret_schema",
    "predict_ray",
    "predict_schema",
    "ray_session",
    "read_output",
]
