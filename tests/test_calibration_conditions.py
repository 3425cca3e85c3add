"""One temperature per input condition (views present, or every view absent), applied by what each request has,
and temperatures known to be unreliable recorded but never applied."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mghft.calibration import (
    MIN_FIT_ITEMS,
    T_BOUNDS,
    Calibration,
    CalibrationRecord,
    NonFiniteLogitsError,
    apply_temperature,
    calibration_metrics,
    calibration_section,
    fit_temperature,
    input_condition,
)
from mghft.hub import update_checkpoint_meta
from mghft.train.calibrate import store_calibration
from tests.test_serve_api import CLASSES, DESCRIPTION, make_checkpoint, png_bytes, sticker

T_VIEWS, T_BARE = 2.5, 0.5


def _cal(t: float, condition: str) -> Calibration:
    return Calibration(t, "val", 100, 1.2, 1.0, 0.2, 0.05, condition=condition)


@pytest.fixture(scope="module")
def two_temperatures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint whose record holds T = 2.5 with views and T = 0.5 for bare images."""
    folder = make_checkpoint(tmp_path_factory.mktemp("cal-cond") / "tiny")
    store_calibration(folder, CalibrationRecord({"views": _cal(T_VIEWS, "views"), "bare": _cal(T_BARE, "bare")}),
                      CLASSES)  # fmt: skip
    return folder


def _raw_logits(pred) -> np.ndarray:  # noqa: ANN001 - a Prediction
    return np.log([pred.probabilities[c] for c in CLASSES])


def test_the_predictor_picks_each_requests_temperature_by_its_views(two_temperatures: Path) -> None:
    from mghft.serve.predictor import load_predictor

    cal = load_predictor(two_temperatures, device="cpu")
    raw = load_predictor(two_temperatures, device="cpu", calibrated=False)
    images = [png_bytes(sticker(i)) for i in range(3)]
    descriptions = [None, DESCRIPTION, {"style": DESCRIPTION["style"]}]  # bare, all views, one view
    got = cal.predict(images, descriptions, explain=False)
    want = raw.predict(images, descriptions, explain=False)
    for g, w, t, cond in zip(got, want, (T_BARE, T_VIEWS, T_VIEWS), ("bare", "views", "views"), strict=True):
        assert g.input_condition == cond and g.temperature == t and g.calibrated
        assert np.allclose(
            [g.probabilities[c] for c in CLASSES], apply_temperature(_raw_logits(w)[None], t)[0], atol=1e-5
        )
        assert g.calibration.startswith(f"calibrated ({cond}): T = {t:g}") and "100 val items" in g.calibration
        d = g.to_dict(explain=False)
        assert (d["calibrated"], d["temperature"], d["calibration"]) == (True, t, g.calibration)
    assert not want[0].calibrated and want[0].calibration.startswith("uncalibrated (bare): calibration switched off")
    info = cal.info()["calibration"]
    assert info["bare"]["temperature"] == T_BARE and info["views"]["temperature"] == T_VIEWS


def test_views_the_model_was_not_trained_with_leave_a_request_bare(two_temperatures: Path, tmp_path: Path) -> None:
    import shutil

    from mghft.serve.predictor import load_predictor

    folder = tmp_path / "intention-only"
    shutil.copytree(two_temperatures, folder)
    update_checkpoint_meta(folder, provenance={"views": ["intention"]})
    predictor = load_predictor(folder, device="cpu")
    [style_only, with_intention] = predictor.predict(
        [png_bytes(sticker(1))] * 2, [{"style": DESCRIPTION["style"]}, {"intention": DESCRIPTION["intention"]}],
        explain=False,
    )  # fmt: skip
    assert (style_only.input_condition, style_only.temperature) == ("bare", T_BARE)  # the style text is never read
    assert (with_intention.input_condition, with_intention.temperature) == ("views", T_VIEWS)
    assert (
        input_condition([False] * 4) == "bare" and input_condition(torch.tensor([False, True, False, False])) == "views"
    )


