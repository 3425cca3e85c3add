"""MGHFT's fusion pieces: Local Re-Attention token selection and the text-guided fusion attention (TGFA).

Local Re-Attention (Liu et al., "LORA", ACM MM 2022) rolls out a stage's attention maps and keeps, per head,
the patches the CLS query attends to most. Only the CLS row of the rolled-out product is needed, so a row
vector is pushed through the chain of maps: O(L * N * M) instead of the O(L * N^2 * M) matrix product (at
448 px the first stage's full product is a 12545 x 12545 matrix per sample and head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mghft.models.ops import f32, float32_island, linear

# --------------------------------------------------------------------------------------------------------------
# Local Re-Attention


def _rollout_factors(maps: list[Tensor], last: bool) -> list[tuple[Tensor, bool]]:
    """The rolled-out product as (map, transposed) factors, left to right.

    Non-last stages (maps (1+N) x (1+M), not square): R = A1 A0^T, then R = Ai^T R for even i, R = Ai R for odd
    i. Last stage (square maps): R = A_{L-1} ... A1 A0. A single map is its own rollout.
    """
    if last or len(maps) == 1:
        return [(a, False) for a in reversed(maps)]
    factors = [(maps[1], False), (maps[0], True)]
    for i in range(2, len(maps)):
        factors.insert(0, (maps[i], i % 2 == 0))
    return factors


def cls_rollout_scores(maps: list[Tensor], last: bool) -> Tensor:
    """Row 0 of the rolled-out attention without forming the product: (B, heads, n) scores, CLS column dropped."""
    factors = _rollout_factors(maps, last)
    first, transposed = factors[0]
    v = first[..., :, 0] if transposed else first[..., 0, :]  # (B, h, n0)
    for a, transposed in factors[1:]:
        m = a.transpose(-2, -1) if transposed else a
        v = (v.unsqueeze(-2) @ m).squeeze(-2)  # (B, h, 1, n) -> (B, h, n)
    return v[..., 1:]


def full_rollout_scores(maps: list[Tensor], last: bool) -> Tensor:
    """The same scores through the full matrix product, as the public code computes them (reference only)."""
    factors = _rollout_factors(maps, last)
    r = None
    for a, transposed in reversed(factors):
        m = a.transpose(-2, -1) if transposed else a
        r = m if r is None else m @ r
    assert r is not None
    return r[..., 0, 1:]


TIE_TOLERANCE = 1e-3
"""Rollout scores closer than this share of the head's largest score are a tie, broken by patch index."""


def top_patches(scores: Tensor, k: int, tie_tolerance: float = TIE_TOLERANCE) -> Tensor:
    """Positions of the ``k`` highest scores along the last axis, highest first: (..., k) int64.

    A plain ``topk`` decides between scores that are equal in exact arithmetic (the patches of a flat
    background) by float rounding, which changes with the batch size (a GEMM's row count picks its kernel), the
    device and the runtime (ONNX Runtime, TorchScript): the same image could get different patches. Here each
    score is rounded to a multiple of ``tie_tolerance`` times the largest score of its row, and equal levels go to
    the lower patch index. Rounding noise (about 1e-7 of the scale in float32) then changes a pick only when a
    score lies within that noise of a level's edge, instead of whenever two scores are tied. The selection key
    ``level * N + (N - 1 - index)`` is unique, so no runtime's ``topk`` has a tie left to break. ``tie_tolerance``
    0 is the plain ``topk`` (the public code's selection).
    """
    if tie_tolerance <= 0:
        return scores.topk(k, dim=-1).indices
    n = scores.shape[-1]
    scale = scores.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
    level = torch.round(scores / (scale * tie_tolerance)).long()  # (..., N), at most 1 / tie_tolerance
    later = torch.arange(n - 1, -1, -1, device=scores.device)  # N-1 .. 0: the lower index ranks higher
    return (level * n + later).topk(k, dim=-1).indices


def select_local_tokens(
    maps: list[Tensor],
    k: int,
    last: bool,
    n_cls: int = 1,
    full: bool = False,
    tie_tolerance: float = TIE_TOLERANCE,
) -> Tensor:
    """Indices of the top-``k`` patches per head, as token positions (CLS offset added): (B, heads * k).

    Duplicates across heads are kept. The rollout runs without gradient in at least float32; ``full`` forms the
    whole products (the public code's way) instead of the CLS row. Ties up to ``tie_tolerance`` go to the lower
    patch index (see :func:`top_patches`; 0 keeps the public code's plain ``topk``).
    """
    with torch.no_grad():
        dtype = torch.promote_types(maps[0].dtype, torch.float32)
        rollout = full_rollout_scores if full else cls_rollout_scores
        scores = rollout([m.detach().to(dtype) for m in maps], last)  # (B, h, N)
        if k > scores.shape[-1]:
            raise ValueError(f"cannot pick {k} local tokens per head from {scores.shape[-1]} candidates")
        idx = top_patches(scores, k, tie_tolerance) + n_cls  # (B, h, k)
    return idx.flatten(1)


