"""The reproduction plan: its commands and its estimate of requests, GPU-hours and disk."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mghft.errors import MghftError
from mghft.experiments import reproduce
from tests import synthetic

ROOT = Path(__file__).resolve().parents[1]


def _configs(root: Path) -> Path:
    """Every config the plan names, as tiny ones (the estimate builds each model to count its parameters)."""
    (root / "ablations").mkdir(parents=True)
    base = {"model": "mghft_tiny", "epochs": 4, "repeated_aug": 2, "data": {"format": "ser30k"}}
    (root / "mghft.yaml").write_text(yaml.safe_dump(base))
    for name in {*reproduce.BASELINES, *reproduce.ABLATIONS} - {"mghft"}:
        extra = {"model_overrides": {"arch": "clip"}} if name.startswith("clip") else {}
        (root / "ablations" / f"{name}.yaml").write_text(yaml.safe_dump({"base": "../mghft.yaml", **extra}))
    return root


def test_dry_run_plan_counts_requests_gpu_hours_and_disk(tmp_path: Path) -> None:
    ser = synthetic.write_ser30k(tmp_path / "SER30K", 10)  # 30 images: 18 train, 6 val, 6 test
    configs = _configs(tmp_path / "configs")
    bench = tmp_path / "results.jsonl"
    bench.write_text(
        json.dumps({"args": {"model": "mghft_pvt_small", "device": "cpu"}, "ours": {"images_per_s": 1.0}})
        + "\n"
        + json.dumps(
            {
                "args": {"model": "mghft_pvt_small", "device": "cuda", "image_size": 448, "batch": 16, "amp": "bf16"},
                "ours": {"images_per_s": 0.5, "device": "H100"},
            }  # fmt: skip
        )
        + "\n"
    )
    out = tmp_path / "out"
    # Descriptions of 4 images already in the store: only the other 26 need a request.
    out.mkdir()
    with sqlite3.connect(out / "descriptions.sqlite") as db:
        db.execute("CREATE TABLE descriptions (image_sha256 TEXT PRIMARY KEY)")
        db.executemany("INSERT INTO descriptions VALUES (?)", [(str(i),) for i in range(4)])
    plan = reproduce.make_plan(
        ser, base_url="http://127.0.0.1:9/v1", backend="vllm:m", out=out, seeds=3, nproc=2,
        configs_dir=configs, benchmarks=bench, zeroshot_backend="openai:gpt-4o",
    )  # fmt: skip
    assert plan.counts == {"train": 18, "val": 6, "test": 6, "all": 30}
    assert plan.requests == 26 and plan.zeroshot_requests == 6
    # 4 epochs x (18 train images x 2 repeats / 0.5 per s + 6 val / 1.5 per s) + 2 x 6 test / 1.5 per s, per run.
    per_run = (4 * (36 / 0.5 + 6 / 1.5) + 2 * 6 / 1.5) / 3600
    assert plan.per_config["mghft"]["hours_per_run"] == pytest.approx(per_run)
    assert "public_code" not in plan.configs and len(plan.configs) == 11
    assert plan.gpu_hours == pytest.approx(11 * 3 * per_run)
    assert "results.jsonl:2" in plan.gpu_source and "H100" in plan.gpu_source
    tiny = plan.per_config["mghft"]["parameters"]
    assert 10_000 < tiny < 5_000_000
    steps = [c[c.index("mghft") + 1] for c in plan.commands]
    assert steps == ["interpret", "zeroshot", "sweep", "compare", "compare"]
    sweep = plan.commands[2]
    assert sweep[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    assert "--seeds" in sweep and sweep[sweep.index("--seeds") + 1] == "3"
    assert f"--set=data.descriptions={out / 'descriptions.sqlite'}" in sweep
    assert (
        plan.commands[3][-1] == str(out / "tables" / "baselines") and f"zeroshot={out / 'zeroshot'}" in plan.commands[3]
    )
    assert plan.commands[4][-1] == str(out / "tables" / "ablations")
    text = "\n".join(plan.lines())
    assert "LLM requests: 26 for descriptions + 6 zero-shot" in text and f"GPU-hours: {plan.gpu_hours:.1f}" in text
    assert plan.disk_bytes > 33 * tiny * 16  # 33 runs with best + last checkpoints and optimizer moments


def test_no_gpu_figure_is_said_not_guessed(tmp_path: Path) -> None:
    ser = synthetic.write_ser30k(tmp_path / "SER30K", 4)
    plan = reproduce.make_plan(
        ser, base_url="http://127.0.0.1:9/v1", backend="vllm:m", out=tmp_path / "out",
        configs_dir=_configs(tmp_path / "configs"), benchmarks=tmp_path / "missing.jsonl",
    )  # fmt: skip
    assert plan.gpu_hours is None and "GPU-hours: unknown" in "\n".join(plan.lines())
    with pytest.raises(MghftError, match="train.json: no such file"):
        reproduce.make_plan(tmp_path, base_url="u", backend="b", out=tmp_path / "o", configs_dir=tmp_path)


def test_the_script_dry_run_on_the_shipped_configs(tmp_path: Path) -> None:
    ser = synthetic.write_ser30k(tmp_path / "SER30K", 4)
    cmd = [sys.executable, str(ROOT / "scripts" / "reproduce.py"), "--ser30k", str(ser), "--base-url",
           "http://127.0.0.1:9/v1", "--backend", "vllm:m", "--images-per-second", "100", "--dry-run",
           "--out", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(ROOT / "src"),
                          "PATH": "/usr/bin:/bin", "MGHFT_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mghft sweep" in proc.stdout and "configs/ser30k/ablations/no_mlce.yaml" in proc.stdout
    assert "GPU-hours:" in proc.stdout and "unknown" not in proc.stdout
    assert not (tmp_path / "out").exists()  # a dry run creates nothing
