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
