"""Calibrated probabilities (temperature scaling on val) and emoji tags written into sticker packs."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mghft.calibration import (
    MIN_FIT_ITEMS,
    Calibration,
    CalibrationRecord,
    apply_temperature,
    calibration_metrics,
    fit_temperature,
)
from mghft.emoji import DEFAULT_EMOJI, PackFormatError, emoji_map, emoji_tags, telegram_stickers, whatsapp_stickers
from mghft.errors import UsageError
from tests import synthetic


def _overconfident(n: int, k: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) (a calibrated model), and logits scale * z (an overconfident one)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, k))
    p = torch.softmax(torch.as_tensor(z), -1).numpy()
    y = np.array([rng.choice(k, p=row) for row in p])
    return scale * z, y


def test_temperature_recovers_the_overconfidence_and_lowers_held_out_ece() -> None:
    val_logits, y_val = _overconfident(4000, 7, 3.0, seed=0)
    test_logits, y_test = _overconfident(4000, 7, 3.0, seed=1)
    cal = fit_temperature(val_logits, y_val)
    assert cal.temperature == pytest.approx(3.0, rel=0.1)
    assert cal.nll_after < cal.nll_before and cal.ece_after < cal.ece_before
    before = calibration_metrics(apply_temperature(test_logits, 1.0), y_test)
    after = calibration_metrics(apply_temperature(test_logits, cal.temperature), y_test)
    assert after["ece"] < 0.5 * before["ece"]  # held-out: calibration carries over
    assert after["nll"] < before["nll"]
    assert after["accuracy"] == before["accuracy"]  # scaling never changes the predicted class


def test_calibration_round_trips_and_rejects_nonsense() -> None:
    cal = fit_temperature(*_overconfident(500, 3, 2.0, seed=2))
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    for bad in ({"temperature": 0}, {"temperature": "2"}, {"temperature": float("nan")}, {"method": "vector"}):
        with pytest.raises(ValueError):
            Calibration.from_dict({"temperature": 1.0, **bad})
    with pytest.raises(ValueError, match="empty val"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))


def test_emoji_tags_top_emotion_then_the_nearly_as_likely() -> None:
    m = emoji_map(["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"])
    assert emoji_tags({"happiness": 0.9, "surprise": 0.05, "neutral": 0.05}, m) == [DEFAULT_EMOJI["happiness"]]
    two = emoji_tags({"happiness": 0.45, "surprise": 0.35, "neutral": 0.2}, m)
    assert two == [DEFAULT_EMOJI["happiness"], DEFAULT_EMOJI["surprise"]]  # 0.2 < 0.5 x 0.45
    flat = dict.fromkeys(["anger", "fear", "sadness", "surprise"], 0.25)
    assert len(emoji_tags(flat, m)) == 3  # never more than WhatsApp's 3
    with pytest.raises(UsageError, match="no emoji for class 'meh'"):
        emoji_map(["happiness", "meh"])
    with pytest.raises(UsageError, match="not classes"):
        emoji_map(["happiness"], {"joy": "x"})
    assert emoji_map(["happiness", "meh"], {"meh": "\U0001f611"})["meh"] == "\U0001f611"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for 2 epochs on generated stickers (its run folder)."""
    from mghft.train.config import DataConfig
    from mghft.train.loop import train
    from tests.test_train import _cfg

    root = tmp_path_factory.mktemp("calib")
    manifest = synthetic.write_manifest(root / "data", n_per_class=10)
    cfg = _cfg(root, DataConfig(format="manifest", root=str(manifest)), bootstrap=20)
    train(cfg)
    return Path(cfg.output)


