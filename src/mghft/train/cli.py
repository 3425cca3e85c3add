"""``mghft train`` and ``mghft evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config (see configs/)",
        description="Train, select the checkpoint on val (or on test only when the config asks, with a warning), "
        "and evaluate it once on test. Multi-GPU/multi-node: torchrun --nproc-per-node N -m mghft train CONFIG.",
    )
    p.add_argument("config", type=Path, help="YAML training config")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set epochs=3 --set data.root=/data/SER30K (repeatable)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from <output>/last as if never stopped; changed model, data, views or schedule settings are "
        "refused, other changes recorded in <output>/resumes.jsonl (docs/training.md)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in the output folder (its checkpoints, logs, reports and split.json)",
    )
    p.set_defaults(handler=_train)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a dataset split and write a report",
        description="Metrics with bootstrap 95%% intervals, per-class table, confusion matrix (PNG + JSON), the "
        "same with every view absent, and for SER30K a comparison with the published numbers.",
    )
    p.add_argument("--model", required=True, help="checkpoint folder or Hugging Face Hub repo id")
    p.add_argument("--config", type=Path, help="training config whose data section to use")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: no intervals)")
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser(
        "calibrate",
        help="fit a checkpoint's temperature on val so its probabilities mean what they say",
        description="Temperature scaling (Guo et al., ICML 2017) fitted on the validation split of the run's data, "
        "stored in the checkpoint's config.json and applied by predict, serve and export; writes ECE, NLL and a "
        "reliability diagram before and after into <checkpoint>/calibration/. Training runs do this on their own.",
    )
    p.add_argument("model", type=Path, help="checkpoint folder (updated in place)")
    p.add_argument("--config", type=Path,
                   help="training config whose data section to use (default: the run's train.yaml beside the "
                   "checkpoint)")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")  # fmt: skip
    p.add_argument("--split", default="val", choices=("train", "val"), help="split to fit on (default: val)")
    p.add_argument("--emoji-map", type=Path, metavar="FILE",
                   help="JSON {label: emoji} to store with the checkpoint (default: the built-in map)")  # fmt: skip
    p.add_argument("--out", type=Path, help="report folder (default: <checkpoint>/calibration)")
    p.set_defaults(handler=_calibrate)


def _train(args: argparse.Namespace) -> int:
    from mghft.train.config import TrainConfig
    from mghft.train.loop import train

    cfg = TrainConfig.from_file(args.config, args.overrides)
    train(cfg, resume=args.resume, overwrite=args.overwrite)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from mghft.train.config import TrainConfig
    from mghft.train.evaluate import evaluate_checkpoint

    cfg = (
        TrainConfig.from_file(args.config, args.overrides)
        if args.config
        else TrainConfig.from_dict(
            __import__("mghft.train.config", fromlist=["apply_overrides"]).apply_overrides({}, args.overrides)
        )
    )
    res = evaluate_checkpoint(
        args.model, cfg, split=args.split, out=args.out, batch_size=args.batch_size, bootstrap=args.bootstrap
    )
    for line in res["warnings"]:
        print(f"warning: evaluation differs from training: {line}")
    print(
        f"{args.split}: accuracy {res['metrics']['accuracy']:.4f} (selected on {res['selected_on']}, views "
        f"{list(res['views'])})  report in {args.out}"
    )
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from mghft.emoji import read_emoji_map
    from mghft.errors import UsageError
    from mghft.train.calibrate import calibrate_checkpoint
    from mghft.train.config import TrainConfig

    config = args.config or args.model.parent / "train.yaml"
    if not config.is_file():
        raise UsageError(f"no training config: {config} does not exist", hint="pass --config with the run's train.yaml")
    cfg = TrainConfig.from_file(config, args.overrides)
    emoji = read_emoji_map(args.emoji_map) if args.emoji_map else None
    cal = calibrate_checkpoint(args.model, cfg, split=args.split, out=args.out, emoji=emoji)
    print(
        f"T = {cal.temperature:.4f} fitted on {cal.items} {args.split} items: ECE {100 * cal.ece_before:.2f}% -> "
        f"{100 * cal.ece_after:.2f}%, NLL {cal.nll_before:.4f} -> {cal.nll_after:.4f}; stored in {args.model}"
    )
    return 0
