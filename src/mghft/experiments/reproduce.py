"""The paper's two tables from nothing: a SER30K folder and a model server, to descriptions, every config with
several seeds, and the comparison tables. ``scripts/reproduce.py`` is the command line; ``make reproduce`` runs it.

Steps (each resumable: rerunning the sequence continues where it stopped):

1. ``mghft interpret`` writes the four views of every SER30K image into a description store (done images are
   skipped);
2. optionally ``mghft zeroshot`` asks an LLM for each test image's emotion (answered images are skipped);
3. ``mghft sweep`` trains the method, its baselines and its ablations with every seed (finished runs skipped,
   interrupted ones resumed); ``public_code.yaml`` runs only with the public code's description files;
4. ``mghft compare`` writes the baselines table and the ablations table, both against ``mghft``.

The dry run prints these commands and an estimate of LLM requests, GPU-hours and disk. GPU-hours come from a
CUDA training-throughput figure in ``benchmarks/results.jsonl`` (``bash benchmarks/gpu.sh step`` appends one);
without one they are reported as unknown, with the command that measures
it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mghft.errors import MghftError, UsageError
from mghft.jsonl import read_jsonl

BASELINES = ("mghft", "text_only", "image_only", "clip_linear_probe", "clip_finetune", "public_code")
ABLATIONS = (
    "mghft",
    "one_view_intention",
    "no_alignment",
    "no_mlce",
    "no_local_injection",
    "self_attention",
    "pvt_v2_b2",
)
EVAL_SPEEDUP = 3.0
"""Images per second of an evaluation pass relative to a training step (a forward is about a third of one)."""
STORE_BYTES_PER_IMAGE = 2_500
"""A description store row: four views of a few hundred characters, the answer and its metadata."""
RUN_EXTRA_BYTES = 5_000_000
"""Per run besides checkpoints: logs, reports, plots, per-item predictions."""


@dataclass
class Plan:
    """What a reproduction would run, with its estimate."""

    commands: list[list[str]]
    configs: dict[str, Path]
    counts: dict[str, int]
    requests: int
    zeroshot_requests: int
    gpu_hours: float | None
    gpu_source: str
    disk_bytes: int
    notes: list[str] = field(default_factory=list)
    per_config: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The dry run's printout."""
        out = ["# commands, in order (each resumable)"]
        out += [shlex.join(c) for c in self.commands]
        out += ["", "# estimate"]
        out.append(f"SER30K images: {self.counts['all']} (train {self.counts['train']}, val {self.counts['val']}, "
                   f"test {self.counts['test']})")  # fmt: skip
        out.append(f"LLM requests: {self.requests} for descriptions + {self.zeroshot_requests} zero-shot, plus retries")
        if self.gpu_hours is None:
            out.append(f"GPU-hours: unknown ({self.gpu_source})")
        else:
            out.append(f"GPU-hours: {self.gpu_hours:.1f} in all ({self.gpu_source})")
            for name, row in self.per_config.items():
                out.append(f"  {name}: {row['runs']} runs x {row['hours_per_run']:.2f} h")
        out.append(f"disk: {self.disk_bytes / 1e9:.1f} GB (checkpoints best + last with optimizer state, store, "
                   "text-feature cache, reports)")  # fmt: skip
        out += [f"note: {n}" for n in self.notes]
        return out


def ser30k_counts(root: Path) -> dict[str, int]:
    """Images per SER30K split, from ``Annotations/image-level/{train,val,test}.json``.

    Raises:
        MghftError: an annotation file is missing or unreadable (naming it).
    """
    counts = {}
    for split in ("train", "val", "test"):
        path = root / "Annotations" / "image-level" / f"{split}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            counts[split] = len(data["annotations"])
        except FileNotFoundError:
            hint = "--ser30k is the folder holding Images/ and Annotations/"
            raise MghftError(f"{path}: no such file", hint=hint) from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise MghftError(f"{path}: not a SER30K annotation file ({err})") from None
    counts["all"] = sum(counts.values())
    return counts


