"""Several emotions per sticker: --top-k and --min-probability in `mghft predict`, each emotion with its
(calibrated) probability in the output."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mghft.cli import main
from mghft.hub import save_checkpoint, update_checkpoint_meta
from mghft.models.factory import create_model
from mghft.selection import select_emotions
from mghft.serve.predictor import load_predictor
from tests import synthetic


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ck") / "best"
    save_checkpoint(create_model("mghft_tiny", num_classes=len(synthetic.CLASSES), text_encoder=False), folder,
                    class_names=list(synthetic.CLASSES))  # fmt: skip
    calibration = {"method": "temperature", "temperature": 0.5, "fitted_on": "val", "items": 30, "nll_before": 1.0,
                   "nll_after": 0.9, "ece_before": 0.2, "ece_after": 0.1}  # fmt: skip
    update_checkpoint_meta(folder, calibration=calibration)
    return folder


def test_select_emotions() -> None:
    probs = {"anger": 0.2, "happiness": 0.5, "sadness": 0.3}
    assert [e["label"] for e in select_emotions(probs, top_k=2)] == ["happiness", "sadness"]
    assert [e["label"] for e in select_emotions(probs, min_probability=0.25)] == ["happiness", "sadness"]
    assert select_emotions(probs, top_k=1, min_probability=0.6) == []
    assert select_emotions(probs, top_k=3)[2] == {"label": "anger", "probability": 0.2}


def test_predict_writes_every_chosen_emotion_with_its_calibrated_probability(
    checkpoint: Path, tmp_path: Path, capsys
) -> None:
    images = [p for p, _, _ in synthetic.write_images(tmp_path / "in", 2)]
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(tmp_path / "in"), "--model", str(checkpoint), "--out", str(out), "--top-k", "2",
                 "--no-progress"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    calibrated = {str(p.name): p for p in load_predictor(checkpoint, device="cpu").predict(images, explain=False)}
    assert len(rows) == len(images)
    for r in rows:
        ranked = sorted(calibrated[r["path"]].probabilities.items(), key=lambda kv: -kv[1])[:2]
        assert [(e["label"], e["probability"]) for e in r["emotions"]] == [(c, pytest.approx(p, abs=1e-5))
                                                                          for c, p in ranked]  # fmt: skip
        assert r["emotions"][0]["label"] == r["label"]
    table = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "in"), "--model", str(checkpoint), "--out", str(table),
                 "--min-probability", "0.2", "--no-progress"]) == 0  # fmt: skip
    for r in csv.DictReader(table.open()):
        chosen = dict(part.split(":") for part in r["emotions"].split())
        assert chosen and all(float(v) >= 0.2 for v in chosen.values())
        assert set(chosen) == {c for c in synthetic.CLASSES if float(r[f"p_{c}"]) >= 0.2}
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "in"), "--model", str(checkpoint), "--out", str(out), "--top-k", "4"]) == 2
    assert "--top-k 4: give 1 to 3" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "in"), "--model", str(checkpoint), "--out", str(out),
                 "--min-probability", "1.5"]) == 2  # fmt: skip


def test_the_service_answers_several_emotions_per_sticker(checkpoint: Path) -> None:
    import io

    import httpx

    from mghft.serve.app import BackgroundServer, ServeSettings, create_app

    buf = io.BytesIO()
    synthetic.sticker("anger", __import__("random").Random(0)).save(buf, format="PNG")
    files = {"images": ("s.png", buf.getvalue(), "image/png")}
    with BackgroundServer(create_app(load_predictor(checkpoint, device="cpu"), ServeSettings())) as srv:
        r = httpx.post(srv.url + "/v1/predict?top_k=2&explain=false", files=files)
        plain = httpx.post(srv.url + "/v1/predict?explain=false", files=files)
        bad = httpx.post(srv.url + "/v1/predict?top_k=9", files=files)
    assert r.status_code == 200, r.text
    [p] = r.json()["predictions"]
    ranked = sorted(p["probabilities"].items(), key=lambda kv: -kv[1])[:2]
    assert [(e["label"], e["probability"]) for e in p["emotions"]] == [(c, pytest.approx(v, abs=1e-5))
                                                                      for c, v in ranked]  # fmt: skip
    assert "emotions" not in plain.json()["predictions"][0]
    assert bad.status_code == 422 and "3 classes" in bad.text
