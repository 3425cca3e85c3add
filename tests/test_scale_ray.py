"""Ray Data engine: the same predictions as the local path, one current row per (path, model fingerprint) in a
Delta table (a second model, a path with known bytes, a transient failure, a regrouped retry), resume, and no
sticker lost or duplicated when a worker node leaves a two-node cluster mid-job."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is installed by `make install` (the [ray] extra)")

from mghft.hub import save_checkpoint  # noqa: E402
from mghft.interpret import DescriptionStore, build_backend  # noqa: E402
from mghft.interpret.loopback import LoopbackServer  # noqa: E402
from mghft.models.factory import create_model  # noqa: E402
from mghft.scale import table as out_table  # noqa: E402
from mghft.scale.inputs import list_inputs  # noqa: E402
from mghft.scale.ray_engine import import_descriptions, interpret_ray, predict_ray, read_output  # noqa: E402
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


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


def _one_row_per_path_and_fingerprint(out: Path) -> int:
    """Rows in the table, read by DuckDB straight from the Delta table's files; asserts one per (path, fingerprint)."""
    import duckdb
    from deltalake import DeltaTable

    data = DeltaTable(str(out)).to_pyarrow_dataset()  # noqa: F841 (DuckDB reads the Python variable by name)
    total, keys = duckdb.sql("SELECT count(*), count(DISTINCT (path, fingerprint)) FROM data").fetchall()[0]
    assert total == keys
    return total


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
    assert (s2.written, s2.errors, s2.already_done, s2.output_rows) == (1, 1, 12, 13)  # only the failure retried
    extra = _stickers(tmp_path / "more", 1, seed=7)
    s3 = predict_ray(list_inputs([tmp_path / "in", tmp_path / "more"]), out, model=str(checkpoint), progress=False)
    assert (s3.written, s3.output_rows) == (len(extra) + 1, 13 + len(extra))
    assert _one_row_per_path_and_fingerprint(out) == 13 + len(extra)


def test_a_second_model_writes_its_own_rows_beside_the_first(local_ray, checkpoint: Path, tmp_path: Path) -> None:
    import torch

    torch.manual_seed(1)
    other = tmp_path / "ck_b"
    save_checkpoint(create_model("mghft_tiny", num_classes=len(synthetic.CLASSES), text_encoder=False), other,
                    class_names=list(synthetic.CLASSES))  # fmt: skip
    images = _stickers(tmp_path / "in", 2)
    locations = [str(p) for p in images]
    out = tmp_path / "out"
    a = predict_ray(locations, out, model=str(checkpoint), batch_size=4, progress=False)
    b = predict_ray(locations, out, model=str(other), batch_size=4, progress=False)
    assert a.fingerprint != b.fingerprint and (b.written, b.already_done, b.output_rows) == (6, 0, 6)
    assert out_table.fingerprints(out) == {a.fingerprint: 6, b.fingerprint: 6}
    for fp, ck in ((a.fingerprint, checkpoint), (b.fingerprint, other)):
        rows = {r["path"]: r for r in read_output(out, fp[:8]).to_pylist()}
        for pred in load_predictor(ck, device="cpu").predict(images, explain=False):
            got = [rows[str(pred.name)][f"p_{c}"] for c in synthetic.CLASSES]
            assert np.allclose(got, [pred.probabilities[c] for c in synthetic.CLASSES], atol=1e-3)  # float32 sums
    again = predict_ray(locations, out, model=str(other), batch_size=3, progress=False)
    assert (again.written, again.already_done) == (0, 6)
    assert _one_row_per_path_and_fingerprint(out) == 12


