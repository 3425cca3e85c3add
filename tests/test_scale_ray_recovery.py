"""Ray Data engine under failure: a worker node removed mid-job and a killed job leave one row per sticker path in
the Delta table, and a rerun resumes from what was committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is installed by `make install` (the [ray] extra)")

from mghft.hub import save_checkpoint  # noqa: E402
from mghft.models.factory import create_model  # noqa: E402
from mghft.scale import ray_engine  # noqa: E402
from mghft.scale import table as out_table  # noqa: E402
from tests import synthetic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    model = create_model("mghft_tiny", num_classes=len(synthetic.CLASSES), text_encoder=False)
    folder = tmp_path_factory.mktemp("ck") / "best"
    save_checkpoint(model, folder, class_names=list(synthetic.CLASSES))
    return folder


def _commits(out: Path) -> int:
    """Table versions after the one that created it."""
    return max(0, len(list((out / "_delta_log").glob("*.json"))) - 1) if (out / "_delta_log").is_dir() else 0


def _rows(out: Path) -> list[dict]:
    from deltalake import DeltaTable

    return DeltaTable(str(out)).to_pyarrow_table(columns=["path", "fingerprint", "error"]).to_pylist()


def test_a_node_leaving_mid_job_loses_and_duplicates_nothing(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.cluster_utils import Cluster

    monkeypatch.setattr(ray_engine, "COMMIT_ROWS", 2)
    images = [p for p, _, _ in synthetic.write_images(tmp_path / "in", 8)]  # 24 stickers, 2 per batch and commit
    # the head keeps CPU for the read tasks beside both actors once the worker is gone (a cluster that shrinks below
    # what the actors hold leaves the reads no CPU: Ray Data then waits)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        out = tmp_path / "out"
        removed = threading.Event()

        def remove_when_started() -> None:
            deadline = time.time() + 120
            while time.time() < deadline and _commits(out) < 1:
                time.sleep(0.05)
            cluster.remove_node(worker, allow_graceful=False)
            removed.set()

        killer = threading.Thread(target=remove_when_started, daemon=True)
        killer.start()
        summary = ray_engine.predict_ray(
            [str(p) for p in images], out, model=str(checkpoint), batch_size=2, num_actors=2,
            cpus_per_actor=0.5, threads_per_actor=1, progress=False,
        )  # fmt: skip
        killer.join(10)
        assert removed.is_set()
        rows = _rows(out)
        assert sorted(r["path"] for r in rows) == sorted(str(p) for p in images)  # every sticker, exactly once
        assert summary.output_rows == len(images)
        # A batch in flight on the removed node's actor may fail both of its attempts (the retry can reach the
        # dying actor before Ray marks it dead): its stickers get error rows saying so, and a rerun labels them.
        lost = [r for r in rows if r["error"] is not None]
        assert all("attempt" in r["error"] or "actor" in r["error"].lower() for r in lost), lost
        if lost:
            ray_engine.predict_ray(
                [str(p) for p in images], out, model=str(checkpoint), batch_size=2, num_actors=1,
                cpus_per_actor=0.5, threads_per_actor=1, progress=False,
            )  # fmt: skip
            rows = _rows(out)
        assert sorted(r["path"] for r in rows) == sorted(str(p) for p in images)
        assert all(r["error"] is None for r in rows), [r for r in rows if r["error"] is not None]
    finally:
        ray.shutdown()
        cluster.shutdown()


CHILD = """
import sys
from mghft.scale import ray_engine
ray_engine.COMMIT_ROWS = 3
paths = sys.argv[3:]
ray_engine.predict_ray(paths, sys.argv[2], model=sys.argv[1], batch_size=3, num_actors=1, cpus_per_actor=0.5,
                       threads_per_actor=1, progress=False)
"""


def test_a_killed_job_keeps_its_commits_and_a_rerun_resumes(checkpoint: Path, tmp_path: Path) -> None:
    images = [str(p) for p, _, _ in synthetic.write_images(tmp_path / "in", 12)]  # 36 stickers, commits of 3
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(checkpoint), str(out), *images], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 240
        while time.time() < deadline and _commits(out) < 2 and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    kept = _rows(out)
    assert 0 < len(kept) < len(images) and len({r["path"] for r in kept}) == len(kept)  # whole commits only
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        s = ray_engine.predict_ray(images, out, model=str(checkpoint), batch_size=4, num_actors=1,
                                   cpus_per_actor=0.5, progress=False)  # fmt: skip
    finally:
        ray.shutdown()
    assert (s.already_done, s.written, s.output_rows) == (len(kept), len(images) - len(kept), len(images))
    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == sorted(images) and out_table.fingerprints(out) == {s.fingerprint: 36}
