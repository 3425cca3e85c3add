"""``mghft predict``, ``mghft serve`` and ``mghft export``: argparse only; the work happens in the handlers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mghft.cli_args import (
    COUNT,
    COUNT_OR_ZERO,
    NON_NEGATIVE,
    POSITIVE,
    check_device,
    local_path,
    number,
    sqlite_file,
)
from mghft.errors import UsageError
from mghft.scale.cli import add_engine_args


def port_number(text: str) -> int:
    """An argparse type for a TCP port, 0 to 65535 (0: the system picks a free one)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0 to 65535)")
    return port


PREDICT_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
EXPORT_FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}


def _add_interpreter_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("views for bare images")
    g.add_argument("--interpreter", metavar="SPEC",
                   help="describe images without views on the fly: 'offline' or <provider>:<model> "
                   "(e.g. openai:gpt-4o, vllm:Qwen/Qwen2.5-VL-7B-Instruct); default: run without views")  # fmt: skip
    g.add_argument("--base-url", action="append", default=[], metavar="URL", help="interpreter server URL (/v1)")
    g.add_argument("--api-key-env", metavar="NAME", help="environment variable holding the interpreter's API key")
    g.add_argument("--store", type=sqlite_file,
                   help="description store (SQLite): views written by `mghft interpret` are read from it, "
                   "and new ones cached in it")  # fmt: skip
    g.add_argument("--reuse", choices=("same", "any"), default="same",
                   help="with --interpreter: use a stored description only when this backend, model and prompt "
                   "version wrote it (same, default), or whatever the store holds (any)")  # fmt: skip


def _add_precision_args(p: argparse.ArgumentParser, export: bool = False) -> None:
    from mghft.precision import MAX_ABS_DP, MIN_LABELS_KEPT, PRECISION_CHOICES, PRECISIONS

    g = p.add_argument_group("precision (see docs/serve.md)")
    if export:
        g.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                       help="fp32, or int8 (ONNX: weight matrix products quantised; its agreement with fp32 is "
                       "measured on the calibration images and stored in the file)")  # fmt: skip
    else:
        text = (f"{', '.join(PRECISIONS)} or auto: the fastest this CPU runs well whose agreement with fp32 passes "
                f"(>= {MIN_LABELS_KEPT:.1%} labels kept, max |dp| <= {MAX_ABS_DP:g}); a precision the CPU lacks "
                "instructions for is refused (default: fp32)")  # fmt: skip
        g.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32", help=text.replace("%", "%%"))
    g.add_argument("--agreement-set", type=local_path, action="append", default=[], metavar="PATH",
                   help="image files or folders to measure agreement with fp32 on (default: the checkpoint's "
                   "validation split, from the train.yaml beside it; repeatable)")  # fmt: skip


