"""The public-code checkpoint converter against the real key layout of the public MGHFT model.

``data/official_mghft_pvt_small_keys.json`` lists every state-dict key of the public code's model (PVT-small,
alpha 8, locals [1, 1, 1, 0], 7 classes) with its shape, ``text_model.*`` being a bert-base-uncased BertModel.
Numerical parity of the converted weights is checked by ``benchmarks/parity_official.py``, which needs the
public code; this test guards the key mapping without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mghft import convert_official, create_model
from mghft.models.official import UNUSED_OFFICIAL_KEYS

FIXTURE = Path(__file__).parent / "data" / "official_mghft_pvt_small_keys.json"
DROPPED = {"vision_model.tau", "vision_model.norm_t.weight", "vision_model.norm_t.bias"}
BERT_PREFIX, OUR_BERT_PREFIX = "text_model.", "text_encoder.model."


@pytest.fixture(scope="module")
def public_shapes() -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads(FIXTURE.read_text()).items()}


@pytest.fixture(scope="module")
def converted(public_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The converter's output on meta tensors of the fixture's shapes: our key -> shape."""
    with torch.device("meta"):
        sd = {k: torch.empty(shape) for k, shape in public_shapes.items()}
    return {k: tuple(v.shape) for k, v in convert_official(sd).items()}


@pytest.fixture(scope="module")
def our_shapes() -> dict[str, tuple[int, ...]]:
    model = create_model("mghft_pvt_small", text_encoder=False)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_fixture_is_the_paper_model(public_shapes: dict[str, tuple[int, ...]]) -> None:
    assert public_shapes["pos_embed"] == (1, 996, 768)
    assert public_shapes["head.weight"] == (7, 768)
    assert public_shapes["text_model.embeddings.word_embeddings.weight"] == (30522, 768)
    assert sum(k.startswith("vision_model.block") for k in public_shapes) == 18 * (3 + 4 + 6) + 14 * 3


def test_only_the_documented_unused_keys_are_dropped(
    public_shapes: dict[str, tuple[int, ...]], converted: dict[str, tuple[int, ...]]
) -> None:
    assert len(converted) == len(public_shapes) - len(DROPPED)
    assert set(public_shapes) >= DROPPED
    assert all(UNUSED_OFFICIAL_KEYS.match(k) for k in DROPPED)
    assert not [k for k in public_shapes if k not in DROPPED and UNUSED_OFFICIAL_KEYS.match(k)]


def test_vision_and_fusion_keys_land_on_our_parameters(
    converted: dict[str, tuple[int, ...]], our_shapes: dict[str, tuple[int, ...]]
) -> None:
    ours_from_public = {k: s for k, s in converted.items() if not k.startswith(OUR_BERT_PREFIX)}
    unknown = sorted(set(ours_from_public) - set(our_shapes))
    assert not unknown, f"converted keys with no counterpart: {unknown[:8]}"
    bad = {k: (s, our_shapes[k]) for k, s in ours_from_public.items() if our_shapes[k] != s}
    assert not bad, f"shape mismatches (public, ours): {bad}"
    assert set(our_shapes) - set(ours_from_public) == {"missing_view"}


def test_every_public_key_has_its_own_target(public_shapes: dict[str, tuple[int, ...]]) -> None:
    kept = [k for k in public_shapes if k not in DROPPED]
    with torch.device("meta"):
        out = convert_official({k: torch.empty(0) for k in kept})
    assert len(out) == len(kept)  # no two public keys collapse onto one of ours


def test_bert_keys_map_onto_a_bert_base_encoder(
    public_shapes: dict[str, tuple[int, ...]], converted: dict[str, tuple[int, ...]]
) -> None:
    from transformers import BertConfig, BertModel

    with torch.device("meta"):
        bert = {k: tuple(v.shape) for k, v in BertModel(BertConfig()).state_dict().items()}
    public_bert = {k.removeprefix(BERT_PREFIX): s for k, s in public_shapes.items() if k.startswith(BERT_PREFIX)}
    ours = {k.removeprefix(OUR_BERT_PREFIX): s for k, s in converted.items() if k.startswith(OUR_BERT_PREFIX)}
    assert ours == public_bert
    assert ours == bert


def test_module_prefix_is_removed() -> None:
    out = convert_official({"module.head.weight": torch.zeros(7, 768), "module.vision_model.tau": torch.zeros(())})
    assert set(out) == {"head.weight"}


def test_unknown_key_is_named() -> None:
    sd = {"head.weight": torch.zeros(7, 768), "vision_model_extra.weight": torch.zeros(1)}
    with pytest.raises(KeyError, match="vision_model_extra.weight"):
        convert_official(sd)
    assert set(convert_official(sd, strict=False)) == {"head.weight"}