def test_a_one_temperature_record_applies_only_to_requests_with_views(two_temperatures: Path, tmp_path: Path) -> None:
    """An older checkpoint's record (one temperature, fitted with views) stays readable and says what it holds."""
    import shutil

    from mghft.serve.predictor import load_predictor

    folder = tmp_path / "old"
    shutil.copytree(two_temperatures, folder)
    old = {"method": "temperature", "temperature": 2.0, "fitted_on": "val", "items": 84, "nll_before": 1.3,
           "nll_after": 1.1, "ece_before": 0.12, "ece_after": 0.07, "at_bound": False}  # fmt: skip
    update_checkpoint_meta(folder, calibration=old)
    predictor = load_predictor(folder, device="cpu")
    raw = load_predictor(folder, device="cpu", calibrated=False)
    image = png_bytes(sticker(4))
    [bare, views] = predictor.predict([image, image], [None, DESCRIPTION], explain=False)
    [raw_bare, raw_views] = raw.predict([image, image], [None, DESCRIPTION], explain=False)
    assert not bare.calibrated and bare.temperature == 1.0 and "older one-temperature record" in bare.calibration
    assert bare.probabilities == pytest.approx(raw_bare.probabilities, abs=1e-6)
    assert views.calibrated and views.temperature == 2.0
    assert np.allclose(
        list(views.probabilities.values()), apply_temperature(_raw_logits(raw_views)[None], 2.0)[0], atol=1e-5
    )
    assert "one-temperature calibration record" in predictor.info()["calibration_note"]


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ({"temperature": 20.0, "at_bound": True}, "stopped at its limit T = 20"),
        ({"temperature": 1.7, "fitted_on": "train"}, "fitted on the train split"),
    ],
)
def test_a_stored_temperature_known_to_be_unreliable_is_not_applied(
    two_temperatures: Path, tmp_path: Path, record: dict, why: str
) -> None:
    import shutil

    from mghft.serve.predictor import load_predictor

    folder = tmp_path / "unreliable"
    shutil.copytree(two_temperatures, folder)
    update_checkpoint_meta(folder, calibration={"method": "temperature", "fitted_on": "val", "items": 3, **record})
    [p] = load_predictor(folder, device="cpu").predict([png_bytes(sticker(2))], [DESCRIPTION], explain=False)
    [raw] = load_predictor(folder, device="cpu", calibrated=False).predict(
        [png_bytes(sticker(2))], [DESCRIPTION], explain=False
    )
    assert p.confidence == pytest.approx(raw.confidence, abs=1e-6)  # T = 1, not the stored one
    assert not p.calibrated and p.temperature == 1.0
    assert p.calibration.startswith("uncalibrated (views):") and why in p.calibration


def test_export_applies_each_rows_temperature_and_says_which(two_temperatures: Path, tmp_path: Path) -> None:
    from mghft.export import ExportedModel, example_inputs, export_model
    from mghft.models.factory import load_model

    model = load_model(two_temperatures, text_encoder=False).eval()
    exported = ExportedModel(export_model(model, tmp_path / "m.onnx"))
    meta = exported.metadata["calibration"]
    assert (meta["views"]["temperature"], meta["bare"]["temperature"]) == (T_VIEWS, T_BARE)
    assert meta["bare"]["status"].startswith("calibrated (bare)") and "temperature" not in exported.metadata
    images, feats, mask = example_inputs(model, batch=3, seed=1)
    mask[1] = False  # bare
    mask[2] = torch.tensor([False, False, True, False])  # one view
    out = exported(images.numpy(), feats.numpy(), mask.numpy())
    t = np.where(mask.numpy().any(1), T_VIEWS, T_BARE)
    assert t.tolist() == [T_BARE, T_BARE, T_VIEWS]
    assert np.allclose(out["probabilities"], apply_temperature(out["logits"], t), atol=1e-5)


def test_the_ray_actor_writes_each_rows_temperature(two_temperatures: Path, tmp_path: Path) -> None:
    """``mghft predict --engine ray`` labels batches through the shared predictor: each row gets its condition's."""
    import pyarrow as pa

    from mghft.scale.ray_engine import _PredictActor

    actor = _PredictActor(str(two_temperatures), {"device": "cpu"}, None)
    data = png_bytes(sticker(3))
    batch = pa.table({"path": ["a.png"], "sha256": ["x"], "data": [data], "read_error": [None]})
    [row] = actor(batch).to_pylist()
    assert (row["calibrated"], row["temperature"]) == (True, T_BARE)
    assert row["calibration"].startswith("calibrated (bare): T = 0.5")


