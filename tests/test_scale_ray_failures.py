"""Ray Data engine when a batch cannot be labelled: an actor that raises or dies on every attempt gets its stickers
error rows naming why after the capped attempts (:data:`mghft.scale.ray_engine.ATTEMPTS`) and the job ends; an
actor whose model fingerprint differs from the driver's stops the job naming the parts that differ."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is installed by `make install` (the [ray] extra)")

from mghft.hub import save_checkpoint  # noqa: E402
from mghft.models.factory import create_model  # noqa: E402
from mghft.scale import ray_engine  # noqa: E402
from mghft.scale import table as out_table  # noqa: E402
from mghft.scale.inputs import MAX_STICKER_BYTES  # noqa: E402
from mghft.serve.predictor import load_predictor  # noqa: E402
from tests import synthetic  # noqa: E402


def _checkpoint(folder: Path, seed: int) -> Path:
    import torch

    torch.manual_seed(seed)
    model = create_model("mghft_tiny", num_classes=len(synthetic.CLASSES), text_encoder=False)
    save_checkpoint(model, folder, class_names=list(synthetic.CLASSES))
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ck") / "best", 0)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory):
    # a private temp dir: a Ray cluster started elsewhere on this machine is neither joined nor disturbed
    os.environ.setdefault("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray")))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


def _job(locations: list[str], out: Path, checkpoint: Path, actor: type, **kwargs: object) -> ray_engine.RayJobSummary:
    """One predict job with ``actor`` labelling its batches; the fingerprint and schema are the driver's."""
    driver = load_predictor(checkpoint, device="cpu")
    return ray_engine._run(
        locations,
        out,
        actor,
        {"model": str(checkpoint), "options": {"device": "cpu", "threads": 1}, "store": None, **kwargs},
        kind="predict",
        fingerprint=ray_engine.predict_fingerprint(driver, {}),
        schema=ray_engine.predict_schema(driver.class_names),
        batch_size=2,
        num_actors=1,
        gpus_per_actor=0,
        cpus_per_actor=0.5,
        progress=False,
        address=None,
        max_bytes=MAX_STICKER_BYTES,
    )


@pytest.mark.parametrize("how", ["raises", "dies"])
def test_a_batch_failing_every_attempt_becomes_error_rows_naming_why_and_the_job_ends(
    local_ray, checkpoint: Path, tmp_path: Path, how: str
) -> None:
    marks = tmp_path / "attempts"
    marks.mkdir()

    class Failing(ray_engine._PredictActor):
        """Labels every batch except the one holding the poisoned sticker, where it fails on every attempt."""

        def _label(self, batch):  # type: ignore[no-untyped-def]
            paths = batch.column("path").to_pylist()
            if any(p.endswith("poison.png") for p in paths):
                (marks / f"{time.time_ns()}-{os.getpid()}").write_text("\n".join(paths))
                if how == "dies":
                    os._exit(1)  # the worker process is lost, as on an out-of-memory kill
                raise RuntimeError("the decoder blew up")
            return super()._label(batch)

    images = [str(p) for p, _, _ in synthetic.write_images(tmp_path / "in", 2)]  # 6 stickers
    poison = tmp_path / "in" / "poison.png"
    poison.write_bytes(Path(images[0]).read_bytes())
    locations = [*images, str(poison)]  # batches of 2: the poisoned sticker is alone in the last one
    out = tmp_path / "out"
    t0 = time.time()
    summary = _job(locations, out, checkpoint, Failing)
    assert time.time() - t0 < 60, "the job did not end after the capped attempts"
    rows = {r["path"]: r for r in out_table.read_output(out).to_pylist()}
    assert sorted(rows) == sorted(locations)  # one row per path: the failed ones too, the others labelled
    tries = [set(m.read_text().split("\n")) for m in sorted(marks.iterdir())]
    assert len(tries) == ray_engine.ATTEMPTS, tries  # capped, and each attempt was made
    failed = set().union(*tries)  # the poisoned batch (Ray may group the poisoned sticker with another)
    assert str(poison) in failed and len(failed) <= 2
    why = "RuntimeError: the decoder blew up" if how == "raises" else "its worker or node lost each time"
    for path, r in rows.items():
        if path in failed:
            assert f"failed {ray_engine.ATTEMPTS} attempts" in r["error"] and why in r["error"], r["error"]
            assert r["label"] is None and r["fingerprint"] == summary.fingerprint
        else:
            assert r["error"] is None and r["label"], r["error"]
    assert (summary.written, summary.errors, summary.output_rows) == (len(locations), len(failed), len(locations))


def test_an_actor_with_another_model_than_the_driver_stops_the_job_naming_what_differs(
    local_ray, checkpoint: Path, tmp_path: Path
) -> None:
    other = _checkpoint(tmp_path / "other", 1)  # the same architecture and classes, other weights
    locations = [str(p) for p, _, _ in synthetic.write_images(tmp_path / "in", 2)]
    out = tmp_path / "out"
    with pytest.raises(ray_engine.FingerprintMismatchError) as caught:
        _job(locations, out, checkpoint, ray_engine._PredictActor, model=str(other))
    message = str(caught.value)
    driver = ray_engine.predict_fingerprint(load_predictor(checkpoint, device="cpu"), {})
    actor = ray_engine.predict_fingerprint(load_predictor(other, device="cpu"), {})
    assert f"({actor.id} != {driver.id})" in message and actor.differences(driver)
    assert all(d in message for d in actor.differences(driver)) and "weights_sha256" in message, message
    assert "same checkpoint" in caught.value.hint
    assert out_table.read_output(out).num_rows == 0  # nothing the other model wrote reached the table


def test_an_actor_that_cannot_load_its_model_gives_error_rows_naming_why_under_the_drivers_fingerprint(
    local_ray, checkpoint: Path, tmp_path: Path
) -> None:
    locations = [str(p) for p, _, _ in synthetic.write_images(tmp_path / "in", 1)]
    out = tmp_path / "out"
    missing = tmp_path / "not-on-this-node"  # a checkpoint path the workers do not see
    summary = _job(locations, out, checkpoint, ray_engine._PredictActor, model=str(missing))
    rows = out_table.read_output(out).to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(locations) and summary.errors == len(locations)
    for r in rows:
        assert str(missing) in r["error"] and f"failed {ray_engine.ATTEMPTS} attempts" in r["error"], r["error"]
        assert r["fingerprint"] == summary.fingerprint and r["label"] is None
