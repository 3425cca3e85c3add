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
    from mghft.export import ExportWrapper, example_inputs
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