def register(sub: Any) -> None:
    """Add the ``predict``, ``serve`` and ``export`` commands."""
    p = sub.add_parser(
        "predict",
        help="label stickers (files and folders) with a trained model; write CSV or JSONL",
        description="Predict the emotion of every image under PATHS (folders searched recursively for image "
        "files). Unreadable files are reported by name and skipped.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="local image files or folders (--engine ray: also manifests, object-store URIs)")  # fmt: skip
    p.add_argument("--model", required=True, help="checkpoint folder, exported .onnx file or Hugging Face Hub repo id")
    p.add_argument("--out", type=local_path,
                   help="output file: .csv or .jsonl (its extension picks the format); with --engine ray a folder "
                   "(a Delta Lake table); optional with a sticker pack")  # fmt: skip
    p.add_argument("--format", choices=("csv", "jsonl"), help="output format, whatever --out's extension")
    p.add_argument("--batch-size", type=COUNT, default=16, help="images per forward pass")
    p.add_argument("--workers", type=COUNT, metavar="N",
                   help="threads decoding images (default: 4, or the machine's cores if fewer)")  # fmt: skip
    p.add_argument("--max-pixels", type=COUNT, default=50_000_000, help="skip images larger than this (w x h)")
    p.add_argument("--explain", nargs="?", const="", default=None, metavar="DIR",
                   help="write labelled heatmap overlays (PNG: the sticker in grey, the patches the model picked "
                   "in colour, the prediction below) into DIR (default: <out>_explain/)")  # fmt: skip
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("probabilities and emoji tags")
    g.add_argument(
        "--uncalibrated",
        action="store_true",
        help="probabilities without the checkpoint's temperature (default: calibrated when it has one)",
    )
    g.add_argument(
        "--emoji-map",
        type=Path,
        metavar="FILE",
        help="JSON {label: emoji} overriding the checkpoint's emoji for each emotion",
    )
    g.add_argument("--top-k", type=COUNT, metavar="K",
                   help="several emotions per sticker: the K most probable, each with its probability, in an "
                   "'emotions' column (with --min-probability: both must hold)")  # fmt: skip
    g.add_argument("--min-probability", type=number(float, above=0, maximum=1), metavar="P",
                   help="several emotions per sticker: those whose (calibrated) probability is at least P")  # fmt: skip
    g.add_argument(
        "--whatsapp-pack",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a WhatsApp sticker-pack folder: predict its stickers and write their 'emojis' (at most 3) "
        "into its contents.json, other fields kept (repeatable)",
    )
    g.add_argument("--telegram-list", type=Path, action="append", default=[], metavar="FILE",
                   help="a JSON list of Telegram InputSticker objects: predict the local sticker files and write "
                   "their 'emoji_list', other fields kept (repeatable)")  # fmt: skip
    _add_interpreter_args(p)
    _add_precision_args(p)
    add_engine_args(p, actors_help="model replicas, each loading the model once")
    p.set_defaults(handler=_cmd_predict)

    s = sub.add_parser(
        "serve",
        help="run the HTTP prediction service and its web page",
        description="Serve POST /v1/predict, /healthz, /readyz, the OpenAPI description (/docs) and a web page (/).",
    )
    s.add_argument("--model", required=True, help="checkpoint folder, exported .onnx file or Hugging Face Hub repo id")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=port_number, default=8000, help="TCP port to listen on")
    s.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    s.add_argument("--batch-size", type=COUNT, default=8, help="most images per forward pass")
    s.add_argument(
        "--batch-wait-ms", type=NON_NEGATIVE, default=5.0, help="wait for a batch to fill, milliseconds (0: no wait)"
    )
    s.add_argument("--queue-size", type=COUNT, default=64, help="most images waiting; beyond: 503")
    s.add_argument("--max-images", type=COUNT, default=32, help="most images per request")
    s.add_argument("--max-file-mb", type=POSITIVE, default=8.0, help="largest image file, MiB")
    s.add_argument("--max-request-mb", type=POSITIVE, default=40.0, help="largest request body, MiB")
    s.add_argument("--max-pixels", type=COUNT, default=4096 * 4096, help="largest image, width x height")
    s.add_argument("--max-connections", type=COUNT, default=128,
                   help="concurrent connections; at the limit a new one closes the one waiting longest for its "
                   "headers, else 503")  # fmt: skip
    s.add_argument("--max-connections-per-client", type=COUNT_OR_ZERO, default=16,
                   help="connections one client address may hold (0: no limit; behind a reverse proxy every "
                   "client has the proxy's address)")  # fmt: skip
    s.add_argument(
        "--header-timeout", type=POSITIVE, default=10.0, help="seconds to send a request's headers; then 408"
    )
    s.add_argument("--body-timeout", type=POSITIVE, default=60.0, help="seconds to send a request's body; then 408")
    s.add_argument("--max-view-chars", type=COUNT, default=4000, help="longest view text, characters; beyond: 422")
    s.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name the service answers (repeatable; '*' for any); default: localhost, "
                   "127.0.0.1, ::1 and the --host address, against DNS rebinding")  # fmt: skip
    s.add_argument("--api-key-file", type=local_path,
                   help="require this key (the file's content) in an X-API-Key header or as a Bearer token "
                   "(Authorization: Bearer KEY); default: $MGHFT_API_KEY, else no key")  # fmt: skip
    _add_interpreter_args(s)
    _add_precision_args(s)
    s.set_defaults(handler=_cmd_serve)

    e = sub.add_parser(
        "export",
        help="export a checkpoint to one ONNX or TorchScript file and check it against PyTorch",
        description="Write the vision and fusion graph (text encoder excluded: it takes encoded view features) "
        "with the class names and preprocessing inside the file, then compare its outputs with the PyTorch model.",
    )
    e.add_argument("model", nargs="?", help="checkpoint folder or Hugging Face Hub repo id (or give --model)")
    e.add_argument("--model", dest="model_option", metavar="MODEL", help="the same, as in the other commands")
    e.add_argument(
        "--out", type=local_path, required=True, help="model.onnx (ONNX) or model.pt / model.ts (TorchScript)"
    )
    e.add_argument("--format", choices=("onnx", "torchscript"), help="export format, whatever --out's extension")
    e.add_argument("--opset", type=number(int, minimum=9, maximum=20), default=17, help="ONNX opset (9 to 20)")
    e.add_argument("--tolerance", type=POSITIVE, default=1e-3, help="largest allowed |difference| of probabilities")
    _add_precision_args(e, export=True)
    e.set_defaults(handler=_cmd_export)


