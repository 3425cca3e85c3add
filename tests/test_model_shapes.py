"""The model's shapes, gradients and text paths."""

from __future__ import annotations

import pytest
import torch

import mghft
from mghft.models.factory import count_parameters


@pytest.fixture(scope="module")
def small() -> mghft.MGHFT:
    torch.manual_seed(0)
    return mghft.create_model("mghft_pvt_small", text_encoder=False).eval()


def test_paper_model_shapes_at_448(small: mghft.MGHFT) -> None:
    with torch.no_grad():
        out = small(torch.randn(1, 3, 448, 448), text_features=torch.randn(1, 4, 768), explain=True)
    assert out["visual_seq"].shape == (1, 996, 512)
    assert out["text_seq"].shape == (1, 8, 512)
    assert out["logits"].shape == (1, 7)
    assert [idx.shape[1] for idx, _ in out["local_patches"]] == [512, 256, 160, 64]
    assert [size for _, size in out["local_patches"]] == [(112, 112), (56, 56), (28, 28), (14, 14)]
    for idx, (h, w) in out["local_patches"]:
        assert int(idx.min()) >= 0 and int(idx.max()) < h * w
    assert torch.allclose(out["view_attention"].sum(-1), torch.ones(1))


def test_paper_model_parameter_counts(small: mghft.MGHFT) -> None:
    vision = sum(count_parameters(m) for m in (small.backbone, small.cross_proj, small.local_proj, small.global_proj))
    assert abs(vision / 1e6 - 25.7) < 0.05
    assert abs(count_parameters(small.fusion) / 1e6 - 7.1) < 0.05
    proj = sum(count_parameters(m) for m in (small.text_proj, small.visual_proj, small.text_seq_proj, small.head))
    assert abs((proj + small.fusion_pos_embed.numel()) / 1e6 - 2.0) < 0.1


def test_local_token_count_is_independent_of_image_size(small: mghft.MGHFT) -> None:
    with torch.no_grad():
        out = small(torch.randn(1, 3, 224, 224), text_features=torch.randn(1, 4, 768))
    assert out["visual_seq"].shape == (1, 996, 512)


@pytest.mark.parametrize("name", mghft.list_models())
def test_every_variant_trains_and_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = mghft.create_model(name, text_encoder=False, image_size=64, fusion={"alpha": 1}).train()
    B = 3
    view_mask = torch.tensor([[True, True, True, True], [True, False, True, False], [False, True, False, True]])
    out = model(torch.randn(B, 3, 64, 64), text_features=torch.randn(B, 4, model.cfg.text.dim), view_mask=view_mask)
    loss = torch.nn.functional.cross_entropy(out["logits"], torch.tensor([0, 1, 2])) + out["align_loss"]
    assert torch.isfinite(loss)
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert dead == []


def test_bare_image_runs_with_all_views_absent() -> None:
    model = mghft.create_model("mghft_tiny", text_encoder=False).eval()
    with torch.no_grad():
        bare = model(torch.randn(2, 3, 64, 64))
        masked = model(
            torch.randn(2, 3, 64, 64), text_features=torch.randn(2, 4, 384), view_mask=torch.zeros(2, 4, dtype=bool)
        )
    assert bare["logits"].shape == (2, 7) and not bare["view_mask"].any()
    # With every view masked, the given features must not matter.
    assert torch.equal(bare["stage_text"], masked["stage_text"])


def test_wrong_text_feature_shape_is_a_clear_error() -> None:
    model = mghft.create_model("mghft_tiny", text_encoder=False)
    with pytest.raises(ValueError, match=r"\(B, 4, 384\)"):
        model(torch.randn(1, 3, 64, 64), text_features=torch.randn(1, 4, 768))


def test_self_attention_ablation_and_no_local_injection_run() -> None:
    model = mghft.create_model(
        "mghft_tiny", text_encoder=False, fusion={"attention": "self", "local_text_injection": False}
    )
    out = model(torch.randn(2, 3, 64, 64), text_features=torch.randn(2, 4, 384))
    assert out["logits"].shape == (2, 7)


def test_token_ids_and_cached_features_give_the_same_output() -> None:
    torch.manual_seed(0)
    model = mghft.create_model("mghft_tiny").eval()
    enc = model.text_encoder
    assert enc is not None
    texts = [
        ["a happy cat", "cartoon style", "a cat", "smiling, arms up"],
        ["an angry dog", "pixel art", "a dog", "growling"],
    ]
    flat = [t for row in texts for t in row]
    tok = enc.tokenize(flat)
    ids = tok["input_ids"].reshape(2, 4, -1)
    mask = tok["attention_mask"].reshape(2, 4, -1)
    feats = enc.encode(flat).reshape(2, 4, -1)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model(images, ids, mask)["logits"]
        b = model(images, text_features=feats)["logits"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
