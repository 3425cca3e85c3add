"""The ``--engine ray`` side of ``mghft predict`` and ``mghft interpret`` (argparse only; Ray is imported when a
Ray run starts)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mghft.errors import UsageError


def add_engine_args(p: argparse.ArgumentParser, *, actors_help: str) -> None:
    """``--engine``, ``--ray-address``, ``--actors``, ``--gpus-per-actor``, ``--cpus-per-actor``."""
    g = p.add_argument_group("scale-out on Ray Data (--engine ray)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: a Ray Data job writing a Parquet dataset folder (--out "
                   "DIR), resumable by image hash; PATHs may then be manifests (.csv/.jsonl/.parquet) and "
                   "object-store URIs")  # fmt: skip
    g.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to run on (default: $RAY_ADDRESS, else a local Ray)")  # fmt: skip
    g.add_argument("--actors", type=int, default=1, metavar="N", help=f"{actors_help} (default: 1)")
    g.add_argument("--gpus-per-actor", type=float, default=0.0, metavar="G", help="GPUs per actor (default: 0)")
    g.add_argument("--cpus-per-actor", type=float, metavar="C",
                   help="CPUs Ray reserves per actor (default: 1 for predict, 0.25 for interpret, which waits on "
                   "its servers); actors must leave some for the read tasks")  # fmt: skip


def _out_dir(args: argparse.Namespace) -> Path:
    out = getattr(args, "out", None)
    if out is None:
        raise UsageError("--engine ray needs --out DIR (the Parquet dataset folder to write)")
    out = Path(out)
    if out.suffix.lower() in (".csv", ".jsonl", ".json") or (out.exists() and not out.is_dir()):
        raise UsageError(
            f"--out {out}: --engine ray writes a Parquet dataset folder, not a file",
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
    (out / "_job.json").write_text(json.dumps({**meta, "summary": summary.as_dict()}, indent=2, default=str) + "\n")
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
        precision=args.precision,
        calibration=[str(c) for c in args.calibration] or None,
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
