"""Ray Data engine: the same predictions as the local path, resume by image hash, and no sticker lost or
duplicated when a worker node leaves a two-node cluster mid-job."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is installed by `make install` (the [ray] extra)")

from mghft.hub import save_checkpoint  # noqa: E402
from mghft.interpret import DescriptionStore, build_backend  # noqa: E402
from mghft.interpret.loopback import LoopbackServer  # noqa: E402
from mghft.models.factory import create_model  # noqa: E402
from mghft.scale.inputs import list_inputs  # noqa: E402
from mghft.scale.ray_engine import (  # noqa: E402
    existing_keys,
    import_descriptions,
    interpret_ray,
    predict_ray,
    read_output,
)
from mghft.serve.predictor import load_predictor  # noqa: E402
from tests import synthetic  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    model = create_model("mghft_tiny", num_classes=len(synthetic.CLASSES), text_encoder=False)
    folder = tmp_path_factory.mktemp("ck") / "best"
    save_checkpoint(model, folder, class_names=list(synthetic.CLASSES))
    return folder


def _stickers(root: Path, n_per_class: int, seed: int = 0) -> list[Path]:
    return [p for p, _, _ in synthetic.write_images(root, n_per_class, seed=seed)]


@pytest.fixture()
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_predict_on_ray_matches_local_and_resumes(local_ray, checkpoint: Path, tmp_path: Path) -> None:
    images = _stickers(tmp_path / "in", 4)
    (tmp_path / "in" / "images" / "broken.png").write_bytes(b"\x89PNG not really")
    locations = list_inputs([tmp_path / "in"])
    assert len(locations) == 13
    out = tmp_path / "out"
    s1 = predict_ray(
        locations, out, model=str(checkpoint), batch_size=4, num_actors=2, cpus_per_actor=0.5, progress=False
    )
    assert (s1.written, s1.errors, s1.already_done, s1.output_rows) == (13, 1, 0, 13)
    table = read_output(out).to_pylist()
    by_path = {r["path"]: r for r in table}
    assert by_path[str(tmp_path / "in" / "images" / "broken.png")]["error"]
    local = load_predictor(checkpoint, device="cpu").predict(images, explain=False)
    for pred in local:
        row = by_path[str(pred.name)]
        assert row["error"] is None and row["label"] == pred.label and row["sha256"] == pred.sha256
        got = np.array([row[f"p_{c}"] for c in synthetic.CLASSES])
        # Ray's batches of 4 and the local batch pick the same patches (near-ties go to the lower patch index,
        # mghft.models.fusion.top_patches), so only float rounding is left: about 1e-7.
        assert np.allclose(got, [pred.probabilities[c] for c in synthetic.CLASSES], atol=1e-5)
        assert row["emoji"] == pred.emoji
    from mghft.errors import UsageError

    with pytest.raises(UsageError, match="leave none of the cluster's 2 for reading"):  # would wait forever otherwise
        predict_ray(locations, out, model=str(checkpoint), num_actors=2, cpus_per_actor=1.0, progress=False)
    s2 = predict_ray(locations, out, model=str(checkpoint), batch_size=4, progress=False)
    assert (s2.written, s2.already_done, s2.output_rows) == (0, 13, 13)  # nothing redone
    extra = _stickers(tmp_path / "more", 1, seed=7)
    s3 = predict_ray(list_inputs([tmp_path / "in", tmp_path / "more"]), out, model=str(checkpoint), progress=False)
    assert (s3.written, s3.output_rows) == (len(extra), 13 + len(extra))


def test_interpret_on_ray_against_a_loopback_server_and_import(local_ray, tmp_path: Path) -> None:
    images = _stickers(tmp_path / "in", 3)
    manifest = tmp_path / "list.csv"
    manifest.write_text("path\n" + "\n".join(str(p.relative_to(tmp_path)) for p in images) + "\n")
    locations = list_inputs([manifest])
    assert locations == [str(p) for p in images]
    out = tmp_path / "desc"
    with LoopbackServer() as server:
        factory = functools.partial(build_backend, "vllm:loopback", base_urls=[server.url])
        s = interpret_ray(locations, out, backend_factory=factory, batch_size=4, concurrency=4, progress=False)
        assert (s.written, s.errors) == (9, 0) and len(server.requests) == 9
        again = interpret_ray(locations, out, backend_factory=factory, progress=False)
        assert again.written == 0 and len(server.requests) == 9
    assert len(existing_keys(out, successes_only=True)) == 9
    with DescriptionStore(tmp_path / "s.sqlite") as store:
        added, failed = import_descriptions(out, store)
        assert (added, failed, len(store)) == (9, 0, 9)
        one = store.get(read_output(out).column("sha256")[0].as_py())
        assert one is not None and one.backend and all(one.views.values())


def test_a_node_leaving_mid_job_loses_and_duplicates_nothing(checkpoint: Path, tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    images = _stickers(tmp_path / "in", 8)  # 24 stickers, 2 per batch: many files
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    worker = cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        out = tmp_path / "out"
        removed = threading.Event()

        def remove_when_started() -> None:
            deadline = time.time() + 120
            while time.time() < deadline and not list(out.glob("part-*.parquet")):
                time.sleep(0.05)
            cluster.remove_node(worker, allow_graceful=False)
            removed.set()

        killer = threading.Thread(target=remove_when_started, daemon=True)
        killer.start()
        summary = predict_ray(
            [str(p) for p in images], out, model=str(checkpoint), batch_size=2, num_actors=2,
            cpus_per_actor=0.5, threads_per_actor=1, progress=False,
        )  # fmt: skip
        killer.join(10)
        assert removed.is_set()
        import pyarrow.parquet as pq

        rows = [r for f in sorted(out.glob("part-*.parquet")) for r in pq.read_table(f).to_pylist()]
        paths = [r["path"] for r in rows]
        assert sorted(paths) == sorted(str(p) for p in images)  # every sticker, exactly once, in the files
        assert all(r["error"] is None for r in rows) and summary.output_rows == len(images)
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_engine_ray_on_the_command_line(local_ray, checkpoint: Path, tmp_path: Path, capsys) -> None:
    from mghft.cli import build_parser, main
    from mghft.errors import UsageError
    from mghft.scale.cli import predict_with_ray

    _stickers(tmp_path / "in", 2)
    labels = tmp_path / "labels"
    common = ["--model", str(checkpoint), "--engine", "ray", "--no-progress", "--cpus-per-actor", "0.5"]
    assert main(["predict", str(tmp_path / "in"), *common, "--out", str(labels)]) == 0
    assert read_output(labels).num_rows == 6
    job = __import__("json").loads((labels / "_job.json").read_text())
    assert job["summary"]["written"] == 6 and job["command"] == "predict"
    with LoopbackServer() as server:
        backend = ["--backend", "vllm:loopback", "--base-url", server.url, "--no-progress"]
        assert main(["interpret", str(tmp_path / "in"), "--engine", "ray", "--out", str(tmp_path / "d"), *backend]) == 0
    store = tmp_path / "s.sqlite"
    assert main(["descriptions", "import", str(tmp_path / "d"), "--store", str(store)]) == 0
    with DescriptionStore(store) as s:
        assert len(s) == 6
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "in"), *common, "--out", str(tmp_path / "x.csv")]) == 2  # a usage error
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Parquet dataset folder" in err
    with pytest.raises(UsageError, match="sticker packs"):
        predict_with_ray(
            build_parser().parse_args(["predict", *common, "--out", str(labels), "--telegram-list", "t.json"])
        )
