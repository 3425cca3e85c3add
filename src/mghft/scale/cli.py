"""The ``--engine ray`` side of ``mghft predict`` and ``mghft interpret`` (argparse only; Ray is imported when a
Ray run starts)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mghft.cli_args import COUNT, NON_NEGATIVE, POSITIVE
from mghft.errors import UsageError


def add_engine_args(p: argparse.ArgumentParser, *, actors_help: str) -> None:
    """``--engine``, ``--ray-address``, ``--actors``, ``--gpus-per-actor``, ``--cpus-per-actor``."""
    g = p.add_argument_group("scale-out on Ray Data (--engine ray)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: a Ray Data job writing a Delta Lake table (--out DIR), "
                   "one row per path and model fingerprint, resumable; PATHs may then be manifests "
                   "(.csv/.jsonl/.parquet) and object-store URIs")  # fmt: skip
    g.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to run on (default: $RAY_ADDRESS, else a local Ray)")  # fmt: skip
    g.add_argument("--actors", type=COUNT, default=1, metavar="N", help=f"{actors_help} (default: 1)")
    g.add_argument(
        "--gpus-per-actor", type=NON_NEGATIVE, default=0.0, metavar="G", help="GPUs per actor (0: none; default: 0)"
    )
    g.add_argument("--cpus-per-actor", type=POSITIVE, metavar="C",
                   help="CPUs Ray reserves per actor (default: 1 for predict, 0.25 for interpret, which waits on "
                   "its servers); actors must leave some for the read tasks")  # fmt: skip


def _out_dir(args: argparse.Namespace) -> Path:
    out = getattr(args, "out", None)
    if out is None:
        raise UsageError("--engine ray needs --out DIR (the Delta Lake table folder to write)")
    out = Path(out)
    if out.suffix.lower() in (".csv", ".jsonl", ".json") or (out.exists() and not out.is_dir()):
        raise UsageError(
            f"--out {out}: --engine ray writes a table folder (Delta Lake), not a file",
            hint="give a folder, e.g. --out runs/labels",
        )
    return out


def _locations(args: argparse.Namespace) -> list[str]:
    from mghft.scale.inputs import list_inputs

    if not args.paths:
        raise UsageError("give PATHs: folders, image files, manifests (.csv/.jsonl/.parquet) or URIs")
    locations = list_inputs([str(p) for p in args.paths], on_skip=lambda s: print(f"skipped {s}", file=sys.stderr))
    if not locations:
        raise UsageError(f"no image files under {' '.join(map(str, args.paths))}")
    return locations


def _finish(out: Path, summary: Any, meta: dict[str, Any]) -> int:
    """Record the job beside the table (``_jobs/<fingerprint>.json``: one per model, never overwritten by another's)
    and report it; 1 when every sticker of this run failed."""
    from mghft.scale.table import read_output

    jobs = out / "_jobs"
    jobs.mkdir(exist_ok=True)
    parts = None
    rows = read_output(out, summary.fingerprint).slice(0, 1).column("fingerprint_parts").to_pylist()
    if rows:
        parts = json.loads(rows[0])
    record = {**meta, "fingerprint": summary.fingerprint, "fingerprint_parts": parts, "summary": summary.as_dict()}
    (jobs / f"{summary.fingerprint}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(summary.format() + f" -> {out}", file=sys.stderr)
    return 1 if summary.errors and summary.errors == summary.written else 0  # every sticker of this run failed


def predict_with_ray(args: argparse.Namespace) -> int:
    """``mghft predict --engine ray``."""
    from mghft.emoji import read_emoji_map
    from mghft.scale.ray_engine import predict_ray

    if getattr(args, "whatsapp_pack", None) or getattr(args, "telegram_list", None) or args.explain is not None:
        raise UsageError("--engine ray writes labels only; sticker packs and --explain run with --engine local")
    out = _out_dir(args)
    locations = _locations(args)
    summary = predict_ray(
        locations,
        out,
        model=args.model,
        batch_size=args.batch_size,
        num_actors=args.actors,
        gpus_per_actor=args.gpus_per_actor,
        cpus_per_actor=args.cpus_per_actor if args.cpus_per_actor is not None else 1.0,
        calibrated=not args.uncalibrated,
        emoji=read_emoji_map(args.emoji_map) if args.emoji_map else None,
        max_pixels=args.max_pixels,
        store=args.store,
        progress=not args.no_progress,
        address=args.ray_address,
        top_k=args.top_k,
        min_probability=args.min_probability,
        precision=args.precision,
        agreement_set=[str(c) for c in args.agreement_set] or None,
    )
    meta = {"command": "predict", "model": args.model, "inputs": [str(p) for p in args.paths]}
    return _finish(out, summary, {**meta, "precision": args.precision})


def interpret_with_ray(args: argparse.Namespace, backend_factory: Callable[[], Any]) -> int:
    """``mghft interpret --engine ray`` (``backend_factory`` builds the backend in each actor)."""
    from mghft.scale.ray_engine import interpret_ray

    if args.dataset:
        raise UsageError("--engine ray reads PATHs (folders, manifests, URIs), not --dataset")
    out = _out_dir(args)
    locations = _locations(args)
    if args.limit:
        locations = locations[: args.limit]
    summary = interpret_ray(
        locations,
        out,
        backend_factory=backend_factory,
        num_actors=args.actors,
        cpus_per_actor=args.cpus_per_actor if args.cpus_per_actor is not None else 0.25,
        concurrency=args.concurrency,
        max_side=args.max_side,
        progress=not args.no_progress,
        address=args.ray_address,
    )
    meta = {"command": "interpret", "backend": args.backend, "inputs": [str(p) for p in args.paths]}
    return _finish(out, summary, meta)


# ------------------------------------------------------------------------------------------------------------
# mghft catalog


def register(sub: Any) -> None:
    """Add the ``catalog`` command (reading an ``--engine ray`` output table)."""
    from mghft.cli_args import local_path

    p = sub.add_parser("catalog", help="read an `--engine ray` output table: its models, or an export to one file")
    csub = p.add_subparsers(dest="catalog_command", required=True, metavar="COMMAND")
    ls = csub.add_parser("list", help="the fingerprints in a table: rows, errors and what each is made of")
    ls.add_argument("table", type=local_path, metavar="DIR", help="the --out folder of an --engine ray run")
    ls.set_defaults(handler=_cmd_list)
    ex = csub.add_parser("export", help="one Parquet or CSV file of a table: one current row per (path, fingerprint)")
    ex.add_argument("table", type=local_path, metavar="DIR", help="the --out folder of an --engine ray run")
    ex.add_argument("--out", type=local_path, required=True, help="the file to write (.parquet or .csv)")
    ex.add_argument("--format", choices=("parquet", "csv"), help="output format, whatever --out's extension")
    ex.add_argument("--fingerprint", metavar="HEX",
                    help="only this model's rows (8+ hex digits of one listed by `mghft catalog list`)")  # fmt: skip
    ex.set_defaults(handler=_cmd_export)


def _cmd_list(args: argparse.Namespace) -> int:
    from mghft.scale.table import fingerprints, read_output

    out = []
    for fp, n in sorted(fingerprints(args.table).items()):
        t = read_output(args.table, fp)
        parts = t.slice(0, 1).column("fingerprint_parts").to_pylist()
        out.append({"fingerprint": fp, "rows": n, "errors": n - t.column("error").null_count,
                    "parts": json.loads(parts[0]) if parts and parts[0] else None})  # fmt: skip
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from mghft.cli_args import output_format
    from mghft.scale.table import export_output

    fmt = output_format(args.out, args.format, {".parquet": "parquet", ".csv": "csv"})
    n = export_output(args.table, args.out, fmt, args.fingerprint)
    print(f"{n} rows written to {args.out}", file=sys.stderr)
    return 0