def test_predict_writes_each_rows_temperature_and_both_in_its_metadata(two_temperatures: Path, tmp_path: Path) -> None:
    import csv

    from mghft.cli import main

    sticker(6).save(tmp_path / "a.png")
    out = tmp_path / "labels.csv"
    assert main(["predict", str(tmp_path / "a.png"), "--model", str(two_temperatures), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    [row] = list(csv.DictReader(out.open(encoding="utf-8")))
    assert float(row["temperature"]) == T_BARE and row["calibration"].startswith("calibrated (bare): T = 0.5")
    meta = json.loads((tmp_path / "labels.csv.meta.json").read_text())
    assert meta["calibration"]["views"]["temperature"] == T_VIEWS and meta["calibration"]["bare"]["calibrated"]


# ---------------------------------------------------------------------------------------------------------------
# fits that must not be applied


def _logits(n: int, seed: int, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Overconfident logits (3 x a calibrated model's) and labels drawn from the calibrated model."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, classes))
    p = torch.softmax(torch.as_tensor(z), -1).numpy()
    return 3.0 * z, np.array([rng.choice(classes, p=row) for row in p])


def test_a_fit_at_its_limit_is_recorded_but_not_applied() -> None:
    z = np.tile([[8.0, 0.0], [0.0, 8.0]], (20, 1))
    y = np.tile([1, 0], 20)  # confidently wrong every time
    cal = fit_temperature(z, y)
    assert cal.temperature == pytest.approx(T_BOUNDS[1], rel=0.02)
    assert not cal.applied and cal.applied_temperature == 1.0 and "stopped at its limit" in cal.unreliable
    assert cal.status.startswith("uncalibrated (views): the fit stopped at its limit T = 20")
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal and back.to_dict()["applied_temperature"] == 1.0


def test_one_class_all_right_is_not_a_temperature() -> None:
    """One class, all predicted right: the NLL rounds to 0 and the search stops inside its range, not at a bound."""
    z = np.tile([[30.0, 0.0, 0.0]], (40, 1))
    cal = fit_temperature(z, np.zeros(40, dtype=int))
    assert not cal.applied and "one class" in cal.unreliable


def test_perfect_separation_is_not_a_temperature() -> None:
    z = np.tile([[6.0, 0.0], [0.0, 6.0]], (20, 1))
    cal = fit_temperature(z, np.tile([0, 1], 20), condition="bare")
    assert not cal.applied and "perfect separation" in cal.unreliable
    assert cal.status.startswith("uncalibrated (bare): every one of the 40 val items is predicted right")


def test_too_few_items_are_not_a_temperature() -> None:
    z, y = _logits(MIN_FIT_ITEMS + 200, seed=5)
    assert fit_temperature(z, y).applied  # enough items: applied
    few = fit_temperature(z[: MIN_FIT_ITEMS - 1], y[: MIN_FIT_ITEMS - 1])
    assert not few.applied and f"only {MIN_FIT_ITEMS - 1} val items" in few.unreliable
    assert math.isfinite(few.temperature)  # the fitted value is still recorded


def test_a_fit_on_another_split_is_not_applied() -> None:
    z, y = _logits(300, seed=6)
    cal = fit_temperature(z, y, fitted_on="train")
    assert not cal.applied and "train split" in cal.unreliable


def test_nan_logits_are_an_error_naming_their_source() -> None:
    z, y = _logits(60, seed=7)
    z[[3, 17]] = np.nan
    y[3] = y[17] = 0  # argmax of a NaN row is 0: it must not count as right
    with pytest.raises(
        NonFiniteLogitsError, match=r"checkpoint runs/x/best on val gave NaN .* 2 of 60 items \(rows 3, 17\)"
    ):
        fit_temperature(z, y, produced_by="checkpoint runs/x/best on val")
    probs = apply_temperature(np.nan_to_num(z), 1.0)
    probs[3] = np.nan
    with pytest.raises(NonFiniteLogitsError, match="rows 3"):
        calibration_metrics(probs, y)
    record = CalibrationRecord({"views": _cal(2.0, "views"), "bare": _cal(1.5, "bare")})
    with pytest.raises(NonFiniteLogitsError):
        calibration_section(z, y, record, "test", "views")


def test_a_predictor_refuses_nan_logits_naming_the_model_and_images(two_temperatures: Path) -> None:
    from mghft.serve.predictor import load_predictor

    predictor = load_predictor(two_temperatures, device="cpu", text_encoder=False)
    with torch.no_grad():
        predictor.model.head.bias[0] = float("nan")
    with pytest.raises(NonFiniteLogitsError, match=r"model \S*tiny on <bytes> gave NaN or infinite logits for 1 of 1"):
        predictor.predict([png_bytes(sticker(1))], explain=False)  # never a prediction of class 0 with NaN odds


def test_a_report_section_uses_each_items_condition() -> None:
    z, y = _logits(50, seed=8)
    record = CalibrationRecord({"views": _cal(2.0, "views"), "bare": _cal(0.5, "bare")})
    conds = ["views"] * 30 + ["bare"] * 20
    section, curves = calibration_section(z, y, record, "test", conds)
    assert section["condition"] == "mixed" and section["items"] == {"views": 30, "bare": 20}
    after = apply_temperature(z, np.array([2.0] * 30 + [0.5] * 20))
    assert section["after"] == calibration_metrics(after, y)
    assert np.allclose(curves["after (views T = 2, bare T = 0.5)"], after)


def test_a_record_round_trips_and_rejects_nonsense() -> None:
    record = CalibrationRecord(
        {"views": _cal(2.0, "views"), "bare": fit_temperature(*_logits(10, 1), condition="bare")}
    )
    back = CalibrationRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert back == record and back.temperatures() == {"views": 2.0, "bare": 1.0}
    with pytest.raises(ValueError, match="unknown condition"):
        CalibrationRecord.from_dict({"method": "temperature", "conditions": {"partial": {"temperature": 1.0}}})
    with pytest.raises(ValueError, match="holds a 'bare' fit"):
        CalibrationRecord({"views": _cal(2.0, "bare"), "bare": _cal(2.0, "bare")})


def test_calibrate_refuses_the_train_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mghft.cli import main

    folder = make_checkpoint(tmp_path / "ck")
    assert main(["calibrate", str(folder), "--split", "train"]) == 2
    err = capsys.readouterr().err
    assert "error: --split train would fit on the items the model was trained on" in err
    assert "hint: use --split val" in err


def test_the_warning_for_a_temperature_not_applied_names_its_stickers() -> None:
    from mghft.calibration import not_fitted
    from mghft.train.calibrate import unreliable_warning

    text = unreliable_warning(not_fitted("bare", "only 3 val items"))
    assert text.startswith("the temperature for stickers with every view absent is not applied"), text