# ----------------------------------------------------------------------------------------------------------------
# predict


def find_images(paths: list[Path]) -> Any:
    """Files to predict (``mghft.data.walk.find_images``, kept as ``str``): given files as they are, folders searched
    recursively for image extensions; FIFOs, devices and broken links skipped and named."""
    from mghft.data.walk import find_images as walk

    return walk(paths, as_str=True)


def _build_interpreter(args: argparse.Namespace) -> Any:
    if not args.interpreter and not args.store:
        return None
    from mghft.interpret import DescriptionStore, Interpreter, build_backend

    # views only looked up (no --interpreter): the store is read where it is, never written
    store = DescriptionStore(args.store, read_only=not args.interpreter) if args.store else None
    if not args.interpreter:
        from mghft.serve.predictor import StoreOnlyInterpreter

        return StoreOnlyInterpreter(store)
    try:
        backend = build_backend(args.interpreter, base_urls=args.base_url, api_key_env=args.api_key_env)
    except ValueError as err:  # an unknown provider, a missing key or URL: the flag is at fault
        if store is not None:
            store.close()
        raise UsageError(f"--interpreter {err}", hint=getattr(err, "hint", None)) from None
    return Interpreter(backend, store, reuse=args.reuse)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
"""First characters that make a spreadsheet read a cell as a formula (fullwidth forms included)."""


