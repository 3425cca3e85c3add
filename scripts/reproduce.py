#!/usr/bin/env python
"""The paper's two tables from nothing: SER30K + a model server -> descriptions -> every config x seed -> tables.

    python scripts/reproduce.py --ser30k data/SER30K --base-url http://localhost:8000/v1 \\
        --backend vllm:Qwen/Qwen2.5-VL-7B-Instruct --dry-run        # what would run, requests, GPU-hours, disk
    python scripts/reproduce.py --ser30k data/SER30K --base-url http://localhost:8000/v1 \\
        --backend vllm:Qwen/Qwen2.5-VL-7B-Instruct --nproc-per-node 4

Every step is resumable: run the same command again after an interruption. Outputs in --out (default
runs/reproduce): descriptions.sqlite, sweep/<config>/seed-<s>/, tables/baselines/ and tables/ablations/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import mghft  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    from mghft.errors import MghftError
    from mghft.experiments.reproduce import make_plan, run_plan

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ser30k", type=Path, required=True, help="the SER30K folder (Images/, Annotations/)")
    p.add_argument("--base-url", required=True, help="the model server's URL, ending in /v1")
    p.add_argument("--backend", required=True, help="<provider>:<model> for the descriptions, e.g. vllm:Qwen/...")
    p.add_argument("--out", type=Path, default=Path("runs/reproduce"))
    p.add_argument("--seeds", type=int, default=3, help="seeds per config (default 3)")
    p.add_argument("--nproc-per-node", type=int, default=1, help="GPUs: each run is distributed with torchrun")
    p.add_argument("--concurrency", type=int, default=32, help="description requests in flight")
    p.add_argument("--zeroshot-backend", help="also run a zero-shot LLM baseline on test, e.g. openai:gpt-4o")
    p.add_argument("--zeroshot-base-url", help="its server (default --base-url)")
    p.add_argument("--public-annotations", type=Path, help="the public code's description files: adds public_code")
    p.add_argument("--configs", type=Path, default=ROOT / "configs" / "ser30k")
    p.add_argument("--benchmarks", type=Path, default=ROOT / "benchmarks" / "results.jsonl")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of every training config")  # fmt: skip
    p.add_argument("--images-per-second", type=float,
                   help="training throughput per GPU for the estimate (default: benchmarks/results.jsonl)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print the commands and the estimate; run nothing")
    args = p.parse_args(argv)
    try:
        plan = make_plan(
            args.ser30k,
            base_url=args.base_url,
            backend=args.backend,
            out=args.out,
            seeds=args.seeds,
            nproc=args.nproc_per_node,
            concurrency=args.concurrency,
            zeroshot_backend=args.zeroshot_backend,
            zeroshot_base_url=args.zeroshot_base_url,
            public_annotations=args.public_annotations,
            configs_dir=args.configs,
            benchmarks=args.benchmarks,
            overrides=args.overrides,
            images_per_second=args.images_per_second,
        )
    except MghftError as err:
        print(f"error: {err}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return err.exit_code
    if args.dry_run:
        print("\n".join(plan.lines()))
        return 0
    return run_plan(plan)


if __name__ == "__main__":
    raise SystemExit(main())