def gather_tokens(tokens: Tensor, idx: Tensor) -> Tensor:
    """tokens (B, N, C), idx (B, K) -> (B, K, C)."""
    return tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def mlp2(dim_in: int, dim_hidden: int, dim_out: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear (the public code's cross/local/global projections)."""
    return nn.Sequential(nn.Linear(dim_in, dim_hidden), nn.ReLU(), nn.Linear(dim_hidden, dim_out))


# --------------------------------------------------------------------------------------------------------------
# Text-guided fusion attention


class FusionAttention(nn.Module):
    """Multi-head attention that serves both TGFA (``context`` given) and plain self-attention.

    TGFA in two steps, with the same key and value layers for both modalities:
      1. each visual query attends over the text tokens:  V~ = softmax(Q K_t^T / sqrt(d)) V_t
      2. V~ attends over the visual keys:                  out = softmax(V~ K^T / sqrt(d)) V

    Output row n depends on query row n alone (keys and values come from every token), so ``rows`` computes
    only the first ``rows`` output rows, exactly: the head of MGHFT reads token 0 alone.

    With few rows (``rows * heads < dim``) step 2 never forms the keys and values of the N tokens. Per head,
    q K^T = (q W_k) X^T + q b_k, where q b_k is the same for every key and cancels in the softmax, and
    a V = (a X) W_v^T + (sum a) b_v. That is h * R * N * dim multiply-adds per product instead of N * dim^2 for
    each of K and V (12 x 1 x 996 x 768 against 996 x 768^2 for the paper model): the same values up to float
    rounding, with the same gradients and dropout (on ``a``).
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(attn_drop)

    def _heads(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        return x.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)

    def _attend_tokens(self, q: Tensor, x: Tensor, dropout_p: float) -> Tensor:
        """softmax(q K^T / sqrt(d)) V over the tokens x (B, N, D) without forming K and V: (B, h, R, d)."""
        B, h, R, d = q.shape
        D = x.shape[-1]
        with float32_island():  # the fused row's attention decides the head's input: float32 under autocast too
            q, x = f32(q), f32(x)
            w_k, w_v = self.k.weight.view(h, d, D), self.v.weight.view(h, d, D)
            u = torch.einsum("bhrd,hdD->bhrD", q, w_k).reshape(B, h * R, D)  # q W_k per head
            a = (torch.bmm(u, x.transpose(1, 2)) * d**-0.5).softmax(dim=-1)  # (B, h*R, N)
            a = F.dropout(a, dropout_p) if dropout_p > 0 else a
            ax = torch.bmm(a, x).view(B, h, R, D)  # a X
            out = torch.einsum("bhrD,hdD->bhrd", ax, w_v)  # (a X) W_v^T: (B, h, R, d)
            if self.v.bias is not None:
                out = out + a.sum(dim=-1).view(B, h, R, 1) * self.v.bias.view(1, h, 1, d)
        return out

    def forward(
        self, x: Tensor, context: Tensor | None = None, need_weights: bool = False, rows: int | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, N, D), context (B, T, D) -> (B, R, D) and, if asked, the step-1 text attention (B, h, R, T).

        R is ``rows`` (the first R query rows; at most N) or N when ``rows`` is None.
        """
        B, N, D = x.shape
        R = N if rows is None else min(rows, N)
        q = self._heads(linear(x[:, :R], self.q))  # (B, h, R, d)
        p = self.attn_drop.p if self.training else 0.0
        text_attn = None
        if context is not None:
            kt, vt = self._heads(linear(context, self.k)), self._heads(linear(context, self.v))  # (B, h, T, d)
            with float32_island():  # scores and softmax in float32 under autocast (the view weights)
                text_attn = (f32(q) @ f32(kt).transpose(-2, -1) / self.head_dim**0.5).softmax(dim=-1)  # (B, h, R, T)
            q = self.attn_drop(text_attn) @ vt  # (B, h, R, d): the text-guided queries
        if R * self.num_heads < D:
            out = self._attend_tokens(q, x, p)  # (B, h, R, d)
        else:
            k, v = self._heads(linear(x, self.k)), self._heads(linear(x, self.v))  # (B, h, N, d)
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, h, R, d)
        out = out.transpose(1, 2).reshape(B, R, D)
        return self.proj_drop(linear(out, self.proj)), (text_attn if need_weights else None)


class FusionMlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(linear(self.drop(linear(x, self.fc1, gelu=True)), self.fc2))


class FusionBlock(nn.Module):
    """One pre-norm block: LayerNorm on the visual tokens only, TGFA (or self-attention), MLP.

    ``rows`` computes only the first ``rows`` output tokens (keys and values still come from all of them):
    the residual, the second LayerNorm and the MLP act on each token alone, so these rows equal the same rows
    of the full computation, and dropout draws the same independent masks on them.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = FusionAttention(dim, num_heads, attn_dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FusionMlp(dim, mlp_dim, dropout)

    def forward(
        self, x: Tensor, context: Tensor | None = None, need_weights: bool = False, rows: int | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, N, D), context (B, T, D) -> (B, R, D) (R = ``rows`` or N) and the text attention (B, h, R, T)."""
        y, attn = self.attn(self.norm1(x), context, need_weights, rows)  # (B, R, D)
        x = x[:, : y.shape[1]] + y
        return x + self.mlp(self.norm2(x)), attn
