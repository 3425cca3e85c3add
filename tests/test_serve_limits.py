"""The predictor's bounded caches and view-text limit: least recently used eviction by bytes, refusal before
tokenising."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from mghft.serve.cache import ByteLRU, approx_bytes
from mghft.serve.predictor import Predictor, ViewTextTooLong, load_predictor
from mghft.views import VIEWS
from tests.test_serve_api import CLASSES, make_checkpoint, png_bytes, sticker


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return load_predictor(make_checkpoint(tmp_path_factory.mktemp("serve-limits") / "tiny"), device="cpu")


def _text(letter: str) -> str:
    return f"The sticker's intention: {letter * 40}"


def test_byte_lru_evicts_the_least_recently_used_and_keeps_its_budget() -> None:
    cache: ByteLRU[str, bytes] = ByteLRU(300, size_of=lambda k, v: len(v))
    cache.put("a", b"x" * 100)
    cache.put("b", b"x" * 100)
    assert cache.get("a") == b"x" * 100  # a hit refreshes "a"
    cache.put("c", b"x" * 150)  # 350 > 300: the least recently used ("b") goes
    assert "a" in cache and "c" in cache and "b" not in cache and cache.bytes == 250
    cache.put("huge", b"x" * 301)  # larger than the whole budget: never kept, nothing else dropped for it
    assert "huge" not in cache and len(cache) == 2
    cache.put("a", b"x" * 10)  # replacing an entry re-weighs it
    assert cache.bytes == 160
    assert approx_bytes(torch.zeros(384)) >= 384 * 4


def test_the_text_cache_never_evicts_what_the_batch_is_about_to_read(predictor: Predictor) -> None:
    dim = predictor.model.cfg.text.dim
    entry = approx_bytes(_text("a")) + approx_bytes(torch.zeros(dim))
    small = Predictor(predictor.model, class_names=CLASSES, preprocess=predictor.preprocess,
                      text_cache_bytes=2 * entry)  # fmt: skip
    big = Predictor(predictor.model, class_names=CLASSES, preprocess=predictor.preprocess)
    a, b, c = ({"intention": letter * 40} for letter in "abc")
    img1, img2 = png_bytes(sticker(1)), png_bytes(sticker(2))
    small.predict([img1], [a])
    small.predict([img1], [b])
    # A is cached, C is new: inserting C must not drop A before this batch reads it
    got = small.predict([img1, img2], [a, c])
    want = big.predict([img1, img2], [a, c])
    for g, w in zip(got, want, strict=True):
        assert g.label == w.label
        assert g.probabilities == pytest.approx(w.probabilities, abs=1e-6)
    cache = small._feat_cache
    assert _text("a") in cache and _text("c") in cache and _text("b") not in cache  # B was least recently used
    assert cache.bytes <= 2 * entry


def test_description_cache_is_bounded_by_bytes(predictor: Predictor) -> None:
    class Echo:
        calls = 0

        def describe(self, data: bytes) -> object:
            Echo.calls += 1
            return type("D", (), {"views": {"style": "s" * 2000}})()

    p = Predictor(predictor.model, class_names=CLASSES, preprocess=predictor.preprocess, interpreter=Echo(),
                  description_cache_bytes=10_000)  # fmt: skip
    for i in range(12):
        p.resolve_views(p.load(png_bytes(sticker(i))))
    assert Echo.calls == 12 and p._desc_cache.bytes <= 10_000 and 1 <= len(p._desc_cache) < 12


def test_a_long_view_text_is_refused_before_tokenising(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    tokenize = predictor.model.text_encoder.tokenize
    monkeypatch.setattr(predictor.model.text_encoder, "tokenize", lambda texts: calls.append(texts) or tokenize(texts))
    img = png_bytes(sticker(3))
    huge = "ha" * (8 << 20)  # 16 MB
    start = time.perf_counter()
    with pytest.raises(ViewTextTooLong, match=r"the style view text has 16777216 characters, over the limit of 4000"):
        predictor.predict([img], [{"intention": "fine", "style": huge}])
    whole = "#The sticker's intention: joy #The sticker's style: " + huge
    with pytest.raises(ViewTextTooLong, match="description"):
        predictor.predict([img], [whole])
    with pytest.raises(ViewTextTooLong, match="posture_expression"):  # texts handed to run() directly
        predictor.run([predictor.load(img)], [[None, None, None, huge]], ["given"])
    assert time.perf_counter() - start < 5 and calls == []  # nothing reached the tokenizer
    # at the limit it is read
    [p] = predictor.predict([img], [{"style": "x" * predictor.max_view_chars}])
    assert p.view_source == "given" and len(calls) == 1
    unlimited = Predictor(predictor.model, class_names=CLASSES, max_view_chars=None)
    unlimited.check_view_lengths({v: huge for v in VIEWS})  # None: no limit


def test_an_interpreter_answer_over_the_limit_is_refused(predictor: Predictor, tmp_path: Path) -> None:
    class Verbose:
        def describe(self, data: bytes) -> object:
            return type("D", (), {"views": {"intention": "blah " * 2000}})()

    p = Predictor(predictor.model, class_names=CLASSES, interpreter=Verbose())
    with pytest.raises(ViewTextTooLong, match="intention"):
        p.resolve_views(p.load(png_bytes(sticker(4))))
    assert len(p._desc_cache) == 0
