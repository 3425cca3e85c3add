"""Inference precision: ONNX files run by the predictor, int8 and bf16 with their agreement measured, refusals."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import mghft
import mghft.export
from mghft.calibration import Calibration, CalibrationRecord
from mghft.cli import main
from mghft.errors import MghftError, NotFoundError
from mghft.export import export_model
from mghft.precision import (
    Agreement,
    CpuSupport,
    PrecisionRefused,
    choose_auto,
    compare_probabilities,
    read_agreements,
)
from mghft.serve.predictor import Predictor, load_predictor
from mghft.train.calibrate import store_calibration
from tests.test_serve_api import CLASSES, make_checkpoint, png_bytes, sticker

NO_BF16 = CpuSupport(frozenset({"avx2", "fma"}), "AVX2", "x86_64")
WITH_BF16 = CpuSupport(frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}), "AVX512", "x86_64")


def _set_cpu(monkeypatch: pytest.MonkeyPatch, cpu: CpuSupport) -> None:
    import mghft.serve.precision_setup as setup

    monkeypatch.setattr(setup, "cpu_support", lambda: cpu)
    monkeypatch.setattr("mghft.precision.cpu_support", lambda: cpu)


def _train_tiny(folder: Path, stickers: list[bytes], steps: int = 25) -> Path:
    """A ``mghft_tiny`` trained for a few steps to tell two kinds of drawn sticker apart (bare images)."""
    torch.manual_seed(0)
    model = mghft.create_model("mghft_tiny", text_encoder=False)
    pred = Predictor(model, class_names=CLASSES, device="cpu")
    x = torch.stack([pred.load(s).tensor for s in stickers])
    y = torch.tensor([i % 2 for i in range(len(stickers))])  # smile or frown (sticker() alternates them)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x)["logits"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return mghft.save_checkpoint(model, folder, class_names=CLASSES)


@pytest.fixture(scope="module")
def stickers() -> list[bytes]:
    return [png_bytes(sticker(i)) for i in range(12)]


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    for i in range(10):
        sticker(100 + i, (72 + 4 * i, 80)).save(folder / f"s{i}.png")
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = make_checkpoint(tmp_path_factory.mktemp("precision") / "tiny", seed=5)
    fits = {c: Calibration(1.7, "val", 100, 1.2, 1.0, 0.2, 0.05, condition=c) for c in ("views", "bare")}
    store_calibration(folder, CalibrationRecord(fits), CLASSES, {"anger": "🔥"})
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, stickers: list[bytes]) -> Path:
    return _train_tiny(tmp_path_factory.mktemp("trained") / "tiny", stickers)


@pytest.fixture(scope="module")
def onnx_file(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = mghft.load_model(checkpoint, text_encoder=False)
    return export_model(model, tmp_path_factory.mktemp("onnx") / "model.onnx")


# ------------------------------------------------------------------------------------------------------------
# ONNX files through the predictor


def test_onnx_file_predicts_as_its_checkpoint(checkpoint: Path, onnx_file: Path, stickers: list[bytes]) -> None:
    ck = load_predictor(checkpoint, device="cpu", text_encoder=False)
    ox = load_predictor(onnx_file, text_encoder=False)
    a, b = ck.predict(stickers, batch_size=5), ox.predict(stickers, batch_size=5)
    # the same calibration (temperature 1.7 from the checkpoint) and emoji override travel inside the file
    temperatures = {"views": 1.7, "bare": 1.7}  # one per input condition, from the record inside the file
    assert ox.calibration.temperatures() == ck.calibration.temperatures() == temperatures and ox.emoji == ck.emoji
    assert ox.emoji["anger"] == "🔥"
    worst = max(abs(p.probabilities[c] - q.probabilities[c]) for p, q in zip(a, b, strict=True) for c in CLASSES)
    assert worst < 1e-5  # the bound the docs state for a float32 export
    for p, q in zip(a, b, strict=True):
        assert (p.label, p.emoji, p.calibrated, p.sha256) == (q.label, q.emoji, q.calibrated, q.sha256)
        assert p.explanation.stage_patches == q.explanation.stage_patches
        assert np.allclose(p.explanation.heatmap, q.explanation.heatmap)
        assert p.explanation.crop_box == q.explanation.crop_box
    info = ox.info()
    assert info["backend"] == "onnxruntime" and info["precision"] == "fp32" and ox.precision == "fp32"
    assert info["classes"] == CLASSES and info["metrics"] == ck.info()["metrics"]


def test_onnx_file_errors_are_named(onnx_file: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no-such.onnx"):
        load_predictor(tmp_path / "no-such.onnx")
    foreign = tmp_path / "foreign.onnx"
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(MghftError, match="not a file written by mghft export"):
        load_predictor(foreign)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(MghftError, match="ONNX Runtime cannot load it"):
        load_predictor(broken)
    ox = load_predictor(onnx_file, text_encoder=False)
    with pytest.raises(mghft.data.ImageLoadError, match="<bytes>"):
        ox.predict([b"\x00" * 10])  # named <bytes>: the same error as a checkpoint's predictor raises


def test_predict_command_runs_an_onnx_file_and_records_precision(onnx_file: Path, calib: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(calib), "--model", str(onnx_file), "--out", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    meta = json.loads(out.with_name("p.jsonl.meta.json").read_text(encoding="utf-8"))
    assert len(rows) == 10 and meta["precision"] == "fp32" and meta["backend"] == "onnxruntime"
    assert meta["calibration"]["bare"] == {"temperature": 1.7, "calibrated": True, "status": rows[0]["calibration"]}
    assert rows[0]["calibrated"] is True and rows[0]["temperature"] == 1.7
    # a calibration set would change nothing for a file (its agreement was measured at export): refused
    with pytest.raises(mghft.errors.UsageError, match="--agreement-set: nothing is measured"):
        load_predictor(onnx_file, text_encoder=False, agreement_set=[calib])


# ------------------------------------------------------------------------------------------------------------
# int8 exports


@pytest.mark.parametrize("which", ["random", "trained"])
def test_int8_export_measures_and_stores_its_agreement(
    which: str, checkpoint: Path, trained: Path, calib: Path, tmp_path: Path
) -> None:
    from mghft.serve.precision_setup import export_with_precision

    folder = checkpoint if which == "random" else trained
    model = mghft.load_model(folder, text_encoder=False)
    path = tmp_path / "m8.onnx"
    agreement = export_with_precision(model, path, "int8", checkpoint=folder, agreement_set=[calib])
    assert agreement is not None and agreement.images == 10 and agreement.calibration == str(calib)
    # the products of two activations (attention scores, rollout) are left in float32
    import onnx

    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    kept = mghft.export.ExportedModel(path).metadata["precision"]["quantization"]["float32_matmuls"]
    assert kept > 0 and ops.count("MatMul") == kept and any("Integer" in o or "Quant" in o for o in ops)
    # what is stored is what the file does: recompute the agreement from the two predictors' outputs
    ref = load_predictor(folder, device="cpu", text_encoder=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a failing agreement warns; it is checked below
        q = load_predictor(path, text_encoder=False, precision="int8")
    files = sorted(calib.iterdir())
    a, b = ref.predict(files, explain=False), q.predict(files, explain=False)
    pa = np.array([[p.probabilities[c] for c in CLASSES] for p in a])
    pb = np.array([[p.probabilities[c] for c in CLASSES] for p in b])
    assert np.isclose(agreement.max_abs_dp, np.abs(pa - pb).max(), atol=1e-6)
    assert agreement.labels_kept == pytest.approx((pa.argmax(1) == pb.argmax(1)).mean())
    assert 0 < agreement.max_abs_dp < 0.5  # int8 moves the probabilities, but not wildly
    info = q.info()
    assert info["precision"] == "int8" and info["agreement"] == agreement.to_dict() and q.precision == "int8"
    assert q.predict([files[0]], explain=False)[0].probabilities  # and it runs
    # a float32 run of an int8 file is refused, naming the export that gives one
    with pytest.raises(PrecisionRefused, match="holds a int8 model"):
        load_predictor(path, text_encoder=False, precision="fp32")
    # auto runs it only when its agreement passes
    if agreement.passed:
        assert load_predictor(path, text_encoder=False, precision="auto").precision == "int8"
    else:
        with pytest.raises(PrecisionRefused, match="FAILS"):
            load_predictor(path, text_encoder=False, precision="auto")


def test_int8_needs_a_calibration_set_and_a_file(checkpoint: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert "no agreement images" in err and "--agreement-set" in err
    with pytest.raises(PrecisionRefused, match="runs from an exported file"):
        load_predictor(checkpoint, device="cpu", precision="int8", text_encoder=False)


def test_export_command_int8_reports_agreement(checkpoint: Path, calib: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "q.onnx"
    code = main(["export", str(checkpoint), "--out", str(out), "--precision", "int8", "--agreement-set", str(calib)])
    printed = capsys.readouterr()
    assert "int8 against fp32 on 10 calibration images" in printed.out and out.is_file()
    meta = mghft.export.ExportedModel(out).metadata["precision"]
    assert meta["precision"] == "int8" and meta["agreement"]["images"] == 10
    assert code == (0 if meta["agreement"]["passed"] else 1)


# ------------------------------------------------------------------------------------------------------------
# bf16 and the CPU check


def test_bf16_is_refused_on_a_cpu_without_bf16(
    checkpoint: Path, calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _set_cpu(monkeypatch, NO_BF16)
    with pytest.raises(PrecisionRefused, match="avx512_bf16"):
        load_predictor(checkpoint, device="cpu", precision="bf16", text_encoder=False)
    out = tmp_path / "o.csv"
    code = main(["predict", str(calib), "--model", str(checkpoint), "--out", str(out), "--precision", "bf16"])
    err = capsys.readouterr().err
    assert code == 2 and "error: --precision bf16: this CPU has no bfloat16" in err and "hint:" in err
    assert not out.exists()  # refused before anything is written
    # auto falls back to fp32 and says why
    p = load_predictor(checkpoint, device="cpu", precision="auto", text_encoder=False)
    assert p.precision == "fp32" and "bf16: this CPU has no bfloat16" in p.precision_reason


@pytest.mark.parametrize("which", ["random", "trained"])
def test_bf16_agreement_is_measured_once_and_stored(
    which: str, checkpoint: Path, trained: Path, calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import mghft.serve.precision_setup as setup

    _set_cpu(monkeypatch, WITH_BF16)
    folder = tmp_path / "ck"
    shutil.copytree(checkpoint if which == "random" else trained, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = load_predictor(folder, device="cpu", precision="bf16", agreement_set=[calib], text_encoder=False)
    stored = read_agreements(folder)["bf16"]
    assert p.precision == "bf16" and p.agreement == stored.to_dict() and stored.images == 10
    files = sorted(calib.iterdir())
    ref = load_predictor(folder, device="cpu", text_encoder=False).predict(files, explain=False)
    got = p.predict(files, explain=False)
    dp = max(abs(a.probabilities[c] - b.probabilities[c]) for a, b in zip(ref, got, strict=True) for c in CLASSES)
    assert dp == pytest.approx(stored.max_abs_dp, abs=1e-6) and dp > 0  # bf16 really ran, and was measured
    # loaded again: the stored agreement is used, nothing is measured
    monkeypatch.setattr(setup, "measure_agreement", lambda *a, **k: pytest.fail("measured again"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = load_predictor(folder, device="cpu", precision="bf16", agreement_set=[calib], text_encoder=False)
    assert again.agreement == stored.to_dict()
    # new weights: measured again
    monkeypatch.undo()
    _set_cpu(monkeypatch, WITH_BF16)
    model = mghft.load_model(folder, text_encoder=False)
    with torch.no_grad():
        model.head.weight.mul_(1.5)
    mghft.save_checkpoint(model, folder, class_names=CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        changed = load_predictor(folder, device="cpu", precision="bf16", agreement_set=[calib], text_encoder=False)
    assert changed.agreement["weights"] != stored.weights


def test_auto_takes_the_fastest_passing_precision() -> None:
    good = Agreement("bf16", 100, 1.0, 0.01, 0.001, passed=True)
    bad = Agreement("bf16", 100, 0.97, 0.13, 0.01, passed=False)
    assert choose_auto(("bf16", "fp32"), {"bf16": good}, WITH_BF16)[0] == "bf16"
    chosen, why = choose_auto(("bf16", "fp32"), {"bf16": bad}, WITH_BF16)
    assert chosen == "fp32" and "97.0% labels kept" in why and "FAILS" in why
    chosen, why = choose_auto(("bf16", "fp32"), {"bf16": good}, NO_BF16)
    assert chosen == "fp32" and "avx512_bf16" in why
    assert choose_auto(("bf16", "fp32"), {}, WITH_BF16)[1] == "bf16: no agreement with fp32 measured"


def test_agreement_arithmetic() -> None:
    ref = np.array([[0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    got = np.array([[0.59, 0.41], [0.55, 0.45], [0.5, 0.5]])
    a = compare_probabilities(ref, got, "int8")
    assert a.labels_kept == pytest.approx(2 / 3) and a.max_abs_dp == pytest.approx(0.35) and not a.passed
    assert compare_probabilities(ref, ref, "int8").passed
    with pytest.raises(ValueError, match="shapes"):
        compare_probabilities(ref, got[:2], "int8")


# ------------------------------------------------------------------------------------------------------------
# the service


def test_service_shows_the_precision(onnx_file: Path) -> None:
    from mghft.serve.app import BackgroundServer, ServeSettings, create_app

    predictor = load_predictor(onnx_file, text_encoder=False)
    with BackgroundServer(create_app(predictor, ServeSettings())) as srv:
        info = httpx.get(srv.url + "/v1/model").json()
        r = httpx.post(srv.url + "/v1/predict", files={"images": ("s.png", png_bytes(sticker(3)), "image/png")})
    assert r.status_code == 200, r.text
    assert info["precision"] == "fp32" and info["backend"] == "onnxruntime" and "agreement" in info
    assert r.json()["precision"] == "fp32"


def test_bf16_keeps_the_discrete_parts_in_float32() -> None:
    """Under bf16 autocast the products run in bfloat16, but the attention maps that feed the rollout and the patch
    choice, and the fused row's attention over the views, come out float32; outside autocast nothing changes."""
    from mghft.models.pvt import SpatialReductionAttention

    torch.manual_seed(0)
    attn = SpatialReductionAttention(64, num_heads=2, sr_ratio=2).eval()
    x = torch.randn(2, 1 + 16, 64)
    with torch.no_grad():
        out32, maps32 = attn(x, (4, 4), 1, need_weights=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out16, maps16 = attn(x, (4, 4), 1, need_weights=True)
    assert maps32.dtype == torch.float32 and maps16.dtype == torch.float32 and out16.dtype == torch.bfloat16
    assert torch.allclose(maps16, maps32, atol=0.05) and not torch.equal(maps16, maps32)
    model = mghft.create_model("mghft_tiny", text_encoder=False).eval()
    feats = torch.randn(2, 4, model.cfg.text.dim)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 64, 64), text_features=feats, explain=True)
    assert out["view_attention"].dtype == torch.float32