def test_known_bytes_transient_failure_and_a_regrouped_retry(local_ray, checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    first = _stickers(tmp_path / "in1", 1)
    out = tmp_path / "out"
    s1 = predict_ray([str(first[0])], out, model=str(checkpoint), progress=False)
    assert s1.written == 1
    in2 = tmp_path / "in2"
    in2.mkdir()
    a, copy, c, late = in2 / first[0].name, in2 / "b_copy_of_a.png", in2 / "c.png", in2 / "late.png"
    shutil.copy(first[0], a)
    shutil.copy(first[0], copy)
    shutil.copy(first[1], c)
    locations = [str(a), str(copy), str(c), str(late)]  # late.png does not exist yet
    s2 = predict_ray(locations, out, model=str(checkpoint), batch_size=2, progress=False)
    assert (s2.written, s2.errors, s2.already_done) == (4, 1, 0)  # known bytes at new paths get their own rows
    rows = {r["path"]: r for r in read_output(out).to_pylist()}
    assert rows[str(copy)]["label"] == rows[str(first[0])]["label"] and "late.png" in rows[str(late)]["error"]
    shutil.copy(first[2], late)  # the file appears
    s3 = predict_ray(locations, out, model=str(checkpoint), batch_size=3, progress=False)
    assert (s3.written, s3.errors, s3.already_done, s3.output_rows) == (1, 0, 3, 5)
    rows = [r for r in read_output(out).to_pylist() if r["path"] == str(late)]
    assert len(rows) == 1 and rows[0]["error"] is None and rows[0]["label"]  # the success replaced the error

    # a batch retried with another grouping (Ray regrouping blocks after a failure): its rows merge, never add
    table = read_output(out)
    errored = table.to_pylist()
    errored[0] = {**errored[0], "label": None, "error": "a retry that failed"}  # a later error never beats a success
    import pyarrow as pa

    for chunk in (table.slice(0, 2), table.slice(1, 4), pa.Table.from_pylist(errored[:1], schema=table.schema)):
        out_table.commit(out, chunk)
    assert _one_row_per_path_and_fingerprint(out) == 5 and read_output(out).column("error").null_count == 5


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
        other = functools.partial(build_backend, "vllm:another-model", base_urls=[server.url])
        s2 = interpret_ray(locations, out, backend_factory=other, batch_size=4, progress=False)
        assert s2.written == 9 and s2.fingerprint != s.fingerprint and len(server.requests) == 18  # its own rows
    assert out_table.fingerprints(out) == {s.fingerprint: 9, s2.fingerprint: 9}
    from mghft.errors import MghftError

    with DescriptionStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(MghftError, match="rows of 2 writers"):  # never mixed without a choice
            import_descriptions(out, store)
        added, failed = import_descriptions(out, store, fingerprint=s.fingerprint)
        assert (added, failed, len(store)) == (9, 0, 9)
        one = store.get(read_output(out, s.fingerprint).column("sha256")[0].as_py())
        assert one is not None and one.backend and all(one.views.values())


def test_engine_ray_on_the_command_line(local_ray, checkpoint: Path, tmp_path: Path, capsys) -> None:
    from mghft.cli import build_parser, main
    from mghft.errors import UsageError
    from mghft.scale.cli import predict_with_ray

    _stickers(tmp_path / "in", 2)
    labels = tmp_path / "labels"
    common = ["--model", str(checkpoint), "--engine", "ray", "--no-progress", "--cpus-per-actor", "0.5"]
    assert main(["predict", str(tmp_path / "in"), *common, "--out", str(labels)]) == 0
    assert read_output(labels).num_rows == 6
    assert main(["predict", str(tmp_path / "in"), *common, "--out", str(labels), "--uncalibrated"]) == 0
    (fp,) = out_table.fingerprints(labels)  # the checkpoint has no calibration: --uncalibrated changes nothing
    job = json.loads((labels / "_jobs" / f"{fp}.json").read_text())
    assert job["summary"]["already_done"] == 6 and job["command"] == "predict" and job["fingerprint_parts"]
    capsys.readouterr()
    assert main(["catalog", "list", str(labels)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["fingerprint"], e["rows"], e["errors"]) for e in listed] == [(fp, 6, 0)]
    assert main(["catalog", "export", str(labels), "--out", str(tmp_path / "l.csv")]) == 0
    import csv

    exported = list(csv.DictReader((tmp_path / "l.csv").open()))
    assert len(exported) == 6 and len({r["path"] for r in exported}) == 6 and json.loads(exported[0]["emoji"])
    assert main(["catalog", "export", str(labels), "--out", str(tmp_path / "l.pq"), "--format", "parquet"]) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "l.pq").num_rows == 6
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
    assert err.count("error:") == 1 and "table folder" in err
    with pytest.raises(UsageError, match="sticker packs"):
        predict_with_ray(
            build_parser().parse_args(["predict", *common, "--out", str(labels), "--telegram-list", "t.json"])
        )


def test_several_emotions_per_sticker_on_ray_are_rows_of_their_own_fingerprint(
    local_ray, checkpoint: Path, tmp_path: Path
) -> None:
    locations = [str(p) for p in _stickers(tmp_path / "in", 1)]
    out = tmp_path / "out"
    one = predict_ray(locations, out, model=str(checkpoint), progress=False)
    two = predict_ray(locations, out, model=str(checkpoint), top_k=2, progress=False)
    assert one.fingerprint != two.fingerprint and two.written == 3  # other content, other rows
    for r in read_output(out, two.fingerprint).to_pylist():
        assert [e["label"] for e in r["emotions"]][0] == r["label"] and len(r["emotions"]) == 2
        assert all(abs(e["probability"] - r[f"p_{e['label']}"]) < 1e-5 for e in r["emotions"])
    assert all(r["emotions"] is None for r in read_output(out, one.fingerprint).to_pylist())
    # the exports carry the emotions: a list of {label, probability} in Parquet, the same as JSON text in CSV
    import csv

    import pyarrow.parquet as pq

    from mghft.cli import main

    want = {r["path"]: r["emotions"] for r in read_output(out, two.fingerprint).to_pylist()}
    fp = ["--fingerprint", two.fingerprint]
    assert main(["catalog", "export", str(out), *fp, "--out", str(tmp_path / "e.pq"), "--format", "parquet"]) == 0
    assert {r["path"]: r["emotions"] for r in pq.read_table(tmp_path / "e.pq").to_pylist()} == want
    assert main(["catalog", "export", str(out), *fp, "--out", str(tmp_path / "e.csv"), "--format", "csv"]) == 0
    rows = list(csv.DictReader((tmp_path / "e.csv").open(encoding="utf-8")))
    assert {r["path"]: json.loads(r["emotions"]) for r in rows} == want and len(rows) == 3
