"""Each defect of the public code is reproduced with compat="official", and only then."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mghft
from mghft.models.text import pool_tokens, view_texts

DESCRIPTION = {
    "intention": "Teasing a friend",
    "style": "Cartoon, pastel",
    "main_role": "A white cat",
    "posture_expression": "Grinning, paw raised",
}


def test_identical_views_only_in_official_mode() -> None:
    fixed = view_texts(DESCRIPTION)
    assert len(set(fixed)) == 4 and fixed[0] == "The sticker's intention: Teasing a friend"
    official = view_texts(DESCRIPTION, identical_views=True)
    assert len(set(official)) == 1
    whole = official[0]
    assert whole == whole.lower() and all(v.lower() in whole for v in DESCRIPTION.values())
    assert whole.startswith("#the sticker's intention")


def test_view_texts_from_public_code_text_and_absent_views() -> None:
    text = "Intro dropped.#The sticker's style: flat colours #The sticker's gesture waving"
    assert view_texts(text) == [
        None,
        "The sticker's style: flat colours",
        None,
        "The sticker's posture and expression: waving",
    ]
    assert view_texts(None) == [None] * 4


def _text_token_outputs(compat: str) -> torch.Tensor:
    torch.manual_seed(0)
    model = mghft.create_model("mghft_tiny", compat=compat, text_encoder=False).eval()
    with torch.no_grad():
        return model(torch.randn(2, 3, 64, 64), text_features=torch.randn(2, 4, 384))["text_seq"]


def test_stale_stage4_local_text_token_only_in_official_mode() -> None:
    # text_seq = [T4, T3, T2, T1, T''4, T''3, T''2, T''1]
    official = _text_token_outputs("official")
    assert torch.equal(official[:, 4], official[:, 5])
    fixed = _text_token_outputs("none")
    assert not torch.allclose(fixed[:, 4], fixed[:, 5])
    torch.testing.assert_close(fixed[:, 5:], official[:, 5:])


def test_mean_pooling_over_padding_only_in_official_mode() -> None:
    h = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    torch.testing.assert_close(pool_tokens(h, mask, masked=True), h[:, :2].mean(1))
    torch.testing.assert_close(pool_tokens(h, mask, masked=False), h.mean(1))


@pytest.fixture(scope="module")
def encoders() -> dict[str, mghft.MGHFT]:
    return {c: mghft.create_model("mghft_tiny", compat=c) for c in ("none", "official")}


def test_real_encoder_features_depend_on_padding_only_in_official_mode(encoders: dict[str, mghft.MGHFT]) -> None:
    texts = ["a cat grinning", "a much longer description of a dog that is very angry about something"]
    fixed = encoders["none"].text_encoder
    official = encoders["official"].text_encoder
    assert fixed is not None and official is not None
    alone = fixed.encode(texts[:1])
    padded = fixed.encode(texts)[:1]  # padded to the longer text in the same batch
    torch.testing.assert_close(alone, padded, rtol=1e-4, atol=1e-5)
    tok = official.tokenize(texts[:1])
    assert tok["input_ids"].shape[1] == official.cfg.max_length  # padded to max_length, as the public code does
    assert official.cfg.masked_mean is False
    off = official.encode(texts[:1])
    assert not torch.allclose(off, alone, atol=1e-3)


def test_frozen_encoder_stays_in_eval_mode_and_gets_no_gradient(encoders: dict[str, mghft.MGHFT]) -> None:
    model = encoders["none"].train()
    enc = model.text_encoder
    assert enc is not None and not enc.model.training
    assert not any(p.requires_grad for p in enc.parameters())
    a, b = enc.encode(["same text"]), enc.encode(["same text"])
    assert torch.equal(a, b)  # no dropout noise


def test_create_model_keeps_explicit_overrides_of_the_compat_switches() -> None:
    m = mghft.create_model("mghft_tiny", text_encoder=False, text={"masked_mean": False, "pad_to_max_length": True})
    assert m.cfg.compat == "none" and m.cfg.text.masked_mean is False
    m = mghft.create_model("mghft_tiny", compat="official", text_encoder=False, fusion={"stale_stage4_text": False})
    assert m.cfg.text.identical_views and not m.cfg.fusion.stale_stage4_text


def test_create_model_from_an_official_checkpoint_keeps_its_compat(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    model = mghft.create_model("mghft_tiny", compat="official", text_encoder=False)
    mghft.save_checkpoint(model, tmp_path / "ckpt", class_names=[f"c{i}" for i in range(7)])
    loaded = mghft.create_model("mghft_tiny", pretrained=tmp_path / "ckpt", text_encoder=False)
    assert loaded.cfg == model.cfg and not recwarn.list
    with pytest.warns(UserWarning, match="compat='official'; using 'none'"):
        fixed = mghft.create_model("mghft_tiny", pretrained=tmp_path / "ckpt", compat="none", text_encoder=False)
    assert fixed.cfg.compat == "none" and fixed.cfg.text.masked_mean


def test_descriptions_of_the_wrong_shape_are_errors_not_absent_views() -> None:
    with pytest.raises(ValueError, match=r"unknown view\(s\) \['posture'\]"):
        view_texts({"posture": "waving"})
    with pytest.raises(ValueError, match="sections"):
        view_texts("a cat waving")
    assert view_texts("") == [None] * 4 and view_texts({}) == [None] * 4
