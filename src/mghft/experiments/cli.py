"""``mghft sweep`` and ``mghft compare``: argparse only; the work happens in the handlers."""

from __future__ import annotations

import argparse
from pathlib import Path

from mghft.cli_args import COUNT_OR_ZERO


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train every config with every seed, skipping finished runs and resuming interrupted ones",
        description="Train CONFIG x seed into OUTPUT/<config name>/seed-<s>/. A finished run (results.json) is "
        "skipped, an interrupted one resumed as `mghft train --resume` does; a failed run is reported at the end "
        "and the sweep goes on. Under torchrun every run is distributed: "
        "torchrun --nproc-per-node N -m mghft sweep CONFIG... . Exit code 1 when a run failed.",
    )
    p.add_argument("configs", nargs="+", type=Path, metavar="CONFIG", help="training configs (YAML)")
    p.add_argument(
        "--seeds",
        default="3",
        metavar="N|S1,S2,...",
        help="a count (3: seeds 0, 1, 2) or a comma-separated list; each replaces the config's seed (default 3)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of every config, e.g. --set data.root=/data/SER30K (repeatable; output and seed "
        "come from --output and --seeds; every run's config is checked before the first runs)",
    )
    p.add_argument("--output", type=Path, default=Path("runs/sweep"), help="sweep folder (default runs/sweep)")
    p.add_argument("--dry-run", action="store_true", help="print what would be skipped, resumed or trained")
    p.set_defaults(handler=_sweep)

    c = sub.add_parser(
        "compare",
        help="one table of runs: mean ± std over seeds, bootstrap intervals, paired tests against a reference",
        description="Read run folders, sweep folders (every <config>/seed-<s>/ inside) and `mghft zeroshot` "
        "folders; write table.md, table.csv, table.png, per_class.md and side-by-side confusion matrices. Every "
        "system is compared with the reference on the same test items: the difference of seed means must be "
        "significant both over seeds (Welch's t-test) and over items or groups (paired bootstrap), with Holm's "
        "correction over every test in the table (docs/tables.md); runs whose test items differ are refused. "
        "NAME=FOLDER names a folder's runs.",
    )
    c.add_argument("folders", nargs="+", metavar="[NAME=]FOLDER", help="run, sweep or zero-shot folders")
    c.add_argument("--reference", help="the system the others are compared with (default: 'mghft' or the first)")
    c.add_argument("--out", type=Path, required=True, help="folder for the tables and plots")
    c.add_argument(
        "--bootstrap", type=COUNT_OR_ZERO, default=1000, help="bootstrap resamples (0: no intervals; default 1000)"
    )
    c.add_argument(
        "--unit",
        choices=("auto", "item", "group"),
        default="auto",
        help="what the bootstrap resamples besides the seeds: groups (SER30K topics, sticker packs) when the "
        "items carry them (auto), items, or groups",
    )
    c.add_argument(
        "--published",
        choices=("auto", "ser30k", "none"),
        default="auto",
        help="published numbers beside ours: SER30K's when the classes are SER30K's and every run's provenance "
        "names SER30K (auto)",
    )
    c.add_argument("--seed", type=COUNT_OR_ZERO, default=0, help="seed of the bootstrap resampling (0 is a seed)")
    c.set_defaults(handler=_compare)


def _sweep(args: argparse.Namespace) -> int:
    from mghft.experiments.sweep import parse_seeds, run_sweep

    report = run_sweep(args.configs, parse_seeds(args.seeds), args.output, args.overrides, dry_run=args.dry_run)
    return 1 if report.failed and not args.dry_run else 0


def _compare(args: argparse.Namespace) -> int:
    from mghft.experiments.compare import compare

    result = compare(
        args.folders,
        args.out,
        reference=args.reference,
        n_draws=args.bootstrap,
        unit=args.unit,
        published=args.published,
        seed=args.seed,
    )
    print(result.markdown)
    print(f"tables and plots in {args.out}")
    return 0
