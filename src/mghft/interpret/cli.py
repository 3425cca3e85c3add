"""``mghft interpret``, ``mghft descriptions`` and ``mghft zeroshot``: argparse only; work happens in the handlers."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mghft.cli_args import COUNT, FINITE, POSITIVE, jsonl_file, local_path, number, sqlite_file
from mghft.errors import MghftError, NotFoundError, UsageError
from mghft.filekinds import jsonl_problem

_DATASETS = ("folder", "ser30k", "metmeme", "manifest")
_STORE_HELP = "description store (SQLite file)"


def _add_dataset_args(p: argparse.ArgumentParser, *, split_default: str = "train") -> None:
    g = p.add_argument_group("dataset")
    g.add_argument("--dataset", choices=_DATASETS, help="read a dataset instead of (or besides) PATHs")
    g.add_argument("--root", type=local_path, help="dataset folder (for manifest: the manifest file)")
    g.add_argument("--split", default=split_default,
                   help=f"SER30K split: train, val, test or all (default: {split_default})")  # fmt: skip
    g.add_argument("--language", default="E", help="MET-MEME language: E, C or both (default: E)")


def _add_backend_args(p: argparse.ArgumentParser, *, offline: bool) -> None:
    g = p.add_argument_group("backend")
    spec_help = "<provider>:<model>, provider one of openai, vllm, ollama, llamacpp, lmstudio, compatible"
    g.add_argument("--backend", required=True, help=("'offline' or " if offline else "") + spec_help)
    g.add_argument("--base-url", action="append", default=[], metavar="URL",
                   help="server URL ending in /v1; repeat for several servers of the same model")  # fmt: skip
    g.add_argument("--api-key-env", metavar="NAME", help="environment variable holding the API key")
    g.add_argument("--concurrency", type=COUNT, default=8, help="requests in flight, all endpoints together")
    g.add_argument(
        "--timeout",
        type=POSITIVE,
        default=120.0,
        help="seconds per request, total: connecting, sending, waiting and reading the whole answer",
    )
    g.add_argument("--max-response-mb", type=POSITIVE, default=8.0,
                   help="cap on one answer, as received and decompressed (MiB; default 8)")  # fmt: skip
    g.add_argument("--max-attempts", type=COUNT, default=6, help="attempts per image on 429/5xx/timeouts")
    g.add_argument("--malformed-attempts", type=COUNT, default=3, help="answers per image that may fail to parse")
    g.add_argument("--max-side", type=number(int, minimum=16), default=512, help="longer image side sent, pixels")
    g.add_argument("--max-tokens", type=COUNT, default=700, help="answer token limit (reasoning models count thoughts)")
    g.add_argument("--token-param", choices=("max_tokens", "max_completion_tokens"),
                   help="request field carrying --max-tokens (default: max_completion_tokens for openai, else "
                        "max_tokens; switched once per server that rejects it)")  # fmt: skip
    g.add_argument("--structured", default="auto", choices=("auto", "json_schema", "json_object", "none"),
                   help="ask for JSON answers (auto: schema, falling back per server)")  # fmt: skip
    g.add_argument("--detail", choices=("low", "high", "auto"), help="OpenAI image detail (default low for openai)")
    g.add_argument("--temperature", type=FINITE, default=0.0,
                   help="sampling temperature (0: greedy); negative: server default (also used, with a note, when "
                        "a server accepts only its default)")  # fmt: skip
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--limit", type=COUNT, help="at most this many images")
    g.add_argument("-v", "--verbose", action="store_true", help="log each failure; on an error, the traceback")


def register(subparsers: Any) -> None:
    """Add the ``interpret``, ``descriptions`` and ``zeroshot`` commands."""
    p = subparsers.add_parser(
        "interpret",
        help="write the four view descriptions of images into a description store",
        description="Describe images (files, folders, or a dataset) with a multimodal LLM or the offline backend.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="image files or folders (searched recursively); with --engine ray also manifests "
                   "(.csv/.jsonl/.parquet) and object-store URIs")  # fmt: skip
    p.add_argument("--store", type=sqlite_file,
                   help="description store (SQLite file), created if missing (needed with --engine local)")  # fmt: skip
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="--engine ray: the Parquet folder to write (then `mghft descriptions import`)")  # fmt: skip
    _add_dataset_args(p)
    _add_backend_args(p, offline=True)
    p.add_argument("--prompt-version", help="package prompt version (default: newest)")
    p.add_argument("--shard", default="0/1", help="i/n: describe only shard i of n (by image hash)")
    p.add_argument("--redo", default="none", choices=("none", "stale", "all"),
                   help="redo described images: none, stale (other prompt version), all")  # fmt: skip
    p.add_argument("--reuse", choices=("same", "any"), default="same",
                   help="an image the store describes already is skipped when this backend, model and prompt version "
                   "wrote it (same, the default: others are described again), or whoever wrote it (any)")  # fmt: skip
    p.add_argument("--no-ocr", action="store_true", help="offline backend: skip OCR")
    p.add_argument("--summary-json", type=local_path, help="also write the closing summary here")
    p.add_argument("--dry-run", action="store_true", help="plan only: counts and the request estimate, no calls")
    from mghft.scale.cli import add_engine_args

    add_engine_args(p, actors_help="interpreter clients, each with --concurrency requests in flight")
    p.set_defaults(handler=_cmd_interpret)

    d = subparsers.add_parser("descriptions", help="inspect, export and import a description store")
    dsub = d.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = dsub.add_parser("stats", help="counts by backend, model and prompt; failures by error")
    s.add_argument("--store", type=sqlite_file, required=True, help=_STORE_HELP)
    s.set_defaults(handler=_cmd_stats)
    e = dsub.add_parser("export-official", help="write a SER30K annotation JSON with descriptions in 'text'")
    e.add_argument("--store", type=sqlite_file, required=True, help=_STORE_HELP)
    e.add_argument("--annotations", type=local_path, required=True, help="the SER30K annotation JSON to copy")
    e.add_argument("--out", type=local_path, required=True, help="annotation JSON to write")
    e.add_argument("--images-root", type=local_path, help="the Images folder (default: found beside Annotations)")
    e.add_argument("--on-missing", default="error", choices=("error", "empty", "keep"),
                   help="record without description: fail, empty text, or keep its text")  # fmt: skip
    e.set_defaults(handler=_cmd_export_official)
    i = dsub.add_parser("import-official", help="read a public-code annotation JSON's descriptions into a store")
    i.add_argument("--store", type=sqlite_file, required=True, help=_STORE_HELP)
    i.add_argument(
        "--annotations", type=local_path, required=True, help="public-code annotation JSON with descriptions"
    )
    i.add_argument("--images-root", type=local_path, required=True, help="the Images folder its records point into")
    i.add_argument("--model", default="unknown", help="LLM to record as the descriptions' author")
    i.add_argument("--overwrite", action="store_true", help="replace descriptions the store already holds")
    i.set_defaults(handler=_cmd_import_official)
    x = dsub.add_parser("export-jsonl", help="one JSON line per description")
    x.add_argument("--store", type=sqlite_file, required=True, help=_STORE_HELP)
    x.add_argument("--out", type=local_path, required=True, help="JSONL file to write")
    x.set_defaults(handler=_cmd_export_jsonl)
    m = dsub.add_parser("import-jsonl", help="merge JSONL exports (e.g. of shards) into a store")
    m.add_argument("--store", type=sqlite_file, required=True, help=_STORE_HELP)
    m.add_argument("files", nargs="+", type=jsonl_file, metavar="FILE", help="JSONL files written by export-jsonl")
    m.add_argument("--overwrite", action="store_true", help="replace descriptions the store already holds")
    m.set_defaults(handler=_cmd_import_jsonl)
    g = dsub.add_parser("import", help="read descriptions into a store: an `--engine ray` output folder, or JSONL")
    g.add_argument("sources", nargs="+", type=Path, metavar="SOURCE",
                   help="a table folder written by `mghft interpret --engine ray`, or a .jsonl export")  # fmt: skip
    g.add_argument("--store", type=sqlite_file, required=True,
                   help="description store (SQLite file), created if missing")  # fmt: skip
    g.add_argument("--fingerprint", metavar="HEX",
                   help="the writer whose rows to import from a table of several (mghft catalog list)")  # fmt: skip
    g.add_argument("--overwrite", action="store_true", help="replace descriptions the store already has")
    g.set_defaults(handler=_cmd_import)

    z = subparsers.add_parser(
        "zeroshot",
        help="zero-shot emotion classification by a multimodal LLM",
        description="Ask an LLM for each image's emotion; writes predictions.jsonl and summary.json. Images of a "
        "labelled --dataset (the test split by default) are scored; image PATHs are classified only.",
    )
    z.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                   help="image files or folders (searched recursively), classified without a score")  # fmt: skip
    z.add_argument("--classes", metavar="NAME,NAME,...",
                   help="class names for PATHs without --dataset (default: the seven SER30K classes)")  # fmt: skip
    _add_dataset_args(z, split_default="test")
    _add_backend_args(z, offline=False)
    z.add_argument("--out", type=local_path, required=True, help="output folder")
    z.set_defaults(handler=_cmd_zeroshot)


# --- helpers ------------------------------------------------------------------------------------------------------


def _setup_logging(verbose: bool) -> None:
    from mghft.console import BarSafeHandler

    handler = BarSafeHandler()  # records print above the progress bar
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    for noisy in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _read_dataset(args: argparse.Namespace) -> Any:
    import mghft.data as data

    if args.root is None:
        raise UsageError(f"--dataset {args.dataset} needs --root", hint="--root <the dataset folder or manifest file>")
    try:
        if args.dataset == "ser30k":
            return data.read_ser30k(args.root, args.split)
        if args.dataset == "metmeme":
            return data.read_metmeme(args.root, args.language)
        if args.dataset == "manifest":
            return data.read_manifest(args.root)
        return data.read_folder(args.root)
    except (OSError, ValueError) as err:  # missing files, format errors (they name file and line)
        raise MghftError(f"cannot read the {args.dataset} dataset at --root {args.root}: {err}") from err


def list_images(paths: Sequence[Path]) -> list[str]:
    """Image files among ``paths`` (``mghft.data.walk.find_images``): folders searched recursively, hidden entries
    skipped, sorted; FIFOs, devices and broken links are never opened but named on stderr. Kept as strings (a
    quarter of a ``Path``'s memory, for inputs by the hundred thousand).

    Raises:
        NotFoundError: a named path does not exist.
    """
    from mghft.data.walk import find_images

    found = find_images(paths, as_str=True)
    if found.missing:
        raise NotFoundError(f"no such file or folder: {found.missing[0].path}")
    skipped = found.skipped
    for s in skipped:
        print(f"skipped {s}", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} inputs skipped (not regular files)", file=sys.stderr)
    return found.files


def _backend(args: argparse.Namespace, *, offline_ok: bool) -> Any:
    from mghft.interpret.backends import BackendSpecError, build_backend
    from mghft.interpret.clients import RetryPolicy

    if not offline_ok and args.backend.strip().lower() == "offline":
        raise UsageError("--backend: zeroshot needs an LLM backend, not 'offline'", hint="e.g. --backend openai:gpt-4o")
    if args.timeout <= 0 or args.max_response_mb <= 0:
        raise UsageError("--timeout and --max-response-mb must be positive")
    try:
        return build_backend(
            args.backend,
            base_urls=args.base_url,
            api_key_env=args.api_key_env,
            prompt_version=getattr(args, "prompt_version", None),
            timeout=args.timeout,
            retry=RetryPolicy(max_attempts=args.max_attempts, malformed_attempts=args.malformed_attempts),
            structured=args.structured,
            max_tokens=args.max_tokens,
            temperature=None if args.temperature < 0 else args.temperature,
            detail=args.detail,
            ocr=not getattr(args, "no_ocr", False),
            token_param=args.token_param,
            max_response_bytes=int(args.max_response_mb * 2**20),
        )
    except BackendSpecError as err:
        raise UsageError(f"--backend {err}", hint=err.hint) from None
    except UsageError:
        raise
    except ValueError as err:  # a client setting out of range
        raise UsageError(str(err), hint=f"'mghft {args.command} --help' lists --backend and --base-url") from None


def _progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


# --- handlers -----------------------------------------------------------------------------------------------------


def _cmd_interpret(args: argparse.Namespace) -> int:
    from mghft.interpret.clients import FatalBackendError
    from mghft.interpret.redact import redact_url
    from mghft.interpret.runner import WorkItem, items_from_index, parse_shard, plan_batch, run_batch
    from mghft.interpret.store import DescriptionStore

    _setup_logging(args.verbose)
    if args.engine == "ray":
        import functools

        from mghft.scale.cli import interpret_with_ray

        return interpret_with_ray(args, functools.partial(_backend, args, offline_ok=True))
    if args.store is None:
        raise UsageError("give --store (the description store to write)", hint="or --engine ray --out DIR")
    args.paths = [Path(p) for p in args.paths]
    if not args.paths and not args.dataset:
        raise UsageError("interpret: nothing to describe", hint="give image PATHs, or --dataset with --root")
    try:
        shard = parse_shard(args.shard)
    except ValueError as err:
        raise UsageError(f"--shard: {err}") from None
    files = list_images(args.paths)
    dataset = _read_dataset(args) if args.dataset else None

    def work_items() -> Iterator[WorkItem]:  # made as the plan reads them: none is held
        for f in files:
            yield WorkItem(key=f, path=Path(f))
        if dataset is not None:
            yield from items_from_index(dataset)

    items = work_items()
    backend = _backend(args, offline_ok=True)
    config = {"inputs": [str(p) for p in args.paths], "dataset": args.dataset, "root": str(args.root or ""),
              "split": args.split if args.dataset == "ser30k" else None,
              "base_urls": [redact_url(u) for u in args.base_url]}  # fmt: skip
    with DescriptionStore(args.store) as store:
        if args.dry_run:
            plan = plan_batch(
                items,
                store,
                shard=shard,
                redo=args.redo,
                prompt_version=backend.prompt_version,
                limit=args.limit,
                backend=backend,
                reuse=args.reuse,
            )
            print(json.dumps({**plan.summary.as_dict(), **_estimate(backend, plan.summary.todo)}, indent=2))
            return 0
        summary = run_batch(
            items,
            backend,
            store,
            concurrency=args.concurrency,
            shard=shard,
            redo=args.redo,
            limit=args.limit,
            max_side=args.max_side,
            progress=_progress(args),
            config=config,
            reuse=args.reuse,
        )
    print(summary.format(with_fatal=False), file=sys.stderr)
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    if summary.interrupted:
        return 130
    if summary.fatal_error:  # one message naming the (redacted) URL, and the fix
        fatal = FatalBackendError(summary.fatal_error, hint=summary.fatal_hint or None)
        fatal.exit_code = summary.fatal_exit_code
        raise fatal
    return 1 if summary.failed or summary.unreadable else 0


def _estimate(backend: Any, todo: int) -> dict[str, Any]:
    """Requests and a rough token count for ``todo`` images (no retries)."""
    from mghft.interpret.prompts import get_prompt

    if backend.name == "offline":
        return {"estimated_requests": 0}
    prompt = get_prompt(backend.prompt_version)
    text_tokens = (len(prompt.system) + len(prompt.user)) // 4 + 20
    image_tokens = 85 if backend.client.detail == "low" else None
    return {
        "estimated_requests": todo,
        "estimated_prompt_text_tokens_per_image": text_tokens,
        "estimated_image_tokens_per_image": image_tokens if image_tokens else "model-dependent",
        "estimated_output_tokens_per_image": 250,
    }


def _cmd_stats(args: argparse.Namespace) -> int:
    from collections import Counter

    from mghft.interpret.store import DescriptionStore

    with DescriptionStore(args.store, read_only=True) as store:
        prov = Counter(store.provenance().values())
        failures = store.failures()
        out = {
            "descriptions": len(store),
            "by_backend_model_prompt": dict(prov.most_common()),
            "failures": len(failures),
            "failures_by_error": dict(Counter(f.error.split(":", 1)[0][:40] for f in failures).most_common(10)),
            "runs": len(store.runs()),
        }
    print(json.dumps(out, indent=2))
    return 0


def _cmd_export_official(args: argparse.Namespace) -> int:
    from mghft.interpret.official import export_official_json
    from mghft.interpret.store import DescriptionStore

    with DescriptionStore(args.store, read_only=True) as store:
        try:
            report = export_official_json(
                store, args.annotations, args.out, images_root=args.images_root, on_missing=args.on_missing
            )
        except (ValueError, FileNotFoundError) as err:
            raise MghftError(str(err)) from err
    print(report.format())
    return 0


def _cmd_import_official(args: argparse.Namespace) -> int:
    from mghft.interpret.official import import_official_json
    from mghft.interpret.store import DescriptionStore

    with DescriptionStore(args.store) as store:
        report = import_official_json(
            args.annotations, args.images_root, store, model=args.model, overwrite=args.overwrite
        )
    print(report.format())
    return 0


def _cmd_export_jsonl(args: argparse.Namespace) -> int:
    from mghft.cli_args import output_format
    from mghft.interpret.store import DescriptionStore

    output_format(args.out, None, {".jsonl": "jsonl"})
    with DescriptionStore(args.store, read_only=True) as store:
        print(f"{store.export_jsonl(args.out)} descriptions written to {args.out}")
    return 0


def _cmd_import_jsonl(args: argparse.Namespace) -> int:
    from mghft.interpret.store import DescriptionStore

    with DescriptionStore(args.store) as store:
        added = sum(store.import_jsonl(f, overwrite=args.overwrite) for f in args.files)
        print(f"{added} descriptions added; the store holds {len(store)}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from mghft.interpret.store import DescriptionStore
    from mghft.scale.ray_engine import import_descriptions

    with DescriptionStore(args.store) as store:
        for source in args.sources:
            if source.is_dir():
                added, failed = import_descriptions(
                    source, store, overwrite=args.overwrite, fingerprint=args.fingerprint
                )
                print(f"{source}: {added} descriptions added, {failed} failed stickers left out", file=sys.stderr)
            elif source.suffix.lower() == ".jsonl":
                problem = jsonl_problem(source)
                if problem:
                    raise UsageError(f"SOURCE: {problem}", hint="give a file `mghft descriptions export-jsonl` wrote")
                added = store.import_jsonl(source, overwrite=args.overwrite)
                print(f"{source}: {added} descriptions added", file=sys.stderr)
            else:
                raise UsageError(
                    f"SOURCE: {source} is neither an `--engine ray` output folder nor a .jsonl file",
                    hint="give the folder `mghft interpret --engine ray --out DIR` wrote, or a .jsonl export",
                )
        print(f"{args.store}: {len(store)} descriptions", file=sys.stderr)
    return 0


def _zeroshot_index(args: argparse.Namespace) -> Any:
    """The images to classify: the dataset's (labelled, its classes) and the PATHs' (unlabelled)."""
    from mghft.data.records import DatasetIndex, Sample

    if not args.paths and not args.dataset:
        example = "mghft zeroshot --dataset ser30k --root data/SER30K --backend B --out DIR"
        raise UsageError("give image PATHs or a labelled --dataset", hint=f"e.g. {example}")
    index = _read_dataset(args) if args.dataset else None
    wanted = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    if index is not None:
        if wanted is not None and wanted != list(index.classes):
            raise UsageError(f"--classes {args.classes} differs from the {args.dataset} classes {list(index.classes)}",
                             hint="drop --classes: a dataset brings its own")  # fmt: skip
        classes = list(index.classes)
    else:
        from mghft.registry import SER30K_CLASSES

        classes = wanted if wanted is not None else list(SER30K_CLASSES)
    if len(set(classes)) < 2 or len(set(classes)) != len(classes):
        raise UsageError(f"--classes needs two or more distinct names, got {classes}")
    samples = list(index.samples) if index is not None else []
    seen = {Path(s.path).resolve() for s in samples}
    for path in map(Path, list_images(args.paths)):  # a file named twice (or inside a named folder) is asked once
        if path.resolve() not in seen:
            seen.add(path.resolve())
            samples.append(Sample(path=path, label=None, key=str(path)))
    name = index.name if index is not None else "paths"
    if index is not None and args.paths:
        name += "+paths"
    return DatasetIndex(name=name, root=index.root if index is not None else Path("."), classes=tuple(classes),
                        samples=samples)  # fmt: skip


def _cmd_zeroshot(args: argparse.Namespace) -> int:
    from mghft.interpret.clients import FatalBackendError
    from mghft.interpret.zeroshot import run_zeroshot

    _setup_logging(args.verbose)
    index = _zeroshot_index(args)
    backend = _backend(args, offline_ok=False)
    summary = run_zeroshot(
        index,
        backend.client,
        args.out,
        concurrency=args.concurrency,
        limit=args.limit,
        max_side=args.max_side,
        progress=_progress(args),
    )
    if summary["labelled"]:
        print(
            f"accuracy {summary['accuracy']:.4f} over {summary['answered']} answered labelled images "
            f"({summary['unparseable']} unparseable answers counted wrong, {summary['failed']} failed); "
            f"macro F1 {summary['macro_f1']:.4f}, weighted F1 {summary['weighted_f1']:.4f}",
            file=sys.stderr,
        )
    if summary["unlabelled"]:
        print(f"{summary['unlabelled_predicted']} of {summary['unlabelled']} unlabelled images classified (no score)",
              file=sys.stderr)  # fmt: skip
    print(f"requests {summary['requests']}, tokens {summary['total_tokens']}; see {args.out}/summary.json",
          file=sys.stderr)  # fmt: skip
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if summary["interrupted"]:
        return 130
    if summary["fatal_error"]:  # one message naming the (redacted) URL, and the fix
        fatal = FatalBackendError(summary["fatal_error"], hint=summary["fatal_hint"] or None)
        fatal.exit_code = summary.get("fatal_exit_code") or 2
        raise fatal
    return 0
