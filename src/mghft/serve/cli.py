"""``mghft predict``, ``mghft serve`` and ``mghft export``: argparse only; the work happens in the handlers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _add_interpreter_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("views for bare images")
    g.add_argument("--interpreter", metavar="SPEC",
                   help="describe images without views on the fly: 'offline' or <provider>:<model> "
                   "(e.g. openai:gpt-4o, vllm:Qwen/Qwen2.5-VL-7B-Instruct); default: run without views")  # fmt: skip
    g.add_argument("--base-url", action="append", default=[], metavar="URL", help="interpreter server URL (/v1)")
    g.add_argument("--api-key-env", metavar="NAME", help="environment variable holding the interpreter's API key")
    g.add_argument("--store", type=Path,
                   help="description store (SQLite): views written by `mghft interpret` are read from it, "
                   "and new ones cached in it")  # fmt: skip


def register(sub: Any) -> None:
    """Add the ``predict``, ``serve`` and ``export`` commands."""
    p = sub.add_parser(
        "predict",
        help="label stickers (files and folders) with a trained model; write CSV or JSONL",
        description="Predict the emotion of every image under PATHS (folders searched recursively for image "
        "files). Unreadable files are reported by name and skipped.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    p.add_argument("--model", required=True, help="checkpoint folder or Hugging Face Hub repo id")
    p.add_argument("--out", type=Path, required=True, help="output file: .csv or .jsonl")
    p.add_argument("--format", choices=("csv", "jsonl"), help="output format (default: from the --out suffix)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--workers", type=int, default=4, help="threads decoding images")
    p.add_argument("--max-pixels", type=int, default=50_000_000, help="skip images larger than this (w x h)")
    p.add_argument("--explain", nargs="?", const="", default=None, metavar="DIR",
                   help="write heatmap overlays (PNG) into DIR (default: <out>_explain/)")  # fmt: skip
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_interpreter_args(p)
    p.set_defaults(handler=_cmd_predict)

    s = sub.add_parser(
        "serve",
        help="run the HTTP prediction service and its web page",
        description="Serve POST /v1/predict, /healthz, /readyz, the OpenAPI description (/docs) and a web page (/).",
    )
    s.add_argument("--model", required=True, help="checkpoint folder or Hugging Face Hub repo id")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    s.add_argument("--batch-size", type=int, default=8, help="most images per forward pass")
    s.add_argument("--batch-wait-ms", type=float, default=5.0, help="wait for a batch to fill, milliseconds")
    s.add_argument("--queue-size", type=int, default=64, help="most images waiting; beyond: 503")
    s.add_argument("--max-images", type=int, default=32, help="most images per request")
    s.add_argument("--max-file-mb", type=float, default=8.0, help="largest image file, MiB")
    s.add_argument("--max-request-mb", type=float, default=40.0, help="largest request body, MiB")
    s.add_argument("--max-pixels", type=int, default=4096 * 4096, help="largest image, width x height")
    s.add_argument("--max-connections", type=int, default=128, help="concurrent connections; beyond: 503")
    s.add_argument("--api-key-file", type=Path,
                   help="require this key (file content) in X-API-Key; default: $MGHFT_API_KEY, else none")  # fmt: skip
    _add_interpreter_args(s)
    s.set_defaults(handler=_cmd_serve)

    e = sub.add_parser(
        "export",
        help="export a checkpoint to one ONNX or TorchScript file and check it against PyTorch",
        description="Write the vision and fusion graph (text encoder excluded: it takes encoded view features) "
        "with the class names and preprocessing inside the file, then compare its outputs with the PyTorch model.",
    )
    e.add_argument("model", help="checkpoint folder or Hugging Face Hub repo id")
    e.add_argument("--out", type=Path, required=True, help="model.onnx or model.pt")
    e.add_argument("--format", choices=("onnx", "torchscript"), help="default: from the suffix (.onnx = ONNX)")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset")
    e.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed |difference| of probabilities")
    e.set_defaults(handler=_cmd_export)


# ----------------------------------------------------------------------------------------------------------------
# predict


def find_images(paths: list[Path]) -> tuple[list[Path], int]:
    """Files to predict: given files as they are, folders searched recursively for image extensions.

    Returns the files (sorted within each folder) and how many other files the folders held (ignored).
    """
    from mghft.data.images import IMAGE_EXTENSIONS

    found: list[Path] = []
    ignored = 0
    for path in paths:
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if not f.is_file() or any(part.startswith(".") for part in f.relative_to(path).parts):
                    continue
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    found.append(f)
                else:
                    ignored += 1
        else:
            found.append(path)  # a missing or unreadable file is reported when it is loaded
    return found, ignored


def _build_interpreter(args: argparse.Namespace) -> Any:
    if not args.interpreter and not args.store:
        return None
    from mghft.interpret import DescriptionStore, Interpreter, build_backend

    store = DescriptionStore(args.store) if args.store else None
    if not args.interpreter:
        return _StoreOnly(store)
    backend = build_backend(args.interpreter, base_urls=args.base_url, api_key_env=args.api_key_env)
    return Interpreter(backend, store)


class _StoreOnly:
    """An "interpreter" that only looks views up in a description store; images not in it run without views."""

    backend = None

    def __init__(self, store: Any) -> None:
        self.store = store

    def describe(self, data: bytes) -> Any:
        from mghft.interpret import image_sha256

        desc = self.store.get(image_sha256(data))
        if desc is None:
            raise LookupError("no description in the store")
        return desc

    def close(self) -> None:
        self.store.close()


def _row(pred: Any, classes: list[str], overlay: str) -> dict[str, Any]:
    from mghft.views import VIEWS

    row: dict[str, Any] = {"path": pred.name, "label": pred.label, "confidence": round(pred.confidence, 6)}
    for c in classes:
        row[f"p_{c}"] = round(pred.probabilities[c], 6)
    row["view_source"] = pred.view_source
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

    from mghft._malloc import return_large_frees
    from mghft.data.images import ImageLoadError
    from mghft.serve.predictor import heatmap_overlay, load_predictor

    return_large_frees()  # freed batch buffers go back to the system: flat resident size over many images
    fmt = args.format or ("csv" if args.out.suffix.lower() == ".csv" else "jsonl" if args.out.suffix else None)
    if fmt is None:
        print("error: give --format or an --out file ending in .csv or .jsonl", file=sys.stderr)
        return 2
    files, ignored = find_images(args.paths)
    if not files:
        print(f"error: no image files under {' '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    interpreter = _build_interpreter(args)
    predictor = load_predictor(args.model, device=args.device, max_pixels=args.max_pixels, batch_size=args.batch_size)
    predictor.interpreter = interpreter
    explain_dir: Path | None = None
    if args.explain is not None:
        explain_dir = Path(args.explain) if args.explain else args.out.with_name(args.out.stem + "_explain")
        explain_dir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def load(path: Path) -> Any:
        try:
            return predictor.load(path, keep_image=explain_dir is not None)
        except ImageLoadError as e:
            return e
        except OSError as e:  # e.g. permission denied
            return ImageLoadError(str(path), str(e))

    done = skipped = 0
    writer = _Writer(args.out, fmt, predictor.class_names, explain=True)
    bar = tqdm(total=len(files), unit="img", disable=args.no_progress, file=sys.stderr)
    try:
        with ThreadPoolExecutor(max(1, args.workers)) as pool:
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
                        target = explain_dir / f"{start + k:06d}_{Path(pred.name).stem}.png"
                        heatmap_overlay(loaded.image, pred.explanation).save(target)
                        overlay = str(target)
                    writer.write(pred, overlay)
                    done += 1
                bar.update(len(chunk))
    finally:
        bar.close()
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
    args.out.with_name(args.out.name + ".meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    print(f"{done} predicted, {skipped} skipped, {ignored} non-image files ignored -> {args.out}", file=sys.stderr)
    return 0 if done or not skipped else 1


class _Writer:
    """Rows to CSV (header from the first row) or JSONL, flushed per batch so a crash keeps what was done."""

    def __init__(self, path: Path, fmt: str, classes: list[str], explain: bool) -> None:
        import csv

        self.fmt = fmt
        self.classes = classes
        self.fh = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()
        self.csv = None
        if fmt == "csv":
            from mghft.views import VIEWS

            cols = ["path", "label", "confidence", *(f"p_{c}" for c in classes), "view_source"]
            cols += [f"view_{v}" for v in VIEWS] + [f"weight_{v}" for v in VIEWS] + ["overlay"]
            self.csv = csv.DictWriter(self.fh, fieldnames=cols)
            self.csv.writeheader()

    def write(self, pred: Any, overlay: str) -> None:
        if self.csv is not None:
            self.csv.writerow(_row(pred, self.classes, overlay))
        else:
            d = pred.to_dict(explain=True)
            d["path"] = d.pop("name")
            if overlay:
                d["overlay"] = overlay
            self.fh.write(json.dumps(d, ensure_ascii=False) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


# ----------------------------------------------------------------------------------------------------------------
# serve


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mghft.serve.app import API_KEY_ENV, ServeSettings, create_app, uvicorn_config
    from mghft.serve.predictor import load_predictor

    try:
        key = args.api_key_file.read_text(encoding="utf-8").strip() if args.api_key_file else None
    except OSError as e:
        print(f"error: cannot read the API key file {args.api_key_file}: {e.strerror or e}", file=sys.stderr)
        return 2
    if args.api_key_file and not key:  # serving without the key asked for would leave the service open
        print(f"error: the API key file {args.api_key_file} is empty", file=sys.stderr)
        return 2
    key = key or os.environ.get(API_KEY_ENV) or None
    settings = ServeSettings(
        max_file_bytes=int(args.max_file_mb * (1 << 20)),
        max_request_bytes=int(args.max_request_mb * (1 << 20)),
        max_pixels=args.max_pixels,
        max_images=args.max_images,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        queue_size=args.queue_size,
        api_key=key,
    )
    predictor = load_predictor(args.model, device=args.device, max_pixels=args.max_pixels)
    predictor.interpreter = _build_interpreter(args)
    app = create_app(predictor, settings)
    where = f"http://{args.host}:{args.port}"
    print(f"serving {predictor.name} on {where} (page: {where}/, API: {where}/docs)", file=sys.stderr)
    uvicorn.Server(uvicorn_config(app, args.host, args.port, args.max_connections)).run()
    return 0


# ----------------------------------------------------------------------------------------------------------------
# export


def _cmd_export(args: argparse.Namespace) -> int:
    from mghft.export import ExportedModel, compare_outputs, example_inputs, export_model
    from mghft.models.factory import load_model

    model = load_model(args.model, text_encoder=False).eval()
    path = export_model(model, args.out, format=args.format, opset=args.opset)
    report = compare_outputs(model, ExportedModel(path), example_inputs(model, batch=3, seed=1))
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB)")
    for name, value in report.items():
        what = "equal entries" if name.startswith("patches") else "max |diff|"
        print(f"  {name:18s} {what}: {value:.3g}")
    ok = report["probabilities"] <= args.tolerance
    if not ok:
        print(f"error: probabilities differ by more than {args.tolerance}", file=sys.stderr)
    return 0 if ok else 1
