"""``mghft sweep``: every config x seed into its own run folder, unattended.

Run ``<config name>`` with seed ``s`` goes to ``<output>/<config name>/seed-<s>/`` (the config name is its file
name without ``.yaml``). A run that finished (``results.json`` written) is skipped; one that was interrupted
(``last/`` holds a training state) is resumed exactly as ``mghft train --resume`` would; a run that fails is
recorded and the sweep goes on to the next, reporting every failure at the end. A finished or started run whose
saved ``train.yaml`` differs from the config the sweep would now use is not touched: it is reported as a
conflict, since its numbers would not be those of the config named in the table.

Under ``torchrun`` every process runs the same sweep; each run is one distributed training, and the main
process decides what to skip or resume so that all processes agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mghft.config import load_yaml
from mghft.errors import MghftError, UsageError

RESULTS_NAME = "results.json"
SWEEP_FILE = "sweep.json"
ERROR_FILE = "sweep_error.txt"
RUN_FILE = "sweep_run.json"
SWEEP_OWNS = {"output": "--output", "seed": "--seeds"}
"""Config fields a sweep sets for each run itself (a ``--set`` of them is refused, naming the flag)."""
IGNORED_FIELDS = ("output", "progress", "tensorboard", "workers")
"""Config fields that do not change a run's numbers: a finished run is reused whatever their values."""


