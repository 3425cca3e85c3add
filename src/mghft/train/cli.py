"""``mghft train`` and ``mghft evaluate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mghft.cli_args import COUNT, COUNT_OR_ZERO, local_path
from mghft.errors import NotFoundError, UsageError

CONFIG_DOC = "docs/config.md"


def override(text: str) -> str:
    """An argparse type for ``--set KEY=VALUE``: the key and the ``=`` must be there (the value may be empty)."""
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE (e.g. --set epochs=3, --set data.root=data/SER30K; fields: {CONFIG_DOC})"
        )
    return text


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=override,
        metavar="KEY=VALUE",
        help=f"override a config field, e.g. --set epochs=3 --set data.root=data/SER30K (repeatable; values are "
        f"read as YAML; every field: {CONFIG_DOC})",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config (see configs/)",
        description="Train, select the checkpoint on val (or on test only when the config asks, with a warning), "
        "and evaluate it once on test. Multi-GPU/multi-node: torchrun --nproc-per-node N -m mghft train CONFIG. "
        f"Every config field is described in {CONFIG_DOC}.",
    )
    p.add_argument("config", type=local_path, help="YAML training config, e.g. configs/ser30k/mghft.yaml")
    _add_set(p)
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
        description="Metrics with bootstrap 95% intervals, per-class table, confusion matrix (PNG + JSON), the "
        "same with every view absent, and for SER30K a comparison with the published numbers. The data section "
        "comes from the run's own train.yaml beside the checkpoint unless --config is given.",
    )
    p.add_argument("--model", required=True, help="checkpoint folder (e.g. runs/ser30k/mghft/best) or Hub repo id")
    p.add_argument(
        "--config",
        type=local_path,
        help="training config whose data section to use (default: the run's train.yaml beside the checkpoint)",
    )
    _add_set(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="dataset split to evaluate")
    p.add_argument("--out", type=local_path, required=True, help="report folder")
    p.add_argument("--batch-size", type=COUNT, default=32, help="images per forward pass")
    p.add_argument("--bootstrap", type=COUNT_OR_ZERO, default=1000, help="bootstrap resamples (0: no intervals)")
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser(
        "calibrate",
        help="fit a checkpoint's temperatures on val so its probabilities mean what they say",
        description="Temperature scaling (Guo et al., ICML 2017) fitted on the validation split of the run's data, "
        "one temperature per input condition: with views (the val items that have one) and bare (every view "
        "absent). Stored in the checkpoint's config.json and applied by predict, serve and export by what each "
        "request has; a fit that is unreliable (at its limit, under 30 items, one class, every item right) is "
        "recorded but not applied. Writes ECE, NLL and reliability diagrams before and after into "
        "<checkpoint>/calibration/. Training runs do this on their own.",
    )
    p.add_argument("model", type=local_path, help="checkpoint folder (updated in place)")
    p.add_argument("--config", type=local_path,
                   help="training config whose data section to use (default: the run's train.yaml beside the "
                   "checkpoint)")  # fmt: skip
    _add_set(p)
    p.add_argument(
        "--split",
        default="val",
        choices=("train", "val", "test"),
        help="split to fit on: only val is accepted (train and test are refused, see docs/training.md)",
    )
    p.add_argument("--emoji-map", type=local_path, metavar="FILE",
                   help="JSON {label: emoji} to store with the checkpoint (default: the built-in map)")  # fmt: skip
    p.add_argument("--out", type=local_path, help="report folder (default: <checkpoint>/calibration)")
    p.set_defaults(handler=_calibrate)


def _config_file(path: Path, flag: str) -> Path:
    if not path.is_file():
        what = "is a folder, not a YAML file" if path.is_dir() else "does not exist"
        raise NotFoundError(
            f"{flag + ': ' if flag else ''}config file {path} {what}",
            hint="configs/ holds the shipped configs, e.g. configs/ser30k/mghft.yaml",
        )
    return path


def check_data_root(cfg: Any) -> None:
    """Stop early, naming ``data.root``, when the dataset it points at is not there."""
    root = cfg.data.root
    if root is None or not str(root).strip():
        raise UsageError(
            f"data.root: not set (the {cfg.data.format} dataset's folder or manifest file)",
            hint="set it in the config or with --set data.root=<path>",
        )
    if not Path(root).exists():
        raise NotFoundError(
            f"data.root: {root} does not exist ({cfg.data.format} dataset)",
            hint="point it at the dataset with --set data.root=<path>",
        )


def check_model(cfg: Any) -> None:
    """Stop early, naming the field, when ``model`` is unknown or has no ImageNet weights to start from."""
    if isinstance(cfg.pretrained, str) and cfg.pretrained != "imagenet":
        return  # a checkpoint to start from: it fixes the model
    from mghft.models.factory import check_pretrained
    from mghft.registry import get_model_config

    model = get_model_config(cfg.model)
    if cfg.model_overrides:
        model = model.replace(**cfg.model_overrides)
    check_pretrained(model, cfg.pretrained)


def _train(args: argparse.Namespace) -> int:
    from mghft.train.config import TrainConfig
    from mghft.train.distributed import failures_reach_every_process
    from mghft.train.loop import train

    cfg = TrainConfig.from_file(_config_file(args.config, ""), args.overrides)
    check_model(cfg)
    check_data_root(cfg)
    with failures_reach_every_process():  # under torchrun: no process waits on one that failed
        train(cfg, resume=args.resume, overwrite=args.overwrite)
    return 0


def run_config_path(model: str) -> Path | None:
    """The ``train.yaml`` a training run wrote beside a local checkpoint folder (``<run>/best``), if any."""
    folder = Path(model)
    for candidate in (folder.parent / "train.yaml", folder / "train.yaml"):
        if folder.is_dir() and candidate.is_file():
            return candidate
    return None


def _run_config(args: argparse.Namespace) -> Any:
    """The training config of the checkpoint's run: ``--config``, else the ``train.yaml`` beside it."""
    from mghft.hub import read_checkpoint_meta, resolve_checkpoint_dir
    from mghft.train.config import TrainConfig

    read_checkpoint_meta(resolve_checkpoint_dir(args.model))  # the same words as predict, serve and export
    if args.config is not None:
        return TrainConfig.from_file(_config_file(args.config, "--config"), args.overrides)
    found = run_config_path(args.model)
    if found is None:
        raise UsageError(
            f"--config: no train.yaml beside the checkpoint {args.model}, so the dataset is unknown",
            hint="give the training config with --config (its data section says what to read)",
        )
    print(f"dataset and split file from {found}", file=sys.stderr)
    return TrainConfig.from_file(found, [f"output={found.parent}", *args.overrides])


