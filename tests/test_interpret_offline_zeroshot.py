"""The offline backend (OCR and visual cues, no server) and zero-shot classification through the same clients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from mghft.data import DatasetIndex, Sample
from mghft.interpret import DescriptionStore, Interpreter, WorkItem, build_backend, run_batch, run_zeroshot
from mghft.interpret.backends import visual_cues
from mghft.interpret.imaging import prepare_image
from mghft.interpret.loopback import LoopbackServer, Reply, SeenRequest
from mghft.views import VIEWS

CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")


def test_offline_backend_reads_text_and_fills_every_view(tmp_path):
    img = Image.new("RGBA", (220, 90), (0, 0, 0, 0))  # transparent background, composited on white
    draw = ImageDraw.Draw(img)
    draw.text((12, 25), "HELLO 42", fill=(0, 0, 0, 255), font=ImageFont.load_default(size=32))
    path = tmp_path / "text.png"
    img.save(path)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (40, 40), (250, 250, 250)).save(blank)
    with DescriptionStore(tmp_path / "s.sqlite") as store:
        summary = run_batch(
            [WorkItem("t", path), WorkItem("b", blank)], build_backend("offline"), store, progress=False
        )
        assert summary.described == 2 and summary.requests == 0
        with Interpreter(build_backend("offline"), store) as interp:
            desc = interp.describe(path)
            empty = interp.describe(blank)
    assert "HELLO" in desc.ocr_text and "HELLO" in desc.views["intention"]
    assert desc.backend == "offline" and set(desc.views) == set(VIEWS) and all(desc.views.values())
    assert "white background" in desc.views["style"] and "flat areas" in desc.views["style"]
    assert empty.ocr_text == "" and "No written message" in empty.views["intention"]
    assert "No distinct subject" in empty.views["main_role"]


def test_visual_cues_tell_flat_from_photographic():
    import numpy as np

    flat = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(flat).ellipse((16, 16, 48, 48), fill=(220, 30, 30))
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert "cartoon" in visual_cues(flat)["style"] and "red" in visual_cues(flat)["main_role"]
    assert "centred" in visual_cues(flat)["main_role"]
    assert "photo" in visual_cues(noisy)["style"]


def _dataset(folder: Path, n: int) -> DatasetIndex:
    folder.mkdir()
    samples = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.new("RGB", (9 + i, 9), (i * 20 % 256, 80, 80)).save(path)
        samples.append(Sample(path=path, label=i % len(CLASSES), key=f"k{i}"))
    return DatasetIndex(name="tiny", root=folder, classes=CLASSES, samples=samples)


def test_zeroshot_accuracy_unparseable_and_failures(tmp_path):
    index = _dataset(tmp_path / "img", 8)

    def digest(s: Sample) -> str:
        url = prepare_image(s.path.read_bytes()).data_url
        return SeenRequest(
            0, 0, "", "", {"messages": [{"content": [{"type": "image_url", "image_url": {"url": url}}]}]}
        ).image_digest

    truth = {digest(s): s for s in index.samples}
    answers = {
        "k0": '{"label": "anger"}',  # right
        "k1": "The sticker expresses disgust.",  # right, free text
        "k2": "Label: happiness",  # wrong
        "k3": "I cannot say.",  # unparseable -> wrong
        "k4": '```json\n{"label": "Neutral"}\n```',  # right
        "k5": "Could be sadness or anger.",  # unparseable -> wrong
        "k6": None,  # request fails -> not counted, retried next run
        "k7": "It is anger, not surprise.",  # right: k7 is labelled anger (7 % 7 = 0)
    }

    def script(r: SeenRequest) -> Reply:
        sample = truth[r.image_digest]
        text = answers[sample.key]
        assert "Choose exactly one of: anger, disgust" in r.text
        assert r.body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == list(CLASSES)
        return Reply(status=400, content="image rejected") if text is None else Reply(content=text)

    backend = build_backend("compatible:vlm", base_urls=["http://127.0.0.1:1/v1"])
    with LoopbackServer(script=script) as server:
        backend.client.endpoints[0].base_url = server.url
        summary = run_zeroshot(index, backend.client, tmp_path / "zs", concurrency=3, progress=False)
        assert len(server.requests) == 8
    assert summary["answered"] == 7 and summary["failed"] == 1 and summary["unparseable"] == 2
    assert summary["correct"] == 4 and summary["accuracy"] == pytest.approx(4 / 7)
    assert summary["per_class_f1"]["anger"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 0))
    saved = json.loads((tmp_path / "zs" / "summary.json").read_text())
    assert saved["accuracy"] == summary["accuracy"] and saved["unparseable"] == 2
    lines = [json.loads(x) for x in (tmp_path / "zs" / "predictions.jsonl").read_text().splitlines()]
    by_key = {r["key"]: r for r in lines}
    assert by_key["k3"]["prediction"] is None and by_key["k3"]["answer"] == "I cannot say."
    assert by_key["k6"]["error"].startswith("HTTP 400")
    answers["k6"] = '{"label": "surprise"}'  # k6 is labelled surprise
    with LoopbackServer(script=script) as server:
        backend.client.endpoints[0].base_url = server.url
        again = run_zeroshot(index, backend.client, tmp_path / "zs", progress=False)
        assert len(server.requests) == 1  # only the failed image is asked again
    assert again["answered"] == 8 and again["failed"] == 0 and again["correct"] == 5
