"""The text-feature cache: filled from a stream in bounded memory, an index that grows by its new rows only,
and folders written by an earlier layout read or refused."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import mghft
from mghft.config import TextConfig
from mghft.errors import MghftError
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


def _tiny_encoder() -> tuple[TextConfig, TextEncoder]:
    """The packaged tokenizer behind a one-layer 32-dim random BERT: real encoding at almost no cost."""
    from transformers import BertConfig, BertModel

    from mghft.models.text import load_text_backbone
    from mghft.registry import PACKAGED_MINILM

    _, tokenizer = load_text_backbone(PACKAGED_MINILM, offline=True)
    cfg = dataclasses.replace(TextConfig(encoder=PACKAGED_MINILM, max_length=16), dim=32)
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        ),
        add_pooling_layer=False,
    )
    return cfg, TextEncoder(cfg, bert, tokenizer)


def _bytes_written() -> int:
    """Bytes this process has passed to write calls so far (``/proc/self/io``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/self/io (Linux)")
def test_index_writes_per_text_do_not_grow_with_the_cache(tmp_path: Path) -> None:
    cfg, encoder = _tiny_encoder()

    def index_bytes_per_text(n: int) -> float:
        cache = TextFeatureCache(tmp_path / str(n), cfg, lambda: encoder)
        before = _bytes_written()
        assert cache.fill((f"text {i}" for i in range(n)), shard_size=1) == n  # one shard, one index update per text
        written = _bytes_written() - before
        shards = sum(p.stat().st_size for p in cache.dir.glob("shard-*.safetensors"))
        assert len(cache) == n
        return (written - shards) / n

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest, and immune to a busy machine
    try:
        small, large = index_bytes_per_text(200), index_bytes_per_text(1000)
    finally:
        torch.set_num_threads(threads)
    # Rewriting a whole index after each shard makes the bytes per text grow with the cache (5x here).
    assert large < 1.5 * small, (small, large)


def test_an_earlier_versions_json_index_is_read_without_encoding_again(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from mghft.features import text_key

    cfg, encoder = _tiny_encoder()
    texts = ["a happy cat", "a sad dog", "an angry bird"]
    expected = encoder.encode(texts).float()
    folder = TextFeatureCache(tmp_path, cfg, lambda: encoder).dir  # the fingerprint folder, unchanged
    for p in folder.iterdir():
        p.unlink()
    # The earlier layout: shards plus an index.json listing key -> [shard, row].
    save_file({"features": expected[:2].contiguous()}, str(folder / "shard-a.safetensors"))
    save_file({"features": expected[2:].contiguous()}, str(folder / "shard-b.safetensors"))
    rows = {text_key(texts[0]): ["shard-a.safetensors", 0], text_key(texts[1]): ["shard-a.safetensors", 1]}
    rows[text_key(texts[2])] = ["shard-b.safetensors", 0]
    (folder / "index.json").write_text(json.dumps({"format": 3, "rows": rows}), encoding="utf-8")

    def no_encoder() -> TextEncoder:
        raise AssertionError("a cached text was encoded again")

    cache = TextFeatureCache(tmp_path, cfg, no_encoder)
    assert len(cache) == 3 and texts[2] in cache
    torch.testing.assert_close(cache.get(texts[::-1]), expected.flip(0), rtol=0, atol=0)
    assert cache.computed == 0 and cache.reused == 3
    assert not (folder / "index.json").exists() and (folder / "index.json.imported").exists()
    assert TextFeatureCache(tmp_path, cfg, no_encoder).fill(texts) == 0  # reopened: read from the new index


BAD_INDEXES = ["{not json", '{"format": 2, "rows": {}}', '{"format": 3, "rows": {"k": ["x", 0]}}']


@pytest.mark.parametrize("content", BAD_INDEXES)
def test_an_unreadable_earlier_index_is_refused_naming_the_folder(tmp_path: Path, content: str) -> None:
    cfg, encoder = _tiny_encoder()
    folder = TextFeatureCache(tmp_path, cfg, lambda: encoder).dir
    (folder / "index.sqlite").unlink()
    (folder / "index.json").write_text(content, encoding="utf-8")
    with pytest.raises(MghftError, match=f"text-feature cache {folder}") as err:
        TextFeatureCache(tmp_path, cfg, lambda: encoder)
    assert err.value.hint is not None and f"delete the folder {folder}" in err.value.hint
    assert (folder / "index.json").read_text(encoding="utf-8") == content  # left as it was


def test_a_damaged_index_is_refused_naming_the_folder(tmp_path: Path) -> None:
    cfg, encoder = _tiny_encoder()
    cache = TextFeatureCache(tmp_path, cfg, lambda: encoder)
    cache.fill(["a happy cat"])
    cache.close()
    for p in cache.dir.glob("index.sqlite*"):
        p.unlink()
    (cache.dir / "index.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(MghftError, match=f"text-feature cache {cache.dir}: index.sqlite is not a readable"):
        TextFeatureCache(tmp_path, cfg, lambda: encoder)