def test_training_stores_a_temperature_per_condition_and_reports_calibration(trained: Path) -> None:
    meta = json.loads((trained / "best" / "config.json").read_text())
    record = CalibrationRecord.from_dict(meta["calibration"])
    assert meta["calibration"]["format"] == 2 and set(meta["calibration"]["conditions"]) == {"views", "bare"}
    for cal in record.conditions.values():
        assert cal.fitted_on == "val" and 0 < cal.items < MIN_FIT_ITEMS and cal.nll_after <= cal.nll_before + 1e-9
        # this tiny run's val split is too small for a temperature to be applied: recorded, with the reason
        assert not cal.applied and f"only {cal.items} val items" in cal.unreliable
    assert meta["emoji"] == {c: DEFAULT_EMOJI[c] for c in synthetic.CLASSES}
    results = json.loads((trained / "results.json").read_text())
    assert results["calibration"]["conditions"] == meta["calibration"]["conditions"]
    report = (trained / "test" / "report.md").read_text()
    assert "ECE before" in report and "NLL after" in report and "uncalibrated (bare): only" in report
    for name in ("test", "test_bare"):
        assert (trained / "test" / f"reliability_{name}.png").stat().st_size > 1000
    sections = {s["name"]: s for s in json.loads((trained / "test" / "metrics.json").read_text())["calibration"]}
    assert set(sections) == {"val", "val_bare", "test", "test_bare"}
    assert sections["test_bare"]["temperatures"] == {"bare": 1.0} and sections["test_bare"]["condition"] == "bare"


def test_predictor_and_export_say_why_they_are_uncalibrated(trained: Path, tmp_path: Path) -> None:
    from mghft.export import ExportedModel, export_model
    from mghft.models.factory import load_model
    from mghft.serve.predictor import load_predictor

    image = synthetic.sticker("happiness", random.Random(3))
    p_cal = load_predictor(trained / "best", device="cpu")
    p_raw = load_predictor(trained / "best", device="cpu", calibrated=False)
    [a] = p_cal.predict([image], explain=False)
    [b] = p_raw.predict([image], explain=False)
    assert not a.calibrated and a.temperature == 1.0 and a.input_condition == "bare"
    assert a.calibration.startswith("uncalibrated (bare): only") and "at least 30" in a.calibration
    assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
    assert a.label == b.label and a.emoji and a.emoji[0] == DEFAULT_EMOJI[a.label]
    assert a.to_dict()["calibrated"] is False and a.to_dict()["emoji"] == a.emoji

    model = load_model(trained / "best", text_encoder=False).eval()
    exported = ExportedModel(export_model(model, tmp_path / "m.onnx"))
    meta = exported.metadata["calibration"]
    assert meta["bare"]["calibrated"] is False and meta["bare"]["temperature"] == 1.0
    assert meta["bare"]["status"] == a.calibration


def test_calibrate_command_refits_an_uncalibrated_checkpoint(trained: Path, tmp_path: Path) -> None:
    from mghft.cli import main

    ck = tmp_path / "best"
    shutil.copytree(trained / "best", ck)
    for name in ("train.yaml", "split.json"):  # a copy of the run folder, without its calibration
        shutil.copy(trained / name, tmp_path / name)
    meta = json.loads((ck / "config.json").read_text())
    fitted = meta.pop("calibration")["conditions"]
    (ck / "config.json").write_text(json.dumps(meta))
    assert main(["calibrate", str(ck)]) == 0
    again = json.loads((ck / "config.json").read_text())["calibration"]["conditions"]
    for c in ("views", "bare"):  # same val split, same model
        assert again[c]["temperature"] == pytest.approx(fitted[c]["temperature"], rel=1e-6)
        assert again[c]["unreliable"] == fitted[c]["unreliable"]
    assert (ck / "calibration" / "reliability_val.png").exists()
    assert (ck / "calibration" / "reliability_val_bare.png").exists()
    from mghft.train.calibrate import calibrate_checkpoint

    with pytest.raises(UsageError, match="test split"):
        calibrate_checkpoint(ck, None, split="test")  # tuning on test is refused before anything runs


def _pack(root: Path, images: list[Path]) -> Path:
    pack = root / "pack"
    (pack / "cats").mkdir(parents=True)
    stickers = []
    for i, img in enumerate(images):
        shutil.copy(img, pack / "cats" / f"{i:02d}.png")
        stickers.append({"image_file": f"{i:02d}.png", "emojis": ["\u2615"], "accessibility_text": f"sticker {i}"})
    contents = {
        "android_play_store_link": "",
        "ios_app_store_link": "",
        "sticker_packs": [
            {
                "identifier": "cats",
                "name": "Cats",
                "publisher": "me",
                "tray_image_file": "tray.png",
                "image_data_version": "1",
                "stickers": stickers,
            }
        ],
    }
    (pack / "contents.json").write_text(json.dumps(contents, ensure_ascii=False))
    return pack


