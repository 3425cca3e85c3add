"""Local Re-Attention picks the same patches for a sticker whatever else shares its batch.

Stickers on a flat background give rollout scores that are tied in exact arithmetic; float rounding, which
changes with a GEMM's row count, used to break those ties differently alone and in a batch.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

import mghft
from mghft.models.fusion import TIE_TOLERANCE, cls_rollout_scores, top_patches
from tests import synthetic


def flat_background_batch(n: int, seed: int = 0, size: int = 64) -> torch.Tensor:
    """``n`` synthetic stickers composited on white, normalised: (n, 3, size, size)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        sticker = synthetic.sticker(synthetic.CLASSES[i % len(synthetic.CLASSES)], rng, size)
        canvas = Image.new("RGBA", sticker.size, (255, 255, 255, 255))
        canvas.alpha_composite(sticker)
        rgb = torch.from_numpy(np.asarray(canvas.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
        out.append((rgb - 0.5) / 0.25)
    return torch.stack(out)


def _run(model: mghft.MGHFT, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with torch.no_grad():
        out = model(images, explain=True)
    return out["logits"].softmax(-1), [idx for idx, _ in out["local_patches"]]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_sticker_alone_and_in_a_batch_of_12_gets_the_same_patches_and_probabilities(seed: int) -> None:
    torch.manual_seed(seed)
    model = mghft.create_model("mghft_tiny", num_classes=3, text_encoder=False).eval()
    images = flat_background_batch(12, seed=seed)
    p_batch, picks_batch = _run(model, images)
    for j in range(len(images)):
        p_alone, picks_alone = _run(model, images[j : j + 1])
        for stage, (a, b) in enumerate(zip(picks_alone, picks_batch, strict=True)):
            assert torch.equal(a[0], b[j]), f"sticker {j}, stage {stage + 1}: different patches alone and in a batch"
        # The same patches leave only float rounding: differences of order 1e-7.
        torch.testing.assert_close(p_alone[0], p_batch[j], rtol=0, atol=1e-5)


def test_ties_go_to_the_lower_patch_index_whatever_the_rounding_noise() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([0.5, 0.2, 0.2, 0.2, 0.2, 0.1, 1.0]).repeat(200, 1)  # (200, 7): a four-way tie at 0.2
    noisy = scores * (1 + 1e-6 * torch.randn(scores.shape, generator=g))  # float32 rounding is ~1e-7 of this
    picks = top_patches(noisy, 4)
    assert (picks == torch.tensor([6, 0, 1, 2])).all(), "highest first, then the tie in patch order"
    assert not (noisy.topk(4).indices == picks).all(), "plain topk breaks the tie by the noise"
    # Scores further apart than the tolerance keep their order.
    apart = torch.tensor([[0.3, 0.3 * (1 + 3 * TIE_TOLERANCE), 0.1]])
    assert top_patches(apart, 1).tolist() == [[1]]


def test_official_compat_keeps_plain_topk() -> None:
    """compat="official" selects as the public code does (float64 parity stays exact)."""
    torch.manual_seed(0)
    model = mghft.create_model("mghft_tiny", num_classes=3, text_encoder=False, compat="official").eval().double()
    images = flat_background_batch(2).double()
    _, picks = _run(model, images)
    with torch.no_grad():
        stages = model.backbone.forward_stages(images)
    for i, st in enumerate(stages):
        k = model.cfg.local_tokens_per_head()[i]
        scores = cls_rollout_scores(st.attn, i == 3)
        assert torch.equal(picks[i], scores.topk(k, dim=-1).indices.flatten(1)), f"stage {i + 1}"
