"""Filling the text-feature cache from a stream: bounded memory, the same features as ``get``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

import mghft
from mghft.features import TextFeatureCache
from mghft.models.text import TextEncoder


def test_fill_streams_in_shards_and_keeps_no_features(tmp_path: Path) -> None:
    cfg = mghft.create_model("mghft_tiny", text_encoder=False).cfg.text
    encoder = TextEncoder.from_config(cfg)
    pulled = []

    def texts() -> Iterator[str]:
        for i in range(10):
            pulled.append(i)
            yield f"sticker {i % 7}"  # 7 distinct texts, 3 repeats

    cache = TextFeatureCache(tmp_path, cfg, lambda: encoder)
    assert cache.fill(texts(), batch_size=2, shard_size=3) == 7
    assert pulled == list(range(10)) and cache.computed == 7 and len(cache) == 7
    assert cache._shards == {}  # written to disk, not held
    assert len(list(cache.dir.glob("shard-*.safetensors"))) == 3  # 3 + 3 + 1
    reopened = TextFeatureCache(tmp_path, cfg, lambda: encoder)
    assert reopened.fill(f"sticker {i}" for i in range(9)) == 2  # only the new ones
    got = reopened.get([f"sticker {i}" for i in range(9)])
    assert reopened.computed == 2 and reopened.reused == 9
    torch.testing.assert_close(got, encoder.encode([f"sticker {i}" for i in range(9)]).float(), rtol=1e-5, atol=1e-6)