EVALUATE_OWNS = {"bootstrap": "--bootstrap", "batch_size": "--batch-size"}
"""Config fields ``mghft evaluate`` takes from its own flags (a ``--set`` of them is refused)."""


def _evaluate(args: argparse.Namespace) -> int:
    from mghft.train.config import refuse_owned_fields
    from mghft.train.evaluate import evaluate_checkpoint

    refuse_owned_fields(args.overrides, EVALUATE_OWNS, "evaluate")
    cfg = _run_config(args)
    check_data_root(cfg)
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
    from mghft.train.calibrate import calibrate_checkpoint, check_fit_split, unreliable_warning

    check_fit_split(args.split)  # before the config's data is read
    cfg = _run_config(args)
    check_data_root(cfg)
    emoji = read_emoji_map(args.emoji_map) if args.emoji_map else None
    record = calibrate_checkpoint(args.model, cfg, split=args.split, out=args.out, emoji=emoji)
    for cal in record.conditions.values():
        if not cal.applied:
            print(f"warning: {unreliable_warning(cal)}", file=sys.stderr)
        else:
            print(
                f"{cal.condition}: T = {cal.temperature:.4f} fitted on {cal.items} {args.split} items: ECE "
                f"{100 * cal.ece_before:.2f}% -> {100 * cal.ece_after:.2f}%, NLL {cal.nll_before:.4f} -> "
                f"{cal.nll_after:.4f}"
            )
    print(f"calibration record stored in {args.model}")
    return 0