def csv_cell(value: Any) -> Any:
    """``value`` safe for a spreadsheet: a string that a spreadsheet would read as a formula (``=HYPERLINK(...)``
    as a file name, a view text from a model server) gets a leading ``'``; numbers are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


OVERLAY_STEM_CHARS = 80
"""Longest part of an input's name kept in its overlay's file name."""


def overlay_path(folder: Path, index: int, name: str) -> Path:
    """Where the overlay of input number ``index`` named ``name`` goes: always a file directly in ``folder``.

    The name keeps only letters, digits, ``.``, ``_`` and ``-`` of the input's stem (at most
    :data:`OVERLAY_STEM_CHARS`), behind the index, so no input name can reach another folder, make a hidden file or
    exceed a file system's name length.

    Raises:
        ValueError: the result would not lie in ``folder`` (cannot happen by construction; checked anyway).
    """
    import re

    stem = re.sub(r"[^\w.-]+", "_", Path(name.replace("\\", "/")).stem, flags=re.ASCII).strip("._")
    target = folder / f"{index:06d}_{stem[:OVERLAY_STEM_CHARS] or 'image'}.png"
    if target.parent.resolve() != folder.resolve():
        raise ValueError(f"overlay name {target.name!r} leaves {folder}")
    return target


def _save_overlay(image: Any, target: Path) -> None:
    """Write the PNG next to ``target`` and move it into place: an existing link there is replaced, not followed."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".overlay-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _row(pred: Any, classes: list[str], overlay: str, emotions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from mghft.views import VIEWS

    row: dict[str, Any] = {"path": pred.name, "label": pred.label, "confidence": round(pred.confidence, 6)}
    row["emoji"] = " ".join(pred.emoji)
    if emotions is not None:  # "anger:0.61 happiness:0.30": every chosen emotion with its probability
        row["emotions"] = " ".join(f"{e['label']}:{e['probability']:.6g}" for e in emotions)
    for c in classes:
        row[f"p_{c}"] = round(pred.probabilities[c], 6)
    row["view_source"] = pred.view_source
    row["calibration"], row["temperature"] = pred.calibration, pred.temperature
    for v in VIEWS:
        row[f"view_{v}"] = pred.views[v] or ""
    if pred.explanation is not None:
        for v in VIEWS:
            row[f"weight_{v}"] = round(pred.explanation.view_weights[v], 6)
    row["overlay"] = overlay
    return row


def _cmd_predict(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from mghft.cli_args import output_format
    from mghft.data.images import ImageLoadError
    from mghft.emoji import read_emoji_map, telegram_stickers, unique_files, whatsapp_stickers
    from mghft.errors import MghftError
    from mghft.resources import cap_workers
    from mghft.selection import check_selection, selecting
    from mghft.serve.overlay import labelled_overlay
    from mghft.serve.predictor import load_predictor

    check_selection(args.top_k, args.min_probability)
    if args.engine == "ray":
        from mghft.scale.cli import predict_with_ray

        return predict_with_ray(args)
    try:
        args.paths = [local_path(str(p)) for p in args.paths]
    except argparse.ArgumentTypeError as err:  # a URL: only --engine ray reads object stores
        raise UsageError(f"PATH: {err}", hint="--engine ray reads object-store URIs") from None
    packs = [whatsapp_stickers(d) for d in args.whatsapp_pack] + [telegram_stickers(f) for f in args.telegram_list]
    if args.out is None and not packs:
        raise UsageError(
            "give --out (a .csv or .jsonl file) or a sticker pack to fill (--whatsapp-pack, --telegram-list)"
        )
    if not args.paths and not packs:
        raise UsageError("give image files or folders (PATH), or a sticker pack to fill")
    out = args.out
    fmt = output_format(out, args.format, PREDICT_FORMATS) if out is not None else None
    found = find_images(args.paths)
    files, ignored = found.files, found.ignored
    for s in found.skipped:  # never opened: a FIFO would block, /dev/zero never ends
        print(f"skipped {s}", file=sys.stderr)
    if packs:
        listed = set(files)
        files += [str(f) for f in unique_files(p[2] for p in packs) if str(f) not in listed]
    if not files:
        print(f"error: no image files under {' '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    check_device(args.device)
    interpreter = _build_interpreter(args)
    predictor = load_predictor(
        args.model,
        text_encoder=interpreter is not None,  # bare images only: no view text will ever be encoded
        device=args.device,
        max_pixels=args.max_pixels,
        batch_size=args.batch_size,
        calibrated=not args.uncalibrated,
        emoji=read_emoji_map(args.emoji_map) if args.emoji_map else None,
        precision=args.precision,
        agreement_set=args.agreement_set or None,
    )
    check_selection(args.top_k, args.min_probability, len(predictor.class_names))
    if packs and not predictor.emoji:
        print("error: this model's classes have no emoji; give --emoji-map FILE with one per class", file=sys.stderr)
        return 2
    predictor.interpreter = interpreter
    if interpreter is None and predictor.model.cfg.arch == "text_only":
        print(
            f"warning: {args.model} is a text_only model: it classifies view texts only, so without views every "
            "image gets the same prediction (give --interpreter offline or a --store with descriptions)",
            file=sys.stderr,
        )
    explain_dir: Path | None = None
    if args.explain is not None:
        if not args.explain and out is None:
            print("error: --explain needs a folder when there is no --out", file=sys.stderr)
            return 2
        explain_dir = Path(args.explain) if args.explain else out.with_name(out.stem + "_explain")
        explain_dir.mkdir(parents=True, exist_ok=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)

    def load(path: str) -> Any:
        try:
            return predictor.load(Path(path), keep_image=explain_dir is not None)
        except ImageLoadError as e:
            return e
        except OSError as e:  # e.g. permission denied
            return ImageLoadError(str(path), str(e))

    done, skipped = 0, len(found.skipped)
    tags: dict[Path, list[str]] = {}
    selection = None
    if selecting(args.top_k, args.min_probability):
        selection = {"top_k": args.top_k, "min_probability": args.min_probability}
    writer = _Writer(out, fmt, predictor.class_names, explain=True, selection=selection) if out is not None else None
    bar = tqdm(total=len(files), unit="img", disable=args.no_progress, file=sys.stderr)
    try:
        workers = cap_workers(4 if args.workers is None else args.workers, "--workers", asked=args.workers is not None)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for start in range(0, len(files), args.batch_size):
                chunk = files[start : start + args.batch_size]
                good, texts, sources = [], [], []
                for loaded in pool.map(load, chunk):
                    if isinstance(loaded, Exception):
                        skipped += 1
                        tqdm.write(f"skipped {loaded}", file=sys.stderr)
                        continue
                    try:
                        views, source = predictor.resolve_views(loaded)
                    except Exception as e:  # the interpreter failed: predict without views, say so
                        if not isinstance(e, LookupError):
                            tqdm.write(f"{loaded.name}: no views ({e})", file=sys.stderr)
                        views, source = [None] * 4, "absent"
                    good.append(loaded)
                    texts.append(views)
                    sources.append(source)
                preds = predictor.run(good, texts, sources, explain=True)
                for k, (loaded, pred) in enumerate(zip(good, preds, strict=True)):
                    overlay = ""
                    if explain_dir is not None and pred.explanation is not None and loaded.image is not None:
                        target = overlay_path(explain_dir, start + k, pred.name)
                        caption = f"{pred.label} {pred.confidence:.0%}  ({Path(pred.name).name})"
                        _save_overlay(labelled_overlay(loaded.image, pred.explanation, caption), target)
                        overlay = str(target)
                    if writer is not None:
                        writer.write(pred, overlay)
                    if packs:  # only a pack needs the tags afterwards; nothing per image is kept otherwise
                        tags[Path(pred.name)] = pred.emoji
                    done += 1
                bar.update(len(chunk))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if interpreter is not None and hasattr(interpreter, "close"):
            interpreter.close()
    meta = {
        "model": args.model,
        "predicted": done,
        "skipped": skipped,
        "ignored_non_image_files": ignored,
        "classes": predictor.class_names,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "handler"},
    }
    meta["args"]["paths"] = [str(p) for p in args.paths]
    meta["calibration"] = predictor.calibration.summary()  # per input condition; each row says which it got
    meta["calibration_note"] = predictor.calibration.note or None
    meta.update(predictor.precision_info())
    meta["packs"] = _fill_packs(args, tags)
    if out is not None:
        out.with_name(out.name + ".meta.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    print(
        f"{done} predicted, {skipped} skipped, {ignored} non-image files ignored -> {out or 'packs'}", file=sys.stderr
    )
    if skipped and not done:
        raise MghftError(f"none of the {skipped} image file(s) could be read (each is named above)")
    _refuse_invalid_packs(meta["packs"])
    return 0


def _fill_packs(args: argparse.Namespace, tags: dict[Path, list[str]]) -> list[dict[str, Any]]:
    """Write the predicted emoji into each sticker pack given (stickers that could not be read keep theirs), then
    check each pack as its platform would (``problems``: each sticker it would refuse, with the rule)."""
    from mghft.emoji import fill_telegram, fill_whatsapp, pack_problems

    done = []
    for kind, paths, fill in (
        ("whatsapp", args.whatsapp_pack, fill_whatsapp),
        ("telegram", args.telegram_list, fill_telegram),
    ):
        for p in paths:
            path, filled = fill(p, tags)
            print(f"{kind}: emoji for {filled} stickers written into {path}", file=sys.stderr)
            done.append({"kind": kind, "file": str(path), "filled": filled, "problems": pack_problems(kind, p)})
    return done


def _refuse_invalid_packs(packs: list[dict[str, Any]]) -> None:
    """Stop (after the packs were written) when a pack would still be refused by its platform.

    Raises:
        InvalidPackError: naming each sticker and the rule it breaks.
    """
    from mghft.emoji import InvalidPackError

    problems = [p for pack in packs for p in pack["problems"]]
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise InvalidPackError(
            f"{len(problems)} sticker(s) would be refused by their platform (the tags found were written):\n  {shown}",
            hint="make the stickers named readable and run again, or give them emoji by hand",
        )


class _Writer:
    """Rows to CSV (header from the first row) or JSONL, flushed per batch so a crash keeps what was done."""

    def __init__(
        self, path: Path, fmt: str, classes: list[str], explain: bool, selection: dict[str, Any] | None = None
    ) -> None:
        import csv

        self.fmt = fmt
        self.classes = classes
        self.selection = selection  # {"top_k", "min_probability"} when several emotions per sticker are asked for
        self.fh = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()
        self.csv = None
        if fmt == "csv":
            from mghft.views import VIEWS

            cols = ["path", "label", "confidence", "emoji", *(["emotions"] if selection else [])]
            cols += [*(f"p_{c}" for c in classes), "view_source"]
            cols += ["calibration", "temperature"]
            cols += [f"view_{v}" for v in VIEWS] + [f"weight_{v}" for v in VIEWS] + ["overlay"]
            self.csv = csv.DictWriter(self.fh, fieldnames=cols)
            self.csv.writeheader()

    def write(self, pred: Any, overlay: str) -> None:
        from mghft.selection import select_emotions

        emotions = select_emotions(pred.probabilities, **self.selection) if self.selection else None
        if self.csv is not None:
            self.csv.writerow({k: csv_cell(v) for k, v in _row(pred, self.classes, overlay, emotions).items()})
        else:
            d = pred.to_dict(explain=True)
            if emotions is not None:
                d["emotions"] = emotions
            d["path"] = d.pop("name")
            if overlay:
                d["overlay"] = overlay
            self.fh.write(json.dumps(d, ensure_ascii=False) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


# ----------------------------------------------------------------------------------------------------------------
# serve


def _serve_settings(args: argparse.Namespace, key: str | None) -> Any:
    """The service's settings from the flags; a combination that cannot work names the flags to change."""
    from mghft.errors import UsageError
    from mghft.serve.app import ServeSettings
    from mghft.serve.guard import LOOPBACK_HOSTS, allowed_host_names

    positive = ("batch_size", "queue_size", "max_images", "max_pixels", "max_connections", "max_view_chars")
    for name in positive:
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("max_file_mb", "max_request_mb", "header_timeout", "body_timeout"):
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.max_connections_per_client < 0:
        raise UsageError("--max-connections-per-client must be at least 0 (0: no limit)")
    if args.max_images > args.queue_size:
        raise UsageError(
            f"--max-images ({args.max_images}) exceeds --queue-size ({args.queue_size}): a request with the most "
            "images allowed could never fit in the queue",
            hint=f"raise --queue-size to at least {args.max_images}, or lower --max-images to {args.queue_size}",
        )
    return ServeSettings(
        max_file_bytes=int(args.max_file_mb * (1 << 20)),
        max_request_bytes=int(args.max_request_mb * (1 << 20)),
        max_pixels=args.max_pixels,
        max_images=args.max_images,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        queue_size=args.queue_size,
        api_key=key,
        max_view_chars=args.max_view_chars,
        allowed_hosts=allowed_host_names(args.allowed_host or LOOPBACK_HOSTS, args.host),
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_connections=args.max_connections,
        max_connections_per_client=args.max_connections_per_client,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from mghft.serve.app import API_KEY_ENV, create_app, uvicorn_config
    from mghft.serve.guard import bind_socket
    from mghft.serve.predictor import load_predictor

    check_device(args.device)
    try:
        key = args.api_key_file.read_text(encoding="utf-8").strip() if args.api_key_file else None
    except OSError as e:
        print(f"error: cannot read the API key file {args.api_key_file}: {e.strerror or e}", file=sys.stderr)
        return 2
    if args.api_key_file and not key:  # serving without the key asked for would leave the service open
        print(f"error: the API key file {args.api_key_file} is empty", file=sys.stderr)
        return 2
    key = key or os.environ.get(API_KEY_ENV) or None
    settings = _serve_settings(args, key)
    _log_to_stderr()
    sock = bind_socket(args.host, args.port)  # a taken port is an error before the model loads
    try:
        predictor = load_predictor(
            args.model,
            device=args.device,
            max_pixels=args.max_pixels,
            precision=args.precision,
            agreement_set=args.agreement_set or None,
        )
        predictor.interpreter = _build_interpreter(args)
        app = create_app(predictor, settings)
        server = _server_class()(uvicorn_config(app, args.host, args.port, args.max_connections))
        server.announce = _announcement(predictor.name, sock, settings.allowed_hosts)
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _log_to_stderr() -> None:
    """The service's log (refused interpreter answers, internal errors with their reference) on stderr."""
    import logging

    logger = logging.getLogger("mghft.serve")
    if not logger.handlers:
        from mghft.console import BarSafeHandler

        handler = BarSafeHandler()  # above `mghft predict`'s progress bar
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _announcement(name: str, sock: Any, allowed: tuple[str, ...]) -> str:
    """The line printed once the socket listens: the page's and the API docs' URLs on the bound port."""
    import ipaddress

    host, port = sock.getsockname()[:2]
    try:
        ip = ipaddress.ip_address(host)
        shown = "127.0.0.1" if ip.is_unspecified and ip.version == 4 else "[::1]" if ip.is_unspecified else host
        shown = f"[{shown}]" if ip.version == 6 and not shown.startswith("[") else shown
    except ValueError:
        shown = host
    where = f"http://{shown}:{port}"
    line = f"serving {name} on {where} (page: {where}/, API: {where}/docs)"
    if "*" not in allowed:
        line += f"; answering Host names {', '.join(allowed)} (add others with --allowed-host)"
    return line


def _server_class() -> Any:
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        """uvicorn's server that prints :attr:`announce` once the socket listens and the model is warm."""

        announce = ""

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.announce:
                print(self.announce, file=sys.stderr, flush=True)

    return AnnouncingServer


# ----------------------------------------------------------------------------------------------------------------
# export


def _cmd_export(args: argparse.Namespace) -> int:
    from mghft.cli_args import output_format
    from mghft.errors import MghftError
    from mghft.export import ExportedModel, compare_outputs, example_inputs, export_model
    from mghft.models.factory import load_model

    if bool(args.model) == bool(args.model_option):
        raise UsageError("export: give the checkpoint once, as MODEL or --model", hint="mghft export --help")
    fmt = output_format(args.out, args.format, EXPORT_FORMATS)
    source = args.model or args.model_option
    if fmt != "onnx" and (args.precision != "fp32" or args.agreement_set):
        raise UsageError("--precision int8 and --agreement-set apply to ONNX exports", hint="--out model.onnx")
    model = load_model(source, text_encoder=False).eval()
    agreement = None
    if fmt == "onnx":
        from mghft.serve.precision_setup import export_with_precision

        agreement = export_with_precision(
            model,
            args.out,
            args.precision,
            checkpoint=source,
            agreement_set=args.agreement_set or None,
            opset=args.opset,
        )
        path = args.out
    else:
        path = export_model(model, args.out, format=fmt, opset=args.opset)
    size = path.stat().st_size / 1e6
    if agreement is not None:
        print(f"agreement: {agreement.line()}")
    if args.precision == "int8":
        print(f"wrote {path} ({fmt}, int8, {size:.1f} MB)")
        if agreement is not None and not agreement.passed:
            raise MghftError(
                f"export: {path} is written but fails the agreement check, so --precision auto will not run it",
                hint="run it with --precision int8 if the differences are acceptable, else use the fp32 export",
            )
        return 0
    report = compare_outputs(model, ExportedModel(path), example_inputs(model, batch=3, seed=1))
    print(f"wrote {path} ({fmt}, {size:.1f} MB); compared with PyTorch on 3 example inputs:")
    for line in export_verdict(report, args.tolerance):
        print(line)
    ok = report["probabilities"] <= args.tolerance
    if not ok:
        raise MghftError(
            f"export: probabilities differ from PyTorch by {report['probabilities']:.2g}, more than the tolerance "
            f"{args.tolerance:g}; {path} is written but does not reproduce the model",
            hint="try --format torchscript or another --opset",
        )
    return 0


def export_verdict(report: dict[str, float], tolerance: float) -> list[str]:
    """The lines ``mghft export`` prints: each output's agreement, then PASS/FAIL against ``tolerance``."""
    lines = []
    for name, value in report.items():
        if name.startswith("patches"):
            lines.append(f"  {name:18s} equal picks: {value:.1%}")
        else:
            lines.append(f"  {name:18s} max |diff|: {value:.2g}")
    worst = report["probabilities"]
    verdict = "PASS" if worst <= tolerance else "FAIL"
    picks = [v for k, v in report.items() if k.startswith("patches")]
    note = ""
    if picks and min(picks) < 1:
        note = "; patch picks that differ are near-ties in the attention scores (the check is on probabilities)"
    lines.append(f"{verdict}: probabilities within {worst:.2g} of PyTorch, tolerance {tolerance:g}{note}")
    return lines
