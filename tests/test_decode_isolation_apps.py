"""One sticker cannot take a process down: a file that crashes its decoder costs only itself in ``mghft predict``
(local and Ray), ``mghft serve`` (a real loopback server) and ``mghft interpret``."""

from __future__ import annotations

import csv
from pathlib import Path

import httpx
import pytest

from mghft.data import decode_pool
from tests.decode_faults import fault_tgs, self_referencing_tgs
from tests.test_serve_api import make_checkpoint, png_bytes, sticker

CRASHED = "the TGS renderer (rlottie) crashed on this file (SIGABRT)"


@pytest.fixture()
def faults(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(decode_pool.FAULT_ENV, "1")
    decode_pool.shutdown()
    yield
    decode_pool.shutdown()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("isolation") / "tiny")


def _folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (root / f"good{i}.png").write_bytes(png_bytes(sticker(i)))
    (root / "crash.tgs").write_bytes(fault_tgs("abort"))
    (root / "loop.tgs").write_bytes(self_referencing_tgs())
    return root


def test_predict_labels_every_good_sticker_and_names_the_bad_ones(
    faults, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mghft.cli import main

    folder = _folder(tmp_path / "in")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(folder), "--model", str(checkpoint), "--out", str(out), "--no-progress"]) == 0
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(Path(r["path"]).name for r in rows) == [f"good{i}.png" for i in range(4)]
    err = capsys.readouterr().err
    assert f"skipped {folder / 'crash.tgs'}: {CRASHED}" in err
    assert f"skipped {folder / 'loop.tgs'}: Lottie animation refused before rendering" in err
    assert "4 predicted, 2 skipped" in err


def test_serve_answers_422_naming_the_file_and_keeps_serving(faults, checkpoint: Path) -> None:
    from mghft.serve.app import BackgroundServer, ServeSettings, create_app
    from mghft.serve.predictor import load_predictor

    predictor = load_predictor(checkpoint, device="cpu")
    with BackgroundServer(create_app(predictor, ServeSettings())) as srv, httpx.Client(base_url=srv.url) as c:
        good = ("files", ("good.png", png_bytes(sticker(0)), "image/png"))
        assert c.post("/v1/predict", files=[good]).status_code == 200
        for name, data, reason in (
            ("crash.tgs", fault_tgs("abort"), CRASHED),
            ("loop.tgs", self_referencing_tgs(), "Lottie animation refused before rendering"),
        ):
            r = c.post("/v1/predict", files=[("files", (name, data, "application/x-tgsticker"))])
            assert r.status_code == 422, r.text
            assert f"image 0 ({name}): {reason}" in r.text
            assert c.get("/healthz").json() == {"status": "ok"}
        again = c.post("/v1/predict", files=[good])
        assert again.status_code == 200 and again.json()["predictions"][0]["name"] == "good.png"


def test_interpret_records_the_failure_and_goes_on(faults, tmp_path: Path) -> None:
    from mghft.interpret import DescriptionStore, WorkItem, build_backend, run_batch
    from mghft.interpret.loopback import LoopbackServer

    folder = _folder(tmp_path / "in")
    items = [WorkItem(p.name, p) for p in sorted(folder.iterdir())]
    with DescriptionStore(tmp_path / "s.sqlite") as store, LoopbackServer() as server:
        backend = build_backend("compatible:m", base_urls=[server.url])
        summary = run_batch(items, backend, store, concurrency=2, progress=False)
        assert (summary.described, summary.failed) == (4, 2)
        errors = sorted(f.error for f in store.failures())
        assert errors[0].startswith("unreadable image: ") and CRASHED in errors[0]
        assert "Lottie animation refused before rendering" in errors[1]


def test_ray_ends_with_an_error_row_for_the_crashing_sticker(checkpoint: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="Ray is installed by `make install` (the [ray] extra)")
    from mghft.scale.inputs import list_inputs
    from mghft.scale.ray_engine import predict_ray, read_output

    folder = _folder(tmp_path / "in")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
        runtime_env={"env_vars": {decode_pool.FAULT_ENV: "1"}},
    )
    try:
        summary = predict_ray(
            list_inputs([folder]), tmp_path / "out", model=str(checkpoint), batch_size=8, progress=False
        )
    finally:
        ray.shutdown()
    assert (summary.written, summary.errors, summary.output_rows) == (6, 2, 6)
    rows = {Path(r["path"]).name: r for r in read_output(tmp_path / "out").to_pylist()}
    assert CRASHED in rows["crash.tgs"]["error"]
    assert "Lottie animation refused before rendering" in rows["loop.tgs"]["error"]
    for i in range(4):  # the good stickers shared the batch and were labelled
        assert rows[f"good{i}.png"]["error"] is None and rows[f"good{i}.png"]["label"]
