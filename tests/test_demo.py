"""The newcomer demo: the emoji mapping, the generated dataset, and the whole pipeline at its small size."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from mghft.data import SER30K_CLASSES, read_manifest
from mghft.demo.dataset import SIZES, artworks, build_dataset, load_captions, load_emoji_emotions


def test_mapping_covers_every_class_on_both_sides_with_artwork_in_both_styles() -> None:
    rows = load_emoji_emotions()
    arts = artworks()
    for emotion in SER30K_CLASSES:
        sides = {r.split for r in rows if r.emotion == emotion}
        assert sides == {"train", "heldout"}, emotion
    for r in rows:
        assert r.reason and r.name and r.emoji
        for art in arts.values():
            assert art.svg(r.codepoint).lstrip().startswith("<"), (art.name, r.codepoint)
    captions = load_captions()
    for emotion in SER30K_CLASSES:
        assert captions[(emotion, "train")] and captions[(emotion, "heldout")]
        assert not set(captions[(emotion, "train")]) & set(captions[(emotion, "heldout")])


def test_dataset_holds_out_emoji_and_artwork_and_is_reproducible(tmp_path: Path) -> None:
    a = build_dataset(tmp_path / "a", "small", seed=3)
    b = build_dataset(tmp_path / "b", "small", seed=3)
    index = read_manifest(a.manifest)
    parts = a.split.apply(index)
    group = {p: {s.group for s in part.samples} for p, part in parts.items()}
    art = {p: {s.meta["artwork"] for s in part.samples} for p, part in parts.items()}
    assert not group["test"] & (group["train"] | group["val"])  # no held-out emoji seen in training or selection
    assert group["val"] <= group["train"]
    assert art == {"train": {"twemoji"}, "val": {"openmoji"}, "test": {"openmoji"}}
    assert {s.meta["license"] for s in parts["test"].samples} == {"CC BY-SA 4.0"}
    assert set(parts["train"].class_counts().values()) == {SIZES["small"].train_per_class}
    text = a.attribution.read_text(encoding="utf-8")
    assert "CC BY 4.0" in text and "CC BY-SA 4.0" in text and "Twitter" in text and "OpenMoji" in text
    assert (a.root / "emoji_emotions.csv").exists() and (a.root / "captions.csv").exists()

    def digest(ds: object) -> list[str]:
        root = ds.root  # type: ignore[attr-defined]
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "images").rglob("*.png"))]

    assert digest(a) == digest(b)
    with pytest.raises(KeyError):
        build_dataset(tmp_path / "c", "huge")


def test_small_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mghft.cli import main
    from mghft.interpret import DescriptionStore, image_sha256

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "small", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for phrase in ("accuracy", "chance (1/7)", "majority baseline", "where everything went", "serve --model"):
        assert phrase in printed, phrase

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["chance"] == pytest.approx(1 / 7)
    assert summary["predictor_accuracy"] == pytest.approx(summary["accuracy"])  # load_predictor agrees with training
    assert summary["example"]["view_source"] == "interpreter"
    for key, path in summary["paths"].items():
        assert Path(path).exists(), key
    assert len(list((out / "gallery" / "heatmaps").glob("*.png"))) == summary["test_images"]
    # The example's overlay shows the sticker as the model saw it: transparency on white, not black.
    example = Image.open(out / "example_heatmap.png").convert("RGB")
    assert Image.open(out / "example.png").getpixel((0, 0))[3] == 0 and example.getpixel((0, 0))[0] == 255
    for name in ("metrics.json", "report.md", "confusion_matrix.png"):
        assert (out / "train" / "test" / name).exists(), name

    # The interpreter saw pixels only: an image without a caption is never described with its emotion or emoji name.
    index = read_manifest(out / "dataset" / "manifest.jsonl")
    with DescriptionStore(out / "descriptions.sqlite") as store:
        for s in index.samples:
            desc = store.get(image_sha256(s.path))
            assert desc is not None and desc.backend == "offline", s.key
            if not s.meta["caption"]:
                text = " ".join(desc.views.values()).lower()
                assert index.classes[s.label] not in text and s.meta["emoji_name"] not in text, s.key

    # A rerun reuses every description and replaces the training run.
    assert main(["demo", "--out", str(out), "--size", "small", "--no-progress", "--epochs", "1"]) == 0
    assert "reused 35" in capsys.readouterr().out
    assert len((out / "train" / "log.csv").read_text().splitlines()) == 2
