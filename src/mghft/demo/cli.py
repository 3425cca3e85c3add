"""``mghft demo``: argparse only; the work happens in :func:`mghft.demo.pipeline.run_demo`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mghft.cli_args import COUNT, COUNT_OR_ZERO, local_path
from mghft.errors import UsageError


def register(sub: Any) -> None:
    """Add the ``demo`` command."""
    p = sub.add_parser(
        "demo",
        help="the main job end to end on real emoji stickers: no dataset, GPU or LLM needed (minutes on a CPU)",
        description="Build a small sticker dataset from open-licence emoji artwork (Twemoji for training, OpenMoji "
        "of other emoji for the held-out test), describe every image with the offline interpreter, train "
        "mghft_tiny on the CPU, evaluate against chance and the majority baseline, write the report and a gallery "
        "of predictions with heatmaps, and predict one new sticker. See docs/demo.md.",
    )
    p.add_argument("--out", type=local_path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    p.add_argument("--size", choices=("full", "small"), default="full",
                   help="full: the demo (a few minutes); small: a quick check that the pipeline runs")  # fmt: skip
    p.add_argument(
        "--seed", type=COUNT_OR_ZERO, default=0, help="seed of the dataset variants and of training (0 is a seed)"
    )
    p.add_argument("--epochs", type=COUNT, help="training epochs (default: the size's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from mghft.demo.pipeline import run_demo, summary_lines

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(
            f"--out {args.out} is a file; the demo writes a folder (dataset, descriptions, runs, gallery)",
            hint=f"give a new folder, e.g. --out {args.out.with_suffix('')}-demo",
        )
    try:
        r = run_demo(args.out, args.size, seed=args.seed, epochs=args.epochs, progress=not args.no_progress)
    except ImportError as e:
        print(f"error: {e}; install the demo dependencies: pip install 'mghft[demo,ocr,train,serve]'", file=sys.stderr)
        return 2
    ex = r.example
    print()
    print("\n".join(summary_lines(r)))
    print()
    print(f"a new sticker, {ex['path']} (a held-out {ex['true']} emoji), from its pixels alone:")
    print(f"  predicted {ex['label']} ({ex['confidence']:.2f}); heatmap: {r.paths['example_heatmap']}")
    for text in ex["views"].values():
        print(f"  {text}")
    print()
    print("where everything went:")
    width = max(len(k) for k in r.paths)
    for key, path in r.paths.items():
        print(f"  {key.replace('_', ' '):<{width}}  {path}")
    print(f"  {'summary':<{width}}  {r.out / 'README.md'}")
    t = r.timings
    print(
        f"\ntime: dataset {t['dataset']:.0f} s, descriptions {t['describe']:.0f} s, training {t['train']:.0f} s, "
        f"gallery {t['gallery']:.0f} s, example {t['predict']:.0f} s; total {t['total']:.0f} s"
    )
    store, model, exe = r.paths["descriptions"], r.paths["checkpoint"], _executable()
    print("\nnext:")
    print(f"  {exe} predict my_stickers/ --model {model} --interpreter offline --out predictions.csv")
    print(f"  {exe} serve --model {model} --interpreter offline --store {store}")
    print("  then open http://127.0.0.1:8000/ in a browser (Ctrl-C stops the server)")
    return 0


def _executable() -> str:
    """How to call ``mghft`` from here: the virtual environment's script when it is not on PATH."""
    import os
    import shutil

    script = Path(sys.executable).parent / "mghft"
    if not script.exists() or shutil.which("mghft") == str(script):
        return "mghft"
    try:
        return os.path.relpath(script)
    except ValueError:
        return str(script)