def gpu_figure(results: Path, model: str) -> tuple[float | None, str]:
    """Training images per second on a GPU for ``model`` from a benchmark results file, and where it came from.

    The record for ``model`` is preferred, then any CUDA record (its model named in the source).
    """
    if not results.is_file():
        return None, f"{results} not found"
    best: tuple[int, float, str] | None = None
    for n, line in enumerate(results.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rec = json.loads(line)
            args, ours = rec["args"], rec["ours"]
            ips = float(ours["images_per_s"])
        except (ValueError, KeyError, TypeError):
            continue
        if not str(args.get("device", "")).startswith("cuda"):
            continue
        rank = 1 if args.get("model") == model else 0
        desc = (
            f"{results}:{n}: {args.get('model')} at {args.get('image_size')} px, batch {args.get('batch')}, "
            f"amp {args.get('amp')}, {ips:.1f} images/s on {ours.get('device', 'a GPU')}"
        )
        if best is None or rank > best[0]:
            best = (rank, ips, desc)
    if best is None:
        return None, (
            f"no CUDA entry in {results}; on a GPU run `bash benchmarks/gpu.sh step` (it appends its images/s to "
            f"{results}), or give --images-per-second"
        )
    return best[1], best[2]


def _parameters(model: str, overrides: dict[str, Any], cache: dict[str, int]) -> int | None:
    """Parameters of a config's model, built with random weights; ``None`` for a Hub model (never downloaded)."""
    if overrides.get("arch") == "clip":
        return None
    key = json.dumps([model, overrides], sort_keys=True)
    if key not in cache:
        try:
            from mghft.models.factory import create_model

            m = create_model(model, pretrained=False, text_encoder=False, num_classes=7, offline=True, **overrides)
            cache[key] = sum(p.numel() for p in m.parameters())
        except Exception:  # noqa: BLE001 - whatever stops a build, the estimate goes on with an assumed size
            cache[key] = -1
    return None if cache[key] < 0 else cache[key]


def make_plan(
    ser30k: Path,
    *,
    base_url: str,
    backend: str,
    out: Path,
    seeds: int = 3,
    nproc: int = 1,
    concurrency: int = 32,
    zeroshot_backend: str | None = None,
    zeroshot_base_url: str | None = None,
    public_annotations: Path | None = None,
    configs_dir: Path = Path("configs/ser30k"),
    benchmarks: Path = Path("benchmarks/results.jsonl"),
    overrides: Sequence[str] = (),
    images_per_second: float | None = None,
    python: str = sys.executable,
) -> Plan:
    """The commands of a reproduction and their estimate (nothing runs).

    Raises:
        UsageError: a config named in :data:`BASELINES` or :data:`ABLATIONS` is missing, or a bad argument.
        MghftError: the SER30K annotations cannot be read.
    """
    from mghft.train.config import TrainConfig

    if seeds < 1 or nproc < 1:
        raise UsageError("--seeds and --nproc-per-node must be at least 1")
    counts = ser30k_counts(ser30k)
    names = list(dict.fromkeys([*BASELINES, *ABLATIONS]))
    configs: dict[str, Path] = {}
    for name in names:
        path = configs_dir / ("mghft.yaml" if name == "mghft" else f"ablations/{name}.yaml")
        if not path.is_file():
            raise UsageError(f"{path}: no such config", hint="run from the repository root or pass --configs")
        configs[name] = path
    notes = []
    if public_annotations is None:
        configs.pop("public_code")
        notes.append("public_code.yaml left out: give --public-annotations (the public code's description files)")
    store = out / "descriptions.sqlite"
    mghft = [python, "-m", "mghft"]
    launcher = mghft if nproc == 1 else [python, "-m", "torch.distributed.run", "--standalone",
                                         "--nproc-per-node", str(nproc), "-m", "mghft"]  # fmt: skip
    commands = [
        [
            *mghft,
            "interpret",
            "--dataset",
            "ser30k",
            "--root",
            str(ser30k),
            "--split",
            "all",
            "--store",
            str(store),
            "--backend",
            backend,
            "--base-url",
            base_url,
            "--concurrency",
            str(concurrency),
        ],  # fmt: skip
    ]
    zeroshot_requests = 0
    if zeroshot_backend:
        zs_out = out / "zeroshot"
        commands.append(
            [
                *mghft,
                "zeroshot",
                "--dataset",
                "ser30k",
                "--root",
                str(ser30k),
                "--split",
                "test",
                "--backend",
                zeroshot_backend,
                "--base-url",
                zeroshot_base_url or base_url,
                "--out",
                str(zs_out),
            ]  # fmt: skip
        )
        zeroshot_requests = max(0, counts["test"] - _answered(zs_out / "predictions.jsonl"))
    sweep_out = out / "sweep"
    data = [f"--set=data.root={ser30k}", *[f"--set={o}" for o in overrides]]
    ours = [str(p) for n, p in configs.items() if n != "public_code"]
    commands.append([*launcher, "sweep", *ours, "--seeds", str(seeds), f"--set=data.descriptions={store}", *data,
                     "--output", str(sweep_out)])  # fmt: skip
    if "public_code" in configs:
        public = [str(configs["public_code"]), f"--set=data.annotations={public_annotations}"]
        commands.append([*launcher, "sweep", *public, "--seeds", str(seeds), *data, "--output", str(sweep_out)])
    zs_arg = [f"zeroshot={out / 'zeroshot'}"] if zeroshot_backend else []
    for table, members in (("baselines", BASELINES), ("ablations", ABLATIONS)):
        folders = [str(sweep_out / n) for n in members if n in configs]
        extra = zs_arg if table == "baselines" else []
        commands.append([*mghft, "compare", *folders, *extra, "--reference", "mghft", "--out",
                         str(out / "tables" / table)])  # fmt: skip

    # Estimate: requests, GPU time from a throughput figure, disk from parameter counts.
    requests = max(0, counts["all"] - _described(store))
    if images_per_second:
        ips, source = images_per_second, f"{images_per_second:g} training images/s given on the command line"
    else:
        ips, source = gpu_figure(benchmarks, "mghft_pvt_small")
    per_config: dict[str, dict[str, Any]] = {}
    total_hours = 0.0
    disk = counts["all"] * STORE_BYTES_PER_IMAGE
    param_cache: dict[str, int] = {}
    encoders: set[str] = set()
    reference_params = None
    for name, path in configs.items():
        cfg = TrainConfig.from_file(path, [f"data.root={ser30k}", *overrides])
        seconds = None
        if ips:
            train_imgs = counts["train"] * cfg.repeated_aug
            seconds = cfg.epochs * (train_imgs / ips + counts["val"] / (EVAL_SPEEDUP * ips))
            seconds += 2 * counts["test"] / (EVAL_SPEEDUP * ips)
            total_hours += seconds * seeds / 3600
        params = _parameters(cfg.model, cfg.model_overrides, param_cache)
        if name == "mghft":
            reference_params = params
        if params is None:
            params = reference_params or 35_000_000
            notes.append(f"{name}: parameters of a Hub model not counted offline; assumed {params / 1e6:.0f} M")
        disk += seeds * (params * 4 * 4 + RUN_EXTRA_BYTES)  # best, last, two AdamW moments (fp32)
        encoders.add(f"{cfg.model}:{cfg.compat}")
        per_config[name] = {"runs": seeds, "hours_per_run": (seconds or 0) / 3600, "parameters": params}
    disk += len(encoders) * counts["all"] * 4 * 768 * 4  # text-feature cache: 4 views x 768 floats per image
    if ips:
        notes.append(
            f"GPU-hours assume every config trains at the benchmark's speed and evaluation at {EVAL_SPEEDUP:.0f}x it; "
            f"with {nproc} GPUs the wall time is about {total_hours / nproc:.1f} h"
        )
    return Plan(
        commands=commands,
        configs=configs,
        counts=counts,
        requests=requests,
        zeroshot_requests=zeroshot_requests,
        gpu_hours=total_hours if ips else None,
        gpu_source=source,
        disk_bytes=int(disk),
        notes=notes,
        per_config=per_config,
    )


def _answered(path: Path) -> int:
    if not path.is_file():
        return 0
    return len({rec.get("key") for rec in read_jsonl(path) if not rec.get("error")})


def _described(store: Path) -> int:
    """Images already described in the store (0 when there is none), read only: a plan never creates a store."""
    if not store.is_file():
        return 0
    import sqlite3

    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM descriptions").fetchone()[0])
    except sqlite3.Error:
        return 0


def run_plan(plan: Plan, echo: Any = print) -> int:
    """Run the plan's commands in order; a failed sweep still lets the tables be written from what finished.

    Returns:
        0 when every step succeeded, else the first failing step's exit code.
    """
    status = 0
    for cmd in plan.commands:
        echo("$ " + shlex.join(cmd))
        rc = subprocess.run(cmd, check=False).returncode
        if rc != 0:
            step = cmd[cmd.index("mghft") + 1] if "mghft" in cmd else cmd[0]
            echo(f"step `{step}` exited with {rc}")
            status = status or rc
            if step not in ("sweep",):
                return status
    return status
