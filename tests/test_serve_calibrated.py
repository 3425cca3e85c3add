"""A calibrated checkpoint behind the service: the API and the web page give calibrated probabilities, say so,
and carry the emotion's emoji."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from mghft.calibration import Calibration, CalibrationRecord
from mghft.emoji import DEFAULT_EMOJI
from mghft.serve.app import BackgroundServer, ServeSettings, create_app
from mghft.serve.predictor import load_predictor
from mghft.train.calibrate import store_calibration
from tests.test_serve_api import CLASSES, make_checkpoint, sticker
from tests.test_serve_web import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = make_checkpoint(tmp_path_factory.mktemp("serve-cal") / "tiny")
    views = Calibration(2.5, "val", 100, 1.2, 1.0, 0.2, 0.05, condition="views")
    bare = Calibration(2.5, "val", 100, 1.2, 1.0, 0.2, 0.05, condition="bare")
    store_calibration(folder, CalibrationRecord({"views": views, "bare": bare}), CLASSES)
    return folder


def test_api_answers_calibrated_probabilities_and_says_so(calibrated: Path) -> None:
    cal = load_predictor(calibrated, device="cpu")
    raw = load_predictor(calibrated, device="cpu", calibrated=False)
    buf = io.BytesIO()
    sticker(5).save(buf, format="PNG")
    with BackgroundServer(create_app(cal, ServeSettings())) as srv:
        info = httpx.get(srv.url + "/v1/model").json()
        r = httpx.post(srv.url + "/v1/predict", files={"images": ("s.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    [p] = r.json()["predictions"]
    assert info["calibration"]["bare"] == {"temperature": 2.5, "calibrated": True, "status": p["calibration"]}
    assert p["calibrated"] is True and p["temperature"] == 2.5 and p["input_condition"] == "bare"
    assert p["emoji"][0] == DEFAULT_EMOJI[p["label"]]
    [want] = raw.predict([buf.getvalue()], explain=False)
    logits = np.log([want.probabilities[c] for c in CLASSES]) / 2.5
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    assert np.allclose([p["probabilities"][c] for c in CLASSES], expected, atol=2e-6)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_page_says_the_probabilities_are_calibrated(calibrated: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    predictor = load_predictor(calibrated, device="cpu")
    path = tmp_path / "s.png"
    sticker(9).save(path)
    [want] = predictor.predict([path], explain=False)
    with BackgroundServer(create_app(predictor, ServeSettings())) as srv, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(srv.url + "/")
            page.set_input_files("#file", str(path))
            page.wait_for_selector("#label:not(:empty)")  # a selector: the page's CSP forbids eval
            assert page.text_content("#confidence") == f"{100 * want.confidence:.1f}%"
            assert "calibrated on the validation split" in page.text_content("#calibration")
            page.wait_for_selector("#emoji img.emoji")
            shown = page.eval_on_selector_all("#emoji img", "els => els.map(e => e.alt)")
            assert shown == list(want.emoji)
        finally:
            browser.close()
    assert json.dumps(want.to_dict(explain=False))  # serialisable as the API sends it