def test_predict_fills_a_whatsapp_pack_and_a_telegram_list(trained: Path, tmp_path: Path) -> None:
    from mghft.cli import main

    items = synthetic.write_images(tmp_path / "imgs", n_per_class=1)
    images = [p for p, _, _ in items]
    pack = _pack(tmp_path, images)
    before = json.loads((pack / "contents.json").read_text())
    tg = tmp_path / "tg" / "list.json"
    tg.parent.mkdir()
    shutil.copy(images[0], tg.parent / "a.png")
    tg_items = [
        {"sticker": "a.png", "format": "static", "emoji_list": ["\u2615"], "keywords": ["cat"]},
        {"sticker": "CAACAgIAAxkBAAEBfileid", "format": "static", "emoji_list": ["\U0001f600"]},
    ]
    tg.write_text(json.dumps(tg_items))
    out = tmp_path / "pred.csv"
    code = main(
        ["predict", "--model", str(trained / "best"), "--whatsapp-pack", str(pack), "--telegram-list", str(tg),
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    after = json.loads((pack / "contents.json").read_text())
    allowed = set(DEFAULT_EMOJI.values())
    for old, new in zip(before["sticker_packs"][0]["stickers"], after["sticker_packs"][0]["stickers"], strict=True):
        assert 1 <= len(new["emojis"]) <= 3 and set(new["emojis"]) <= allowed
        assert {k: v for k, v in new.items() if k != "emojis"} == {k: v for k, v in old.items() if k != "emojis"}
    assert {k: v for k, v in after["sticker_packs"][0].items() if k != "stickers"} == {
        k: v for k, v in before["sticker_packs"][0].items() if k != "stickers"
    }
    assert after["android_play_store_link"] == ""
    got = json.loads(tg.read_text())
    assert set(got[0]["emoji_list"]) <= allowed and got[0]["keywords"] == ["cat"]
    assert got[1] == tg_items[1]  # a file_id is nobody's local file: kept as it was
    rows = out.read_text(encoding="utf-8").splitlines()
    assert rows[0].split(",")[:4] == ["path", "label", "confidence", "emoji"] and len(rows) == 1 + len(images) + 1


def test_malformed_pack_files_name_the_field(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "contents.json").write_text(json.dumps({"sticker_packs": [{"stickers": [{"emojis": []}]}]}))
    with pytest.raises(PackFormatError, match=r"sticker_packs\[0\]\.stickers\[0\]\.image_file"):
        whatsapp_stickers(tmp_path / "w")
    (tmp_path / "w" / "contents.json").write_text(json.dumps({"sticker_packs": [{"stickers": [{"image_file": "x"}]}]}))
    with pytest.raises(PackFormatError, match="not found"):
        whatsapp_stickers(tmp_path / "w")
    (tmp_path / "t.json").write_text(json.dumps([{"sticker": "a.png", "format": "gif"}]))
    with pytest.raises(PackFormatError, match=r"\[0\]\.format"):
        telegram_stickers(tmp_path / "t.json")
    (tmp_path / "t.json").write_text(json.dumps({"stickers": [{"sticker": "x/a.png"}]}))
    with pytest.raises(PackFormatError, match=r"stickers\[0\]\.sticker 'x/a.png' is not a file"):
        telegram_stickers(tmp_path / "t.json")


def test_evaluate_reports_calibration_before_and_after(trained: Path, tmp_path: Path) -> None:
    from mghft.cli import main

    out = tmp_path / "ev"
    args = ["evaluate", "--model", str(trained / "best"), "--config", str(trained / "train.yaml")]
    assert main([*args, "--split", "test", "--out", str(out), "--bootstrap", "0"]) == 0
    report = (out / "report.md").read_text()
    assert "ECE before" in report and (out / "reliability_test.png").exists()
    sections = json.loads((out / "metrics.json").read_text())["calibration"]
    assert [s["name"] for s in sections] == ["test", "test_bare"]
    record = CalibrationRecord.from_dict(json.loads((trained / "best" / "config.json").read_text())["calibration"])
    for section in sections:
        assert section["split"] == "test"
        assert section["temperatures"] == {c: record[c].applied_temperature for c in section["temperatures"]}
        assert section["after"]["accuracy"] == section["before"]["accuracy"]
