"""Resume that knows what it resumes.

Every ``last`` checkpoint records the run it belongs to (:func:`describe_run`): the resolved training config, the
resolved model config, the number of processes, the global batch and the schedule in samples. ``--resume``
compares the current run with it:

- refused (:class:`ResumeError`, listing every difference): any change to the model, the data, the views, the
  schedule (epochs, learning rates, warm-up, steps per epoch, global batch, patience), the objective and optimizer,
  the randomness (seed, augmentation) or the selection;
- accepted and recorded: the number of processes, ``batch_size`` and ``accum_steps`` as long as the global batch
  ``batch_size x accum_steps x processes`` stays the same, and settings that do not touch the numbers
  (``workers``, ``progress``, ``tensorboard``, ``bootstrap``, ``feature_cache``, ``compile``, ``output``).

The run's ``train.yaml`` is the config it started with and is never rewritten; each resume appends one line to
``resumes.jsonl`` beside it with what changed (:func:`record_resume`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from mghft.errors import UsageError
from mghft.jsonl import append_jsonl
from mghft.train.config import TrainConfig

STATE_NAME = "training_state.pt"
RESUMES_NAME = "resumes.jsonl"

SAFE_FIELDS: dict[str, str] = {
    "workers": "data-loading processes",
    "progress": "progress bar",
    "tensorboard": "TensorBoard logs",
    "bootstrap": "resamples of the final report's intervals",
    "feature_cache": "where cached text features live (they are keyed by content)",
    "compile": "torch.compile",
    "output": "the run folder",
    "batch_size": "per-process batch (the global batch is checked)",
    "accum_steps": "gradient accumulation (the global batch is checked)",
}
"""Config fields a resume may change; every other field is part of what the run computes."""

_KINDS = (
    ("data.", "data"),
    ("model", "model"),
    ("compat", "model"),
    ("pretrained", "model"),
    ("weights_dir", "model"),
    ("image_size", "model"),
    ("views", "views"),
    ("view_dropout", "views"),
    ("text_dropout", "views"),
    ("epochs", "schedule"),
    ("lr", "schedule"),
    ("min_lr", "schedule"),
    ("warmup_epochs", "schedule"),
    ("warmup_lr", "schedule"),
    ("max_steps_per_epoch", "schedule"),
    ("patience", "schedule"),
    ("seed", "randomness"),
    ("rand_augment", "randomness"),
    ("repeated_aug", "randomness"),
    ("select_", "selection"),
    ("amp", "numerics"),
)


class ResumeError(UsageError):
    """``--resume`` cannot continue this run as it is configured now; the message lists why."""


def _kind(name: str) -> str:
    for prefix, kind in _KINDS:
        if name == prefix or name.startswith(prefix):
            return kind
    return "objective"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def training_schedule(
    cfg: TrainConfig, world: int, micro_batches: int, samples_per_process: int
) -> dict[str, int | float]:
    """The schedule of a run in samples (and the steps it makes of them).

    Args:
        cfg: the training config.
        world: number of processes.
        micro_batches: training batches per epoch of one process (``len(loader)``).
        samples_per_process: training samples per epoch of one process (``len(sampler)``).

    Returns:
        ``global_batch`` (samples per optimizer step), ``micro_batches_per_epoch`` (after
        ``max_steps_per_epoch``), ``steps_per_epoch``, ``samples_per_epoch``, ``total_samples``,
        ``warmup_samples`` and ``epochs``. The learning rate at a step is a function of the samples seen before it.
    """
    n_micro = micro_batches
    if cfg.max_steps_per_epoch:
        n_micro = min(n_micro, cfg.max_steps_per_epoch * cfg.accum_steps)
    samples_per_epoch = min(n_micro * cfg.batch_size, samples_per_process) * world
    return {
        "global_batch": cfg.batch_size * cfg.accum_steps * world,
        "micro_batches_per_epoch": n_micro,
        "steps_per_epoch": -(-n_micro // cfg.accum_steps),
        "samples_per_epoch": samples_per_epoch,
        "total_samples": samples_per_epoch * cfg.epochs,
        "warmup_samples": int(cfg.warmup_epochs * samples_per_epoch),
        "epochs": cfg.epochs,
    }


def describe_run(
    cfg: TrainConfig, model_config: dict[str, Any], world: int, schedule: dict[str, int | float]
) -> dict[str, Any]:
    """What a ``last`` checkpoint records about its run (JSON-ready)."""
    return {
        "config": cfg.to_dict(),
        "model": model_config,
        "world_size": world,
        "batch_size": cfg.batch_size,
        "accum_steps": cfg.accum_steps,
        "global_batch": cfg.batch_size * cfg.accum_steps * world,
        "schedule": {"unit": "samples", **schedule},
    }


def read_saved_run(last: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run description and the training state saved in the ``last`` checkpoint folder.

    Raises:
        ResumeError: no checkpoint to resume, or one that does not record its run.
    """
    path = last / STATE_NAME
    if not path.is_file():
        raise ResumeError(
            f"--resume: nothing to resume in {last.parent}: no {path.relative_to(last.parent)} (the run never "
            "finished an epoch, or this is not its output folder)",
            hint="check the config's output, or run without --resume to start a new run",
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = dict(blob["state"])
    if "run" not in state:
        raise ResumeError(
            f"--resume: {path} does not record the config, processes and schedule of its run, so a resume "
            "cannot be checked",
            hint=f"start a new run from its weights with pretrained: {last}",
        )
    return json.loads(state["run"]), state


def _fmt(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def config_changes(saved: dict[str, Any], cfg: TrainConfig, world: int) -> list[dict[str, Any]]:
    """Every difference between the saved run and the current one: ``{"field", "saved", "now", "safe", "kind"}``.

    Besides the config's fields, ``processes`` (safe) and ``global batch`` (never safe) are compared.
    """
    before, after = _flatten(saved["config"]), _flatten(cfg.to_dict())
    changes = []
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a != b:
            kind = "safe" if name in SAFE_FIELDS else _kind(name)
            changes.append({"field": name, "saved": a, "now": b, "safe": name in SAFE_FIELDS, "kind": kind})
    if saved["world_size"] != world:
        changes.append({"field": "processes", "saved": saved["world_size"], "now": world, "safe": True, "kind": "safe"})
    global_batch = cfg.batch_size * cfg.accum_steps * world
    if saved["global_batch"] != global_batch:
        changes.append(
            {
                "field": "global batch",
                "saved": saved["global_batch"],
                "now": global_batch,
                "safe": False,
                "kind": "schedule",
                "detail": f"batch_size {cfg.batch_size} x accum_steps {cfg.accum_steps} x {world} process(es)",
            }
        )
    return changes


def _refuse(out: Path, breaking: list[dict[str, Any]], hint: str | None = None) -> None:
    lines = []
    for c in breaking:
        detail = f" ({c['detail']})" if c.get("detail") else ""
        lines.append(f"  {c['field']} [{c['kind']}]: {_fmt(c['saved'])} -> {_fmt(c['now'])}{detail}")
    raise ResumeError(
        f"--resume: {out} was trained with other settings; resuming would change what the run computes:\n"
        + "\n".join(lines),
        hint=hint
        or f"resume with the run's own config ({out / 'train.yaml'} and {out / RESUMES_NAME}), or start a new run "
        f"in another folder from its weights with pretrained: {out / 'last'}",
    )


def check_config(out: Path, saved: dict[str, Any], cfg: TrainConfig, world: int) -> list[dict[str, Any]]:
    """The changes of a resume, all safe; a breaking change raises.

    Raises:
        ResumeError: listing every breaking change (field, kind, saved and current value).
    """
    changes = config_changes(saved, cfg, world)
    breaking = [c for c in changes if not c["safe"]]
    if breaking:
        hint = None
        if [c["field"] for c in breaking] == ["global batch"]:
            per = saved["global_batch"] / (world * cfg.accum_steps)
            keep = f"--set batch_size={int(per)}" if per.is_integer() else "batch_size x accum_steps x processes"
            hint = f"keep the global batch at {saved['global_batch']} on {world} process(es): {keep}"
        _refuse(out, breaking, hint)
    return changes


def check_schedule(out: Path, saved: dict[str, Any], model_config: dict[str, Any], schedule: dict[str, Any]) -> None:
    """The resolved model and the schedule in samples and optimizer steps must be the saved ones (the number of
    micro-batches may differ: it follows ``batch_size`` and ``accum_steps``, which may change at the same global
    batch).

    Raises:
        ResumeError: listing the differing model fields or schedule entries (e.g. the data now has other items,
            or a per-process split of the global batch that pads differently).
    """
    breaking = []
    for name, a in _flatten(saved["model"]).items():
        b = _flatten(model_config).get(name)
        if a != b:
            breaking.append({"field": f"resolved model {name}", "saved": a, "now": b, "kind": "model"})
    for name, a in saved["schedule"].items():
        # Micro-batches follow the per-process split of the global batch, which a resume may change (8 x 1 and
        # 4 x 2 make the same optimizer steps over the same samples); the steps and samples are what is compared.
        if name not in ("unit", "micro_batches_per_epoch") and schedule.get(name) != a:
            breaking.append({"field": name, "saved": a, "now": schedule.get(name), "kind": "schedule"})
    if breaking:
        _refuse(out, breaking)


def resume_notes(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """What an accepted change alters beyond the arithmetic's rounding (recorded and printed with the resume)."""
    notes = []
    if cfg.align_weight and saved["batch_size"] != cfg.batch_size:
        notes.append(
            f"the alignment loss contrasts the items of each process's batch: {cfg.batch_size} now, "
            f"{saved['batch_size']} before, so its negatives differ from those of an uninterrupted run"
        )
    return notes


def check_data_content(out: Path, fingerprint: dict[str, Any]) -> list[str]:
    """The labels and descriptions now must be those the run started with (its ``data_fingerprint.json``).

    Returns:
        notes for the resume record: a run that recorded no fingerprint (started by an earlier version) cannot be
        compared, and says so.

    Raises:
        ResumeError: listing what changed (labels item by item, how many items' descriptions).
    """
    from mghft.provenance import FINGERPRINT_NAME, fingerprint_changes
    from mghft.train.provenance import read_fingerprint

    saved = read_fingerprint(out)
    if saved is None:
        note = (
            f"{out / FINGERPRINT_NAME} is absent (the run started before data fingerprints were recorded): whether "
            "its labels and descriptions changed cannot be checked"
        )
        print(f"note: {note}")
        return [note]
    changed = fingerprint_changes(saved, fingerprint)
    if changed:
        raise ResumeError(
            f"--resume: the data of {out} changed since the run started; resuming would train on other data:\n"
            + "\n".join(f"  {line} [data]" for line in changed),
            hint=f"restore the labels and descriptions the run started with ({out / FINGERPRINT_NAME} lists them), "
            f"or start a new run in another folder from its weights with pretrained: {out / 'last'}",
        )
    return []


def record_resume(
    out: Path,
    changes: list[dict[str, Any]],
    state: dict[str, Any],
    world: int,
    notes: list[str] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Append this resume (when, from which epoch and sample, on how many processes, what changed, and the
    provenance block of the stretch it starts: software, device, data digests) to ``out/resumes.jsonl``; print
    the changes. ``provenance.json`` keeps the block of the run's first stretch."""
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "epoch": state["epoch"],
        "step": state["step"],
        "samples": state.get("samples"),
        "processes": world,
        "changes": [{k: c[k] for k in ("field", "saved", "now") if k in c} for c in changes],
        "notes": list(notes or []),
    }
    if provenance is not None:
        entry["provenance"] = provenance
    path = out / RESUMES_NAME
    append_jsonl(path, entry)  # after dropping a half-written last line of a killed resume
    what = "; ".join(f"{c['field']} {_fmt(c['saved'])} -> {_fmt(c['now'])}" for c in changes) or "no changes"
    print(f"resumed from {out / 'last'} at epoch {state['epoch']} ({what}; recorded in {path})")
    for note in notes or []:
        print(f"note: {note}")
    return path


def restore_log(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``log.csv`` and ``log.jsonl`` to the epochs the checkpoint holds, under the log's own header, so the
    resumed run appends where the checkpoint left off (an epoch logged after the last checkpoint is dropped).

    Raises:
        ResumeError: the existing ``log.csv`` has another header than the checkpoint's rows (another run's log).
    """
    csv_path, jsonl_path = out / "log.csv", out / "log.jsonl"
    header = list(history[0]) if history else None
    if csv_path.exists() and history:
        with open(csv_path, newline="", encoding="utf-8") as f:
            existing = next(csv.reader(f), None)
        if existing is not None and existing != header:
            raise ResumeError(
                f"--resume: {csv_path} has the columns {existing}, not this run's {header}",
                hint="the folder holds another run's log: resume in the run's own folder",
            )
    buf = io.StringIO()
    if header:
        w = csv.DictWriter(buf, fieldnames=header, lineterminator="\r\n")
        w.writeheader()
        w.writerows(history)
    for path, text in ((csv_path, buf.getvalue()), (jsonl_path, "".join(json.dumps(r) + "\n" for r in history))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
