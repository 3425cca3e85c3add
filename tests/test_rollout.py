"""Local Re-Attention: the row-vector rollout equals the public code's full matrix product."""

from __future__ import annotations

import pytest
import torch

import mghft
from mghft.models.fusion import cls_rollout_scores, full_rollout_scores, select_local_tokens


def _maps(depth: int, n: int, m: int, heads: int = 2, batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, heads, n + 1, m + 1, generator=g, dtype=torch.float64).mul(3).softmax(-1)
        for _ in range(depth)
    ]


def _public_code_rollout(maps: list[torch.Tensor], last: bool) -> torch.Tensor:
    """The public code's loop, written out step by step as method.md states it."""
    r = maps[0]
    for i in range(1, len(maps)):
        if last:
            r = maps[i] @ r
        elif i == 1:
            r = maps[1] @ maps[0].transpose(-2, -1)
        elif i % 2 == 0:
            r = maps[i].transpose(-2, -1) @ r
        else:
            r = maps[i] @ r
    return r[..., 0, 1:]


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 6])
def test_row_vector_rollout_matches_full_product_on_reduced_maps(depth: int) -> None:
    maps = _maps(depth, n=64, m=16)
    ref = _public_code_rollout(maps, last=False)
    torch.testing.assert_close(cls_rollout_scores(maps, last=False), ref, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(full_rollout_scores(maps, last=False), ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("depth", [1, 3])
def test_row_vector_rollout_matches_full_product_on_square_maps(depth: int) -> None:
    maps = _maps(depth, n=49, m=49)
    ref = _public_code_rollout(maps, last=True)
    torch.testing.assert_close(cls_rollout_scores(maps, last=True), ref, rtol=1e-12, atol=1e-15)


def test_selected_tokens_match_full_product_topk() -> None:
    maps = _maps(4, n=256, m=16, heads=2)
    k = 8 * 16
    idx = select_local_tokens(maps, k, last=False, tie_tolerance=0.0)  # (B, heads * k): plain topk
    ref = _public_code_rollout(maps, last=False).topk(k, dim=-1).indices + 1
    assert torch.equal(idx, ref.flatten(1))


def test_model_picks_the_same_tokens_as_the_full_product_in_float64() -> None:
    torch.manual_seed(0)
    model = mghft.create_model("mghft_tiny", text_encoder=False, image_size=128, fusion={"alpha": 2}).double().eval()
    stages = model.backbone.forward_stages(torch.randn(2, 3, 128, 128, dtype=torch.float64))
    for i, st in enumerate(stages):
        k = model.cfg.local_tokens_per_head()[i]
        last = i == 3
        ours = select_local_tokens(st.attn, k, last, tie_tolerance=0.0)
        ref = _public_code_rollout(st.attn, last).topk(k, dim=-1).indices + 1
        assert torch.equal(ours, ref.flatten(1)), f"stage {i + 1}"


def test_too_many_local_tokens_is_rejected_by_the_config() -> None:
    with pytest.raises(mghft.ConfigError, match="image_size"):
        mghft.create_model("mghft_pvt_small", text_encoder=False, image_size=64)
