"""Provenance: caches keyed by content, the description writers, the run folder, training-time views applied."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import mghft
from mghft.features import TextFeatureCache, view_feature_table


def test_text_features_follow_the_encoders_weights_not_its_name(tmp_path: Path) -> None:
    from mghft.models.text import load_text_backbone, resolve_encoder_source

    folder = tmp_path / "encoder"
    shutil.copytree(resolve_encoder_source(mghft.models.text.PACKAGED_MINILM), folder)
    cfg = mghft.create_model("mghft_tiny", text_encoder=False).cfg.text
    cfg = type(cfg)(**{**cfg.__dict__, "encoder": str(folder)})
    descs = [{"intention": "a happy cat", "style": "flat"}]
    before, _ = view_feature_table(descs, TextFeatureCache(tmp_path / "cache", cfg))
    # Fine-tune (here: perturb) the encoder and save it into the same folder.
    model, tokenizer = load_text_backbone(str(folder))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cache = TextFeatureCache(tmp_path / "cache", cfg)
    after, _ = view_feature_table(descs, cache)
    assert cache.computed == 2 and cache.reused == 0  # encoded again by the new weights, nothing stale served
    assert (after - before).abs().max() > 1e-3
    assert cache.identity["weights_sha256"] != "" and cache.identity["encoder"] == str(folder)


def test_image_only_run_records_provenance_and_is_evaluated_as_trained(tmp_path: Path) -> None:
    import json

    from mghft.errors import UsageError
    from mghft.export import ExportWrapper, example_inputs, export_metadata
    from mghft.hub import sha256_file
    from mghft.models.text import PACKAGED_MINILM
    from mghft.serve.predictor import load_predictor
    from mghft.train.config import DataConfig
    from mghft.train.evaluate import evaluate_checkpoint
    from mghft.train.loop import train
    from tests import synthetic
    from tests.test_train import _cfg

    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=10)
    data = DataConfig(format="manifest", root=str(manifest))
    cfg = _cfg(tmp_path, data, epochs=1, views=(), select_on="test", bootstrap=20)
    with pytest.warns(UserWarning, match="TEST split"):
        res = train(cfg)
    run = Path(cfg.output)
    prov = json.loads((run / "provenance.json").read_text())
    best = json.loads((run / "best" / "config.json").read_text())["provenance"]
    assert best["views"] == [] and best["selection"]["select_on"] == "test" and best["selection"]["epoch"] == 1
    split = json.loads((run / "split.json").read_text())["splits"]
    assert prov["data"]["split"]["sha256"] == sha256_file(run / "split.json")
    assert prov["data"]["counts"] == {k: len(v) for k, v in split.items()} and prov["data"]["skipped"] == 0
    assert prov["descriptions"] == {"source": "dataset", "writers": {"dataset": 30}, "missing": 0}
    assert prov["text_encoder"]["encoder"] == PACKAGED_MINILM and len(prov["text_encoder"]["weights_sha256"]) == 64
    assert prov["software"]["torch"] == torch.__version__ and prov["software"]["device"] == "cpu"
    assert json.loads((run / "test" / "metrics.json").read_text())["provenance"]["views"] == []
    assert "## Provenance" in (run / "test" / "report.md").read_text()
    assert res["bootstrap"] == "percentile bootstrap over samples, 20 resamples"
    # Tested as trained: with no view, the test figures are the bare-image ones.
    assert res["test"]["accuracy"] == res["test_views_absent"]["accuracy"]
    assert res["test"]["macro"]["f1"] == res["test_views_absent"]["macro_f1"]

    ev = evaluate_checkpoint(run / "best", cfg, out=tmp_path / "eval", bootstrap=20)
    assert ev["views"] == () and ev["warnings"] == [] and ev["selected_on"] == "test"
    assert ev["metrics"]["accuracy"] == res["test"]["accuracy"]
    assert ev["metrics"]["log_loss"] == pytest.approx(ev["views_absent"]["log_loss"], abs=1e-9)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "(selected on test)" in report and "selected on val" not in report

    predictor = load_predictor(run / "best", device="cpu")
    image = tmp_path / "data" / "images" / "anger" / "anger_0.png"
    [given] = predictor.predict([image], [synthetic.descriptions("anger", __import__("random").Random(0))])
    [bare] = predictor.predict([image])
    assert given.probabilities == bare.probabilities and set(given.views.values()) == {None}

    wrapper = ExportWrapper(mghft.load_model(run / "best", text_encoder=False)).eval()
    images, feats, mask = example_inputs(wrapper.model)
    with torch.no_grad():
        assert torch.equal(wrapper(images, feats, mask)[0], wrapper(images, feats, torch.zeros_like(mask))[0])
    exported = export_metadata(wrapper.model, synthetic.CLASSES, None)
    assert exported["trained_views"] == [] and exported["provenance"]["selection"]["select_on"] == "test"

    # A second run into the same folder: an error, nothing touched; --overwrite replaces the run.
    log = (run / "log.csv").read_text()
    with pytest.raises(UsageError, match="already holds a training run"):
        train(cfg)
    assert (run / "log.csv").read_text() == log
    again = _cfg(tmp_path, data, epochs=1, bootstrap=0)
    train(again, overwrite=True)
    assert len((run / "log.csv").read_text().splitlines()) == 2  # header and the new run's one epoch
    assert json.loads((run / "provenance.json").read_text())["views"] == list(mghft.views.VIEWS)


def test_description_headers_are_read_up_to_typography_and_other_headers_name_the_record(tmp_path: Path) -> None:
    import json

    from mghft.data import read_ser30k_json
    from mghft.data.errors import DataFormatError

    text = (
        "#The sticker\u2019s intention: to tease # the Sticker's STYLE: flat\n"
        "#THE STICKER'S main  role: a cat #The sticker`s gesture: waving"
    )
    rec = {"topic": "t", "file_name": "a.png", "text": text, "anno": 1}
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"annotations": [rec], "categories": ["anger", "joy"]}), encoding="utf-8")
    [s] = read_ser30k_json(path, tmp_path).samples
    assert s.descriptions == {
        "intention": "to tease",
        "style": "flat",
        "main_role": "a cat",
        "posture_expression": "waving",
    }
    assert s.ocr_text == ""
    bad = {**rec, "file_name": "b.png", "text": "#The sticker's intention: hi #The sticker's mood: sad"}
    path.write_text(json.dumps({"annotations": [rec, bad], "categories": ["anger", "joy"]}), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"record 1.*#The sticker's mood"):
        read_ser30k_json(path, tmp_path)


def _views(word: str) -> dict[str, str]:
    return {v: f"{word} {v}" for v in mghft.views.VIEWS}


def _store_with(path: Path, images: list[Path], writers: list[tuple[str, str, str]]) -> None:
    from mghft.interpret import Description, DescriptionStore, image_sha256

    with DescriptionStore(path) as store:
        for image, (backend, model, prompt) in zip(images, writers, strict=True):
            desc = Description(
                image_sha256(image), _views(backend), backend=backend, model=model, prompt_version=prompt
            )
            store.put(desc)


def test_a_missing_store_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    from mghft.errors import MghftError
    from mghft.train.config import DataConfig
    from mghft.train.data import load_splits
    from mghft.train.provenance import collect_descriptions
    from tests import synthetic

    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=10)
    store = tmp_path / "runs" / "descriptions.sqlite"
    data = DataConfig(format="manifest", root=str(manifest), descriptions=str(store))
    parts = load_splits(data, tmp_path / "run", log=False)
    with pytest.raises(MghftError, match="does not exist") as err:
        collect_descriptions(parts, data)
    assert "mghft interpret" in err.value.hint and "data.descriptions: null" in err.value.hint
    assert not store.exists() and not store.parent.exists()
    _store_with(store, [tmp_path / "data" / "manifest.csv"], [("offline", "m", "1")])  # describes no sticker
    with pytest.raises(MghftError, match="describes none of the 30 images"):
        collect_descriptions(parts, data)


def test_a_store_mixing_writers_needs_a_choice_and_records_the_mix(tmp_path: Path) -> None:
    from mghft.interpret.store import MixedDescriptionsError
    from mghft.train.config import DataConfig
    from mghft.train.data import load_splits
    from mghft.train.provenance import collect_descriptions
    from tests import synthetic

    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=10)
    store = tmp_path / "d.sqlite"
    data = DataConfig(format="manifest", root=str(manifest), descriptions=str(store))
    parts = load_splits(data, tmp_path / "run", log=False)
    images = [s.path for p in parts.values() for s in p.samples]
    old, new = ("offline", "ocr+cues-1", "offline-1"), ("openai-compatible", "gpt-4o", "v2")
    _store_with(store, images[:-1], [old] * 10 + [new] * (len(images) - 11))
    with pytest.raises(MixedDescriptionsError, match="offline/ocr\\+cues-1/offline-1: 10"):
        collect_descriptions(parts, data)
    data.description_source = "openai-compatible/gpt-4o/v2"
    descs, summary = collect_descriptions(parts, data)
    assert summary["writers"] == {"openai-compatible/gpt-4o/v2": 19}
    assert summary["other_writers"] == {"offline/ocr+cues-1/offline-1": 10} and summary["missing"] == 11
    assert sum(d is None for v in descs.values() for d in v) == 11
    data.description_source = "any"
    _, summary = collect_descriptions(parts, data)
    assert summary["mixed"] and summary["missing"] == 1
    assert summary["writers"] == {"offline/ocr+cues-1/offline-1": 10, "openai-compatible/gpt-4o/v2": 19}


def test_a_stored_description_is_reused_only_from_the_same_writer(tmp_path: Path) -> None:
    import asyncio

    from mghft.interpret import Description, DescriptionStore, Interpreter, image_sha256

    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(image)

    class Remote:
        name, model, prompt_version = "openai-compatible", "gpt-4o", "v2"
        calls = 0

        async def describe(self, prepared: object) -> Description:
            Remote.calls += 1
            return Description(image_sha256(image), _views("new"), backend=self.name, model="gpt-4o-2024-08-06",
                               prompt_version=self.prompt_version)  # fmt: skip

        async def aclose(self) -> None:
            await asyncio.sleep(0)

    store = DescriptionStore(tmp_path / "d.sqlite")
    store.put(Description(image_sha256(image), _views("old"), backend="offline", model="ocr+cues-1",
                          prompt_version="offline-1"))  # fmt: skip
    with Interpreter(Remote(), store, reuse="any") as interp:
        assert interp.describe(image).backend == "offline" and Remote.calls == 0
    with Interpreter(Remote(), store) as interp:
        first = interp.describe(image)
        assert first.backend == "openai-compatible" and first.views["style"] == "new style" and Remote.calls == 1
        assert interp.describe(image).model == "gpt-4o-2024-08-06" and Remote.calls == 1  # its own answer: a hit
    assert store.get(image_sha256(image)).backend == "openai-compatible"


def _owner(split: dict) -> dict[str, str]:
    return {key: part for part, keys in split["splits"].items() for key in keys}


def test_a_manifests_groups_never_straddle_the_split(tmp_path: Path) -> None:
    import csv
    import json

    from mghft.train.config import DataConfig
    from mghft.train.data import load_splits
    from tests import synthetic

    rows = synthetic.write_images(tmp_path / "data", n_per_class=12)
    manifest = tmp_path / "data" / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group"])
        for i, (p, label, _) in enumerate(rows):
            w.writerow([str(p.relative_to(tmp_path / "data")), label, f"{label}-pack{i % 4}"])
    parts = load_splits(DataConfig(format="manifest", root=str(manifest)), tmp_path / "run", log=False)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["group_by"] == "group" and "12 groups" in split["note"]
    sides: dict[str, set[str]] = {}
    for name, part in parts.items():
        for s in part.samples:
            sides.setdefault(s.group, set()).add(name)
    assert len(sides) == 12 and all(len(v) == 1 for v in sides.values())
    assert all(len(p) for p in parts.values())


def test_ser30k_all_annos_is_split_by_topic(tmp_path: Path) -> None:
    import json
    import shutil

    from mghft.train.config import DataConfig
    from mghft.train.data import load_splits
    from tests import synthetic

    root = synthetic.write_ser30k(tmp_path / "ser", n_per_class=15)
    ann = root / "Annotations"
    merged: dict = {"annotations": [], "categories": None}
    for part in ("train", "val", "test"):
        data = json.loads((ann / "image-level" / f"{part}.json").read_text())
        merged["annotations"] += data["annotations"]
        merged["categories"] = data["categories"]
    shutil.rmtree(ann / "image-level")
    (ann / "all_annos.json").write_text(json.dumps(merged))
    parts = load_splits(DataConfig(format="ser30k", root=str(root)), tmp_path / "run", log=False)
    assert sum(len(p) for p in parts.values()) == 45
    topics: dict[str, set[str]] = {}
    for name, part in parts.items():
        for s in part.samples:
            topics.setdefault(s.group, set()).add(name)
    assert len(topics) == 9 and all(len(v) == 1 for v in topics.values())
    assert json.loads((tmp_path / "run" / "split.json").read_text())["group_by"] == "group"


def test_metmeme_split_says_it_has_no_groups_and_an_empty_split_gives_the_readers_reasons(tmp_path: Path) -> None:
    import json
    import shutil

    from mghft.errors import MghftError
    from mghft.train.config import DataConfig
    from mghft.train.data import load_splits
    from tests import synthetic

    root = synthetic.write_metmeme(tmp_path / "mm", n_per_class=10)
    load_splits(DataConfig(format="metmeme", root=str(root)), tmp_path / "run", log=False)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["group_by"] is None and "defines no groups" in split["note"]
    shutil.rmtree(root / "English")
    with pytest.raises(MghftError, match=r"30 item\(s\) left out \(30 image not found\).*label_E\.csv line 2"):
        load_splits(DataConfig(format="metmeme", root=str(root)), tmp_path / "run2", log=False)


def test_a_report_says_at_the_top_how_evaluation_differs_from_training(tmp_path: Path) -> None:
    from mghft.evaluate import compute_metrics, write_report
    from mghft.provenance import differences

    trained = {
        "data": {"reader": "ser30k", "root": "/d", "split": {"kind": "official"}},
        "descriptions": {"source": "store", "writers": {"openai-compatible/gpt-4o/mv-1": 90}},
        "text_encoder": {"encoder": "bert-base-uncased", "revision": "abc"},
    }
    now = {
        "data": {"reader": "ser30k", "root": "/d", "split": {"kind": "official"}},
        "descriptions": {"source": "store", "writers": {"offline/ocr+cues-1/offline-1": 90}},
        "text_encoder": {"encoder": "bert-base-uncased", "revision": "def"},
    }
    found = differences(trained, now)
    assert len(found) == 2
    assert "offline/ocr+cues-1/offline-1" in found[0] and "revision 'abc' in training, 'def' now" in found[1]
    assert differences(trained, trained) == []
    assert "no provenance" in differences({}, now)[0]
    metrics = compute_metrics([0, 0, 1], [0, 1, 1], ["a", "b", "c"])
    write_report(tmp_path, metrics, title="t", warnings=found, provenance=trained)
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert lines[2] == "> **Evaluation conditions differ from training:**" and "gpt-4o" in lines[4]
    text = "\n".join(lines)
    assert "classes without support in this split: c; left out of every macro average" in text


def test_a_manifest_description_with_another_header_names_its_line(tmp_path: Path) -> None:
    from mghft.data import read_manifest
    from mghft.data.errors import DataFormatError

    manifest = tmp_path / "m.jsonl"
    good = '{"path": "a.png", "label": "x", "descriptions": "# The Sticker\u2019s intention: hi"}'
    bad = '{"path": "b.png", "label": "x", "descriptions": "#The sticker\'s mood: sad"}'
    manifest.write_text(good + "\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"line 2, field 'descriptions'.*#The sticker's mood"):
        read_manifest(manifest)
    manifest.write_text(good + "\n", encoding="utf-8")
    assert read_manifest(manifest).samples[0].descriptions == {"intention": "hi"}
