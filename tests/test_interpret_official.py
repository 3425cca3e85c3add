"""Interchange with the public code's format: a SER30K annotation JSON whose ``text`` holds the four sections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mghft.cli import main
from mghft.data import read_ser30k
from mghft.interpret import DescriptionStore, export_official_json, import_official_json
from mghft.interpret.loopback import LoopbackServer
from mghft.views import OFFICIAL_HEADERS, VIEWS, parse_official_text

CATEGORIES = [
    {"id": i + 1, "name": n}
    for i, n in enumerate(("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"))
]


def _ser30k(root: Path, n: int = 6) -> Path:
    records = []
    for i in range(n):
        topic = f"topic{i % 2}"
        (root / "Images" / topic).mkdir(parents=True, exist_ok=True)
        name = f"s{i}.png"
        Image.new("RGB", (10 + i, 9), (i * 30 % 256, 20, 40)).save(root / "Images" / topic / name)
        anno = i % 7 + 1
        records.append(
            {
                "topic": topic,
                "file_name": name,
                "text": f"ocr {i}",
                "anno1": anno,
                "anno2": anno,
                "anno3": anno,
                "anno": anno,
            }  # fmt: skip
        )
    path = root / "Annotations" / "image-level" / "train.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"annotations": records, "categories": CATEGORIES}))
    return path


def test_describe_export_import_round_trip(tmp_path):
    root = tmp_path / "SER30K"
    annotations = _ser30k(root)
    store_path = tmp_path / "store.sqlite"
    with LoopbackServer() as server:
        args = ["interpret", "--dataset", "ser30k", "--root", str(root), "--split", "train", "--store", str(store_path),
                "--backend", "compatible:m", "--base-url", server.url, "--no-progress"]  # fmt: skip
        assert main(args) == 0
        assert len(server.requests) == 6
    out = tmp_path / "Annotations_mg" / "train.json"
    with DescriptionStore(store_path) as store:
        report = export_official_json(store, annotations, out)  # Images folder found beside Annotations
        assert report.written == 6 and not report.missing_description
        originals = {d.image_sha256: d.views for d in store}
    exported = json.loads(out.read_text())
    source = json.loads(annotations.read_text())
    assert exported["categories"] == source["categories"]
    for rec, src in zip(exported["annotations"], source["annotations"], strict=True):
        assert {k: v for k, v in rec.items() if k != "text"} == {k: v for k, v in src.items() if k != "text"}
        assert rec["text"].startswith(OFFICIAL_HEADERS["intention"] + ": ")
        assert all(h in rec["text"] for h in OFFICIAL_HEADERS.values())
        assert set(parse_official_text(rec["text"])) == set(VIEWS)
    with DescriptionStore(tmp_path / "back.sqlite") as back:
        report = import_official_json(out, root / "Images", back, model="gpt-4o")
        assert report.written == 6 and not report.incomplete
        assert {d.image_sha256: d.views for d in back} == originals
        assert {d.backend for d in back} == {"official-import"} and {d.model for d in back} == {"gpt-4o"}
        assert import_official_json(out, root / "Images", back).existing == 6
    # the data layer reads the exported file as descriptions, by key
    index = read_ser30k(root, "train", descriptions_from=out)
    assert all(s.descriptions and set(s.descriptions) == set(VIEWS) for s in index.samples)
    assert [s.ocr_text for s in index.samples] == [f"ocr {i}" for i in range(6)]


def test_export_with_missing_descriptions_and_incomplete_import(tmp_path):
    root = tmp_path / "SER30K"
    annotations = _ser30k(root, n=3)
    with DescriptionStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(ValueError, match="3 records have no description"):
            export_official_json(store, annotations, tmp_path / "out.json")
        assert not (tmp_path / "out.json").exists()
        report = export_official_json(store, annotations, tmp_path / "out.json", on_missing="empty")
        assert len(report.missing_description) == 3
        assert [r["text"] for r in json.loads((tmp_path / "out.json").read_text())["annotations"]] == ["", "", ""]
        report = export_official_json(store, annotations, tmp_path / "keep.json", on_missing="keep")
        assert json.loads((tmp_path / "keep.json").read_text())["annotations"][0]["text"] == "ocr 0"
    data = json.loads(annotations.read_text())
    data["annotations"][0]["text"] = "#The sticker's intention: joy #The sticker's style: flat"  # two views only
    data["annotations"][1]["file_name"] = "gone.png"
    data["annotations"][2]["text"] = (
        "preamble dropped #The sticker's intention: a #The sticker's style: b "
        "#The sticker's main role: c #The sticker's gesture: d"
    )
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(data))
    with DescriptionStore(tmp_path / "t.sqlite") as store:
        report = import_official_json(partial, root / "Images", store)
        assert report.incomplete == ["topic0/s0.png"] and report.missing_image == ["topic1/gone.png"]
        assert report.written == 1
        (desc,) = list(store)
        assert desc.views == {"intention": "a", "style": "b", "main_role": "c", "posture_expression": "d"}
