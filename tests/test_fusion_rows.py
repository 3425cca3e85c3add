"""Query-0 fusion: computing only the fused token the head reads equals the full block's token 0."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mghft
from mghft.models.fusion import FusionBlock


def _full_block(block: FusionBlock, x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Every row of the fusion block, written out with explicit attention maps (as the public code does)."""
    a = block.attn
    B, N, D = x.shape
    h, d = a.num_heads, a.head_dim

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(B, -1, h, d).permute(0, 2, 1, 3)

    xn = block.norm1(x)
    q, k, v = heads(a.q(xn)), heads(a.k(xn)), heads(a.v(xn))
    text_attn = None
    if context is not None:
        text_attn = (q @ heads(a.k(context)).transpose(-1, -2) / math.sqrt(d)).softmax(-1)  # (B, h, N, T)
        q = text_attn @ heads(a.v(context))
    attn = (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(-1)  # (B, h, N, N)
    y = a.proj((attn @ v).permute(0, 2, 1, 3).reshape(B, N, D))
    x = x + y
    m = block.mlp
    return x + m.fc2(torch.nn.functional.gelu(m.fc1(block.norm2(x)))), text_attn


def _model(attention: str, dropout: float = 0.0) -> mghft.MGHFT:
    torch.manual_seed(0)
    fusion = {"attention": attention, "alpha": 1, "dropout": dropout, "attn_dropout": dropout}
    return mghft.create_model("mghft_tiny", text_encoder=False, image_size=64, fusion=fusion).double()


@pytest.mark.parametrize("attention", ["tgfa", "self"])
@pytest.mark.parametrize("training", [False, True])
def test_logits_equal_the_full_fusion_in_float64(attention: str, training: bool) -> None:
    model = _model(attention).train(training)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, 64, 64, generator=g, dtype=torch.float64)
    feats = torch.randn(3, 4, model.cfg.text.dim, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True] * 4, [True, False, True, False], [False] * 4])
    out = model(images, text_features=feats, view_mask=mask, explain=True)
    assert (out.get("align_loss") is not None) == training

    hid = model.visual_proj(out["visual_seq"]) + model.fusion_pos_embed  # (B, N, hidden)
    ctx = model.text_seq_proj(out["text_seq"]) if attention == "tgfa" else None
    full, text_attn = _full_block(model.fusion, hid, ctx)  # (B, N, hidden): every row
    assert full.shape[1] == model.cfg.visual_tokens > 1
    ref = model.head(full[:, 0])
    assert out["logits"].dtype == torch.float64
    assert (out["logits"] - ref).abs().max().item() < 1e-6
    torch.testing.assert_close(out["logits"], ref, rtol=1e-12, atol=1e-12)
    if attention == "tgfa":
        assert text_attn is not None
        w = text_attn[:, :, 0].mean(dim=1)  # token 0's text attention, averaged over heads
        per_view = (w[:, :4] + w[:, 4:]).flip(1)
        torch.testing.assert_close(out["view_attention"], per_view / per_view.sum(1, keepdim=True))
    else:
        assert "view_attention" not in out


@pytest.mark.parametrize("attention", ["tgfa", "self"])
def test_fused_rows_keep_their_dropout_statistics(attention: str) -> None:
    """In training mode the computed row draws its dropout like the full block's row 0: same mean and spread."""
    torch.manual_seed(0)
    block = FusionBlock(16, 4, 32, dropout=0.3, attn_dropout=0.3).double().train()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 12, 16, generator=g, dtype=torch.float64).expand(20000, -1, -1)  # one input, 20000 draws
    ctx = torch.randn(1, 8, 16, generator=g, dtype=torch.float64).expand(20000, -1, -1) if attention == "tgfa" else None
    with torch.no_grad():
        rows, _ = block(x, ctx, rows=1)
        full, _ = block(x, ctx)
        clean, _ = block.eval()(x[:1], ctx[:1] if ctx is not None else None)
    a, b = rows[:, 0], full[:, 0]  # (draws, 16)
    assert a.std(0).min() > 1e-3  # dropout is on
    assert (a.mean(0) - clean[0, 0]).abs().max() > 1e-3  # and changes the output
    se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() / se).max() < 5.0
    torch.testing.assert_close(a.std(0), b.std(0), rtol=0.06, atol=0.0)


def test_the_fusion_block_computes_one_row() -> None:
    """The fusion block's FLOPs in a forward are a small fraction of the full block's on the same inputs."""
    model = _model("tgfa").float().eval()
    images, feats = torch.randn(2, 3, 64, 64), torch.randn(2, 4, model.cfg.text.dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(images, text_features=feats)
    used = sum(counter.get_flop_counts()["MGHFT.fusion"].values())
    hid = model.visual_proj(out["visual_seq"]) + model.fusion_pos_embed
    ctx = model.text_seq_proj(out["text_seq"])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.fusion(hid, ctx)
    full = sum(counter.get_flop_counts()["FusionBlock"].values())
    assert 0 < used < 0.5 * full


def test_rows_beyond_the_sequence_are_the_whole_sequence() -> None:
    block = FusionBlock(16, 4, 32, dropout=0.0, attn_dropout=0.0).double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block(x, rows=9)[0], block(x)[0])
        torch.testing.assert_close(block(x, rows=3)[0], block(x)[0][:, :3])


def test_one_row_of_the_paper_block_never_forms_keys_and_values() -> None:
    """At the paper's width (768, 12 heads, 996 tokens) token 0 costs well under the two key/value layers."""
    torch.manual_seed(0)
    block = FusionBlock(768, 12, 3072, dropout=0.0, attn_dropout=0.0).double().eval()
    x, ctx = torch.randn(1, 996, 768, dtype=torch.float64), torch.randn(1, 8, 768, dtype=torch.float64)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            row, attn = block(x, ctx, need_weights=True, rows=1)
        one = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            full, full_attn = block(x, ctx, need_weights=True)
    keys_and_values = 2 * 2 * 996 * 768 * 768
    assert one < 0.05 * keys_and_values
    torch.testing.assert_close(row[:, 0], full[:, 0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(attn[:, :, 0], full_attn[:, :, 0], rtol=1e-12, atol=1e-12)
    assert counter.get_total_flops() > 10 * keys_and_values / 2