@dataclass
class SweepRun:
    """One config x seed of a sweep.

    Attributes:
        name: the config's name (its file name without ``.yaml``).
        config: the config file.
        seed: the training seed.
        folder: the run folder.
        state: ``"done"`` (finished: skipped), ``"resume"`` (interrupted: continued), ``"new"``, ``"conflict"``
            (a saved config differs: not touched) or ``"invalid"`` (the config does not load).
        detail: why, for conflicts and invalid configs.
        outcome: after running: ``"skipped"``, ``"resumed"``, ``"trained"``, ``"failed"`` or ``"not run"``.
        error: the failure, one line.
        seconds: wall time of the run.
    """

    name: str
    config: Path
    seed: int
    folder: Path
    state: str = "new"
    detail: str = ""
    outcome: str = "not run"
    error: str = ""
    seconds: float = 0.0
    cfg: Any = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.name,
            "config_file": str(self.config),
            "seed": self.seed,
            "folder": str(self.folder),
            "state": self.state,
            "outcome": self.outcome,
            "detail": self.detail,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> ``[0, 1, 2]``; ``"1,5,9"`` -> ``[1, 5, 9]``.

    Raises:
        UsageError: not a positive count or a comma-separated list of distinct integers.
    """
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            n = int(text)
            if n < 1:
                raise ValueError
            seeds = list(range(n))
    except ValueError:
        zero = text.strip() == "0"
        raise UsageError(
            f"--seeds {text!r}: expected a count (3: seeds 0, 1, 2) or a list (1,5,9)"
            + ("; 0 is a count of no seeds" if zero else ""),
            hint="--seeds 0, is the one seed 0" if zero else "e.g. --seeds 3 (seeds 0, 1, 2) or --seeds 0, (seed 0)",
        ) from None
    if len(set(seeds)) != len(seeds) or not seeds:
        raise UsageError(f"--seeds {text!r}: seeds must be distinct")
    return seeds


def config_names(configs: Sequence[str | Path]) -> dict[str, Path]:
    """Config name -> file, in the given order.

    Raises:
        UsageError: a file is missing, or two files share a name (their runs would share folders).
    """
    names: dict[str, Path] = {}
    for c in configs:
        path = Path(c)
        if not path.is_file():
            raise UsageError(f"config {path}: no such file")
        name = path.name.removesuffix(".yaml").removesuffix(".yml")
        if name in names and names[name].resolve() != path.resolve():
            raise UsageError(
                f"configs {names[name]} and {path} have the same name {name!r}: their runs would share "
                f"<output>/{name}/",
                hint="rename one of them (the config's file name names its runs)",
            )
        names[name] = path
    return names


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    plain = json.loads(json.dumps(d, default=str))  # tuples and lists alike
    return {k: v for k, v in plain.items() if k not in IGNORED_FIELDS}


def _diff(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(saved) | set(wanted))
    out = []
    for k in keys:
        a, b = saved.get(k, "<absent>"), wanted.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} saved, {b!r} now")
    return out


def plan(
    configs: Sequence[str | Path], seeds: Sequence[int], output: str | Path, overrides: Sequence[str] = ()
) -> list[SweepRun]:
    """Every config x seed with its folder and state (done, resume, new, conflict, invalid); nothing runs."""
    from mghft.config import ConfigError
    from mghft.train.config import TrainConfig, refuse_owned_fields

    refuse_owned_fields(overrides, SWEEP_OWNS, "sweep")
    out = Path(output)
    runs = []
    for name, path in config_names(configs).items():
        for seed in seeds:
            folder = out / name / f"seed-{seed}"
            run = SweepRun(name, path, seed, folder)
            runs.append(run)
            try:
                run.cfg = TrainConfig.from_file(path, [*overrides, f"seed={seed}", f"output={folder}"])
            except (ConfigError, MghftError, ValueError, TypeError, OSError, yaml.YAMLError) as err:
                run.state, run.detail = "invalid", f"{path}: {err}"
                continue
            run.state, run.detail = _state(folder, run.cfg.to_dict(), TrainConfig().to_dict())
    return runs


def _with_defaults(defaults: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for k, v in saved.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = _with_defaults(out[k], v) if both and k != "model_overrides" else v
    return out


def _state(folder: Path, wanted: dict[str, Any], defaults: dict[str, Any]) -> tuple[str, str]:
    saved_file = folder / "train.yaml"
    if saved_file.exists():
        try:
            saved = load_yaml(saved_file.read_text(encoding="utf-8")) or {}  # the rules it was written with
        except (OSError, yaml.YAMLError) as err:
            return "conflict", f"{saved_file}: unreadable ({err})"
        # A field the saved config lacks (written before the field existed) had its default value.
        saved = _with_defaults(defaults, saved)
        diff = _diff(_comparable(saved), _comparable(wanted))
        if diff:
            return "conflict", f"{saved_file} differs from the config: " + "; ".join(diff[:5])
    if (folder / RESULTS_NAME).exists():
        return "done", ""
    if (folder / "last" / "training_state.pt").exists():
        return "resume", ""
    return "new", ""


@dataclass
class SweepReport:
    """What a sweep did: every run with its outcome; ``failed`` lists the runs that did not finish."""

    runs: list[SweepRun]
    output: Path

    @property
    def failed(self) -> list[SweepRun]:
        return [r for r in self.runs if r.outcome in ("failed", "not run")]

    def lines(self) -> list[str]:
        """The closing summary, one line per run, failures last with their error."""
        rows = [f"sweep of {len(self.runs)} runs in {self.output}:"]
        for r in self.runs:
            if r.outcome not in ("failed", "not run"):
                rows.append(f"  {r.outcome:8s} {r.name} seed {r.seed}  ({r.folder})")
        for r in self.failed:
            why = r.error or r.detail or "interrupted before it started"
            rows.append(f"  {r.outcome.upper():8s} {r.name} seed {r.seed}  ({r.folder}): {why}")
        done = sum(r.outcome in ("skipped", "resumed", "trained") for r in self.runs)
        rows.append(f"{done} of {len(self.runs)} runs finished; {len(self.failed)} failed or not run")
        return rows


def run_sweep(
    configs: Sequence[str | Path],
    seeds: Sequence[int],
    output: str | Path,
    overrides: Sequence[str] = (),
    *,
    dry_run: bool = False,
    train_fn: Callable[..., Any] | None = None,
    log: Callable[[str], None] = print,
) -> SweepReport:
    """Plan the sweep, then train every run that is not finished (resuming interrupted ones).

    Args:
        configs: training config files.
        seeds: training seeds (each replaces the config's ``seed``).
        output: the sweep folder; run folders are ``<output>/<config name>/seed-<s>/``.
        overrides: ``key=value`` overrides applied to every config (before ``seed`` and ``output``).
        dry_run: print the plan and run nothing.
        train_fn: the training function, called ``train_fn(cfg, resume=..., overwrite=...)`` (default
            :func:`mghft.train.loop.train`).
        log: where progress lines go (main process only).

    Returns:
        the report; ``<output>/sweep.json`` records it too. ``KeyboardInterrupt`` stops the sweep (the run in
        progress resumes next time) after writing what was done.
    """
    from mghft.train.distributed import teardown_distributed
    from mghft.train.loop import setup_distributed, train

    train_fn = train_fn or train
    out = Path(output)
    info = setup_distributed() if not dry_run else None
    main = info is None or info.main
    runs = plan(configs, seeds, out, overrides) if main else None
    if info is not None and info.world > 1:
        import torch.distributed as dist

        box = [runs]
        dist.broadcast_object_list(box, src=0)
        runs = box[0]
    assert runs is not None
    _refuse_invalid(runs)
    report = SweepReport(runs, out)
    say = log if main else (lambda _line: None)
    for r in runs:
        if r.state in ("conflict", "invalid"):
            r.outcome, r.error = "failed", r.detail
    if dry_run:
        for r in runs:
            verb = {"done": "skip (finished)", "resume": "resume", "new": "train"}.get(r.state, "cannot run")
            say(f"{verb:16s} {r.name} seed {r.seed} -> {r.folder}" + (f": {r.detail}" if r.detail else ""))
        return report
    if main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        for i, r in enumerate(runs):
            if r.state in ("conflict", "invalid"):
                continue
            if r.state == "done":
                r.outcome = "skipped"
                say(f"[{i + 1}/{len(runs)}] {r.name} seed {r.seed}: finished earlier, skipped")
                continue
            verb = "resuming" if r.state == "resume" else "training"
            say(f"[{i + 1}/{len(runs)}] {verb} {r.name} seed {r.seed} in {r.folder}")
            _run_one(r, train_fn, info, main)
            if r.outcome == "failed":
                say(f"[{i + 1}/{len(runs)}] {r.name} seed {r.seed} FAILED: {r.error} (the sweep goes on)")
    finally:
        if main:
            _write_sweep_file(report, configs, seeds, overrides)
            for line in report.lines():
                say(line)
        teardown_distributed()
    return report


def _refuse_invalid(runs: Sequence[SweepRun]) -> None:
    """Every run's config is checked before any runs: one that cannot be read (a mistyped ``--set``, an unknown
    field, a missing file) stops the sweep naming each distinct problem, instead of failing run after run.

    Raises:
        ConfigError: listing the invalid runs' problems.
    """
    from mghft.config import ConfigError

    invalid = [r for r in runs if r.state == "invalid"]
    if not invalid:
        return
    problems = list(dict.fromkeys(r.detail for r in invalid))
    raise ConfigError(
        f"{len(invalid)} of {len(runs)} sweep runs have a config that cannot be used, so nothing was run:\n"
        + "\n".join(f"  {p}" for p in problems[:10])
        + (f"\n  … and {len(problems) - 10} more" if len(problems) > 10 else ""),
        hint="fix the --set or the config file named above (every field: docs/config.md)",
    )


def _run_one(r: SweepRun, train_fn: Callable[..., Any], info: Any, main: bool) -> None:
    started = time.monotonic()
    error = ""
    try:
        if main:
            r.folder.mkdir(parents=True, exist_ok=True)
            (r.folder / RUN_FILE).write_text(
                json.dumps({"config": r.name, "config_file": str(r.config), "seed": r.seed}, indent=2) + "\n",
                encoding="utf-8",
            )
        # A new run may find files of an attempt that died before its first epoch: they are its own, replaced.
        train_fn(r.cfg, resume=r.state == "resume", overwrite=r.state == "new")
    except KeyboardInterrupt:
        r.outcome, r.error = "not run", "interrupted (resumes on the next sweep)"
        r.seconds = time.monotonic() - started
        raise
    except Exception as err:  # noqa: BLE001 - a failed run must not stop the others
        error = f"{type(err).__name__}: {err}".splitlines()[0]
        if info is not None and info.world > 1:
            from mghft.train.distributed import record_failure

            error = record_failure(err)  # the other processes stop waiting on this one at once
        if main:
            (r.folder / ERROR_FILE).write_text(traceback.format_exc() + f"\n{error}\n", encoding="utf-8")
        _release_gpu_memory()
    r.seconds = time.monotonic() - started
    if info is not None and info.world > 1:
        from mghft.train.distributed import agree_on_outcome

        error = agree_on_outcome(info, error)  # through the rendezvous store; a fresh group after a failure
    if error:
        r.outcome, r.error = "failed", error
    else:
        r.outcome = "resumed" if r.state == "resume" else "trained"
        if main:
            (r.folder / ERROR_FILE).unlink(missing_ok=True)


def _release_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _write_sweep_file(
    report: SweepReport, configs: Sequence[str | Path], seeds: Sequence[int], overrides: Sequence[str]
) -> None:
    """Record the sweep in ``sweep.json``; runs of earlier sweeps into the same folder stay listed."""
    path = report.output / SWEEP_FILE
    earlier: list[dict[str, Any]] = []
    with contextlib.suppress(OSError, ValueError, AttributeError):
        earlier = json.loads(path.read_text(encoding="utf-8")).get("runs", [])
    now = [r.as_dict() for r in report.runs]
    folders = {r["folder"] for r in now}
    payload = {
        "configs": {name: str(p) for name, p in config_names(configs).items()},
        "seeds": list(seeds),
        "overrides": list(overrides),
        "runs": [r for r in earlier if isinstance(r, dict) and r.get("folder") not in folders] + now,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
