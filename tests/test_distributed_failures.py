"""Under ``torchrun``, a failure in one process reaches every process: all stop within seconds, the error named.

Each test launches ``torch.distributed.run`` with two CPU processes (gloo). Before the fix, the process left
waiting hung until gloo's 30-minute timeout. ``LIMIT_S`` bounds the whole job, torchrun's own start and stop
included (on a 2-core machine loaded by other work, a job that does nothing takes close to a minute); the time
from the failure to the end of the other process is measured inside the job and must be seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from tests.test_sweep_compare import _base_config, write_text_labelled

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 180
STOP_S = 15  # from one process's failure to the others' end

SCRIPT = textwrap.dedent(
    """
    import sys
    import time

    import torch
    import torch.distributed as dist

    from mghft.errors import DataError
    from mghft.experiments.sweep import run_sweep
    from mghft.train.distributed import failures_reach_every_process
    from mghft.train.loop import setup_distributed


    def train_fn(cfg, resume, overwrite):
        info = setup_distributed()
        x = torch.ones(1)
        if cfg.seed == 0 and info.rank == 1:
            print(f"failed at {time.time()}", flush=True)
            raise DataError("cannot decode sticker_7.png: truncated file")
        dist.all_reduce(x)  # for seed 0, process 0 waits here for process 1, which has failed
        assert x.item() == info.world
        return {}


    if sys.argv[1] == "sweep":
        report = run_sweep([sys.argv[2]], [0, 1], sys.argv[3], train_fn=train_fn)
        print(f"ended at {time.time()}", flush=True)
        sys.exit(1 if report.failed else 0)
    try:
        with failures_reach_every_process():
            train_fn(type("Cfg", (), {"seed": 0})(), False, False)
    finally:
        print(f"ended at {time.time()}", flush=True)
    """
)


def _torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LIMIT_S, cwd=tmp_path)


def _seconds_to_stop(stdout: str) -> float:
    """From the failure in process 1 to the last process's end, as the job printed them."""
    failed = [float(line.split()[-1]) for line in stdout.splitlines() if line.startswith("failed at ")]
    ended = [float(line.split()[-1]) for line in stdout.splitlines() if line.startswith("ended at ")]
    assert len(failed) == 1 and len(ended) == 2, stdout
    return max(ended) - failed[0]


def _config(tmp_path: Path, **changes: object) -> Path:
    manifest = write_text_labelled(tmp_path / "data", 3)
    fields = {**_base_config(manifest, tmp_path / "features"), "epochs": 1, "model_overrides": {"arch": "text_only"}}
    fields.update(changes)
    config = tmp_path / "text.yaml"
    config.write_text(yaml.safe_dump(fields))
    return config


def test_a_sweep_whose_data_file_is_missing_ends_listing_the_failure_and_exits_1(tmp_path: Path) -> None:
    config = _config(tmp_path, data={"format": "manifest", "root": "nope.jsonl", "split_fractions": [0.5, 0.1, 0.4]})
    done = _torchrun(tmp_path, "-m", "mghft", "sweep", str(config), "--seeds", "0,", "--output", "out")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "FAILED" in done.stdout and "nope.jsonl" in done.stdout, done.stdout
    assert "0 of 1 runs finished" in done.stdout
    assert "terminate called" not in done.stderr


def test_an_exception_in_one_process_stops_the_run_and_the_sweep_goes_on(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    done = _torchrun(tmp_path, str(script), "sweep", str(_config(tmp_path)), "out")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "rank 1: DataError: cannot decode sticker_7.png" in done.stdout, done.stdout
    assert "1 of 2 runs finished" in done.stdout, done.stdout  # seed 1 ran on a fresh process group
    assert _seconds_to_stop(done.stdout) < STOP_S
    assert "terminate called" not in done.stderr


def test_an_exception_in_one_process_of_a_job_names_it_in_every_process(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    done = _torchrun(tmp_path, str(script), "job")
    assert done.returncode != 0
    # Process 0 was waiting in all_reduce: it stops at once, naming process 1's error, not a lost connection.
    assert "PeerFailure: the distributed run stopped: rank 1: DataError: cannot decode sticker_7.png" in done.stderr
    assert _seconds_to_stop(done.stdout) < STOP_S
