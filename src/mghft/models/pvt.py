"""Pyramid Vision Transformers v1 and v2 with a CLS token in every stage.

PVT v1: Wang et al., "Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without
Convolutions", ICCV 2021. PVT v2: Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer",
CVMJ 2022.

Differences from the ImageNet models, all needed by MGHFT's Local Re-Attention:
- every stage can carry a CLS token (``stage_cls=True``); spatial reduction applies to patch tokens only and
  the CLS key/value is concatenated unreduced, so each attention map is (1+N) x (1+M);
- attention blocks can return their softmax maps (before dropout).
With ``stage_cls=False`` a v1 model is the ImageNet PVT v1 and a v2 model the ImageNet PVT v2.

State-dict keys follow the released checkpoints: ``whai362/PVT`` ``pvt_*.pth`` for v1 (``patch_embed1``,
``block1.0.attn.q``, ``pos_embed1``, ``cls_token``, ``norm``) and timm's ``pvt_v2_*`` for v2
(``patch_embed``, ``stages.1.downsample``, ``stages.0.blocks.0.mlp.dwconv``, ``stages.0.norm``). The extra
CLS tokens (``cls_token1..3`` in v1, ``stages.i.cls_token`` in v2) and v2's top-level ``norm`` are the only
keys those checkpoints lack.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mghft.config import VisionConfig
from mghft.models.ops import f32, float32_island, linear, linear_weights


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)  # the per-sample factor scaled first: one pass over x, as timm's drop_path

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _GeluLinear(torch.autograd.Function):
    """``F.linear(F.gelu(h), weight, bias)`` that keeps only ``h`` for the backward pass and recomputes the GELU.

    Same values and gradients as the plain ops; it saves one hidden-size activation per MLP (the GELU output,
    4-8x the token width), the largest tensors a PVT training step keeps. Under autocast the backward runs in the
    gradient's dtype and hands back weight gradients in the weight's dtype, as autocast's own cast would.
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None
        return linear_weights(F.gelu(h), weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        h, weight = ctx.saved_tensors
        g_h = g_w = g_b = None
        flat = grad.reshape(-1, grad.shape[-1])  # (tokens, out)
        if ctx.needs_input_grad[0]:
            g_h = torch.ops.aten.gelu_backward((grad @ weight.to(grad.dtype)).to(h.dtype), h)  # (..., hidden)
        if ctx.needs_input_grad[1]:
            act = F.gelu(h).reshape(-1, h.shape[-1]).to(grad.dtype)  # (tokens, hidden), recomputed
            g_w = (flat.t() @ act).to(weight.dtype)  # (out, hidden)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            g_b = flat.sum(0).to(weight.dtype)
        return g_h, g_w, g_b


class Mlp(nn.Module):
    """Transformer MLP; with ``dwconv`` (PVT v2) a 3x3 depthwise conv mixes the patch tokens (not the CLS)."""

    def __init__(
        self, dim: int, hidden: int, drop: float = 0.0, dwconv: bool = False, extra_relu: bool = False
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.relu = nn.ReLU() if extra_relu else nn.Identity()
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden) if dwconv else None
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, size: tuple[int, int], n_cls: int) -> Tensor:
        # With gradients (and no dropout between) the GELU is recomputed in the backward pass; without, it runs
        # inside fc1's product where nothing sits between them (PVT v1).
        recompute = torch.is_grad_enabled() and (self.drop.p == 0 or not self.training)
        fused = not recompute and self.dwconv is None
        x = linear(x, self.fc1, gelu=fused)  # (B, n_cls + H*W, hidden)
        if self.dwconv is not None:
            B, _, C = x.shape
            H, W = size
            cls, patches = x.split([n_cls, H * W], dim=1)  # its backward concatenates; slices would zero-fill
            patches = self.relu(patches).reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W) channels-last
            patches = self.dwconv(patches).flatten(2).transpose(1, 2)  # (B, H*W, hidden)
            x = torch.cat([cls, patches], dim=1)
        if recompute:
            return self.drop(_GeluLinear.apply(x, self.fc2.weight, self.fc2.bias))  # keeps x, not GELU(x)
        x = self.drop(x if fused else self.act(x))
        return self.drop(linear(x, self.fc2))


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys/values come from a spatially reduced copy of the patch tokens.

    The first ``n_cls`` tokens (the CLS token) are never reduced: they are concatenated to the reduced patch
    tokens before the reduction LayerNorm, as the public MGHFT code does.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        linear: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.linear = linear
        self.sr_ratio = sr_ratio
        if linear:
            self.pool = nn.AdaptiveAvgPool2d(7)
            self.sr = nn.Conv2d(dim, dim, kernel_size=1, stride=1)
            self.norm = nn.LayerNorm(dim)
            self.act = nn.GELU()
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def _reduce(self, x: Tensor, size: tuple[int, int], n_cls: int) -> Tensor:
        if not self.linear and self.sr_ratio == 1:
            return x
        B, _, C = x.shape
        H, W = size
        cls, patches = x.split([n_cls, H * W], dim=1)  # its backward concatenates; slices would zero-fill
        patches = patches.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W) channels-last: no copy
        if self.linear:
            patches = self.pool(patches)
        patches = self.sr(patches).flatten(2).transpose(1, 2)  # (B, M, C)
        out = self.norm(torch.cat([cls, patches], dim=1))  # (B, n_cls + M, C)
        return self.act(out) if self.linear else out

    def forward(
        self, x: Tensor, size: tuple[int, int], n_cls: int, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Returns the output (B, N, C) and, if asked, the softmax map (B, heads, N, n_cls + M) before dropout."""
        B, N, C = x.shape
        if need_weights:  # the scale folded into the query layer: (q / sqrt(d)) K^T, exact for d = 64 (1/8)
            q = linear_weights(x, self.q.weight * self.scale, None if self.q.bias is None else self.q.bias * self.scale)
        else:
            q = linear(x, self.q)
        q = q.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)
        kv = self._reduce(x, size, n_cls)
        kv = linear(kv, self.kv).reshape(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # (B, h, M', d) each
        if need_weights:
            with float32_island():  # the maps feed the rollout and the patch choice: float32 under autocast too
                attn = (f32(q) @ f32(k).transpose(-2, -1)).softmax(dim=-1)  # (B, h, N, M'), q already scaled
            out = self.attn_drop(attn) @ v  # (B, h, N, d)
        else:
            attn = None
            p = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(linear(out, self.proj)), attn


class Block(nn.Module):
    """Pre-norm transformer block with spatial-reduction attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        sr_ratio: int,
        qkv_bias: bool,
        eps: float,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        v2: bool = False,
        linear: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, qkv_bias, attn_drop, drop, linear)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop, dwconv=v2, extra_relu=linear)

    def forward(
        self, x: Tensor, size: tuple[int, int], n_cls: int, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        y, attn = self.attn(self.norm1(x), size, n_cls, need_weights)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x), size, n_cls))
        return x, attn


class PatchEmbed(nn.Module):
    """Non-overlapping (v1: kernel = stride) or overlapping (v2: kernel > stride) patch embedding + LayerNorm."""

    def __init__(self, in_chans: int, dim: int, patch: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans, dim, kernel_size=patch, stride=stride, padding=patch // 2 if patch > stride else 0
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.proj(x.contiguous(memory_format=torch.channels_last))  # (B, C, H, W), channels-last
        # channels-last: the token view below is contiguous, LayerNorm needs no copy
        size = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), size  # (B, H*W, C)


@dataclass
class StageOutput:
    """What one stage hands to the fusion: its tokens (CLS first, if any), grid and attention maps."""

    tokens: Tensor
    """(B, n_cls + H*W, C)."""
    size: tuple[int, int]
    attn: list[Tensor]
    """One (B, heads, n_cls + H*W, n_cls + M) softmax map per block; empty unless asked for (or taken by ``pick``)."""
    n_cls: int
    picked: Tensor | None = None
    """What ``forward_stages``'s ``pick`` made of the maps (then dropped), e.g. token indices (B, K)."""


Pick = Callable[[int, list[Tensor], int], Tensor | None]
"""``pick(stage, maps, n_cls)``: what a stage's attention maps are for, computed as soon as the stage ends."""


def _stage_output(
    i: int, x: Tensor, size: tuple[int, int], maps: list[Tensor], n_cls: int, pick: Pick | None
) -> StageOutput:
    if pick is None:
        return StageOutput(x, size, maps, n_cls)
    return StageOutput(x, size, [], n_cls, pick(i, maps, n_cls))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _drop_path_rates(cfg: VisionConfig) -> list[list[float]]:
    rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
    out, i = [], 0
    for d in cfg.depths:
        out.append(rates[i : i + d])
        i += d
    return out


def _make_blocks(cfg: VisionConfig, i: int, rates: list[float], v2: bool) -> nn.ModuleList:
    return nn.ModuleList(
        Block(
            cfg.embed_dims[i],
            cfg.num_heads[i],
            cfg.mlp_ratios[i],
            cfg.sr_ratios[i],
            cfg.qkv_bias,
            cfg.norm_eps,
            cfg.drop_rate,
            cfg.attn_drop_rate,
            rates[j],
            v2=v2,
            linear=cfg.linear_attn,
        )
        for j in range(cfg.depths[i])
    )


class PyramidVisionTransformer(nn.Module):
    """PVT v1 (``whai362/PVT`` key layout), optionally with a CLS token in stages 1-3 as well as stage 4."""

    def __init__(self, cfg: VisionConfig, num_classes: int = 0, stage_cls: bool = True, in_chans: int = 3) -> None:
        super().__init__()
        if cfg.arch != "pvt_v1":
            raise ValueError(f"vision.arch: PyramidVisionTransformer builds pvt_v1, got {cfg.arch!r}")
        self.cfg = cfg
        self.stage_cls = stage_cls
        self.embed_dims = cfg.embed_dims
        rates = _drop_path_rates(cfg)
        grid = cfg.pretrain_size // cfg.patch_size
        self.pos_grids: list[int] = []
        for i in range(4):
            patch = cfg.patch_size if i == 0 else 2
            prev = in_chans if i == 0 else cfg.embed_dims[i - 1]
            setattr(self, f"patch_embed{i + 1}", PatchEmbed(prev, cfg.embed_dims[i], patch, patch))
            n = grid * grid + (1 if i == 3 else 0)  # the stage-4 table holds a CLS slot
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, n, cfg.embed_dims[i])))
            setattr(self, f"pos_drop{i + 1}", nn.Dropout(cfg.drop_rate))
            setattr(self, f"block{i + 1}", _make_blocks(cfg, i, rates[i], v2=False))
            if stage_cls and i < 3:
                setattr(self, f"cls_token{i + 1}", nn.Parameter(torch.zeros(1, 1, cfg.embed_dims[i])))
            self.pos_grids.append(grid)
            grid //= 2
        self.norm = nn.LayerNorm(cfg.embed_dims[3], eps=cfg.norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dims[3]))
        self.head = nn.Linear(cfg.embed_dims[3], num_classes) if num_classes > 0 else nn.Identity()
        for name, p in self.named_parameters():
            if name.startswith(("pos_embed", "cls_token")):
                nn.init.trunc_normal_(p, std=0.02)
        self.apply(_init_weights)

    def _stage_cls(self, i: int) -> Tensor | None:
        if i == 3:
            return self.cls_token
        return getattr(self, f"cls_token{i + 1}") if self.stage_cls else None

    def _pos_embed(self, i: int, size: tuple[int, int], with_cls: bool) -> Tensor:
        """Positional table for stage ``i`` at grid ``size``: (1, [1 +] H*W, C).

        Stages 1-3 store patch positions only; their CLS position is the first entry of the stored
        (uninterpolated) table, as in the public MGHFT code. Stage 4 stores a CLS slot first.
        """
        table = getattr(self, f"pos_embed{i + 1}")
        g = self.pos_grids[i]
        patches = table[:, 1:] if i == 3 else table
        if size != (g, g):
            C = patches.shape[-1]
            patches = F.interpolate(patches.reshape(1, g, g, C).permute(0, 3, 1, 2), size=size, mode="bilinear")
            patches = patches.flatten(2).transpose(1, 2)  # (1, H*W, C)
        if not with_cls:
            return patches
        return torch.cat([table[:, :1], patches], dim=1)

    def forward_stages(self, x: Tensor, need_weights: bool = True, pick: Pick | None = None) -> list[StageOutput]:
        """Run the four stages; the tokens of each stage keep its CLS token (first) if it has one.

        With ``pick`` the maps of each stage go to ``pick`` when the stage ends and its result is kept as
        ``picked`` instead: without gradients a stage's maps are then freed before the next stage runs.
        """
        B = x.shape[0]
        outs: list[StageOutput] = []
        for i in range(4):
            x, size = getattr(self, f"patch_embed{i + 1}")(x)  # (B, H*W, C)
            cls = self._stage_cls(i)
            n_cls = 0 if cls is None else 1
            if cls is not None:
                x = torch.cat([cls.expand(B, -1, -1), x], dim=1)  # (B, 1 + H*W, C)
            x = getattr(self, f"pos_drop{i + 1}")(x + self._pos_embed(i, size, cls is not None))
            maps = []
            for blk in getattr(self, f"block{i + 1}"):
                x, attn = blk(x, size, n_cls, need_weights)
                if attn is not None:
                    maps.append(attn)
            outs.append(_stage_output(i, x, size, maps, n_cls, pick))
            del maps
            if i < 3:
                H, W = size
                x = x[:, n_cls:].reshape(B, H, W, -1).permute(0, 3, 1, 2)  # (B, C, H, W) channels-last view
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """ImageNet-style pooled feature: the normalised stage-4 CLS token, (B, C)."""
        return self.norm(self.forward_stages(x, need_weights=False)[-1].tokens)[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))


class PyramidVisionTransformerStage(nn.Module):
    """One PVT v2 stage: optional downsampling patch embed, blocks, LayerNorm, optional CLS token."""

    def __init__(self, cfg: VisionConfig, i: int, rates: list[float], stage_cls: bool) -> None:
        super().__init__()
        dim = cfg.embed_dims[i]
        self.downsample = PatchEmbed(cfg.embed_dims[i - 1], dim, 3, 2) if i > 0 else None
        self.blocks = _make_blocks(cfg, i, rates, v2=True)
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if stage_cls else None


class PyramidVisionTransformerV2(nn.Module):
    """PVT v2 (timm ``pvt_v2_*`` key layout), optionally with a CLS token in every stage."""

    def __init__(self, cfg: VisionConfig, num_classes: int = 0, stage_cls: bool = True, in_chans: int = 3) -> None:
        super().__init__()
        if cfg.arch != "pvt_v2":
            raise ValueError(f"vision.arch: PyramidVisionTransformerV2 builds pvt_v2, got {cfg.arch!r}")
        self.cfg = cfg
        self.stage_cls = stage_cls
        self.embed_dims = cfg.embed_dims
        rates = _drop_path_rates(cfg)
        self.patch_embed = PatchEmbed(in_chans, cfg.embed_dims[0], 7, 4)
        self.stages = nn.ModuleList(PyramidVisionTransformerStage(cfg, i, rates[i], stage_cls) for i in range(4))
        # Not part of PVT v2: the LayerNorm MGHFT applies to its visual sequence (v1 reuses its final norm).
        self.norm = nn.LayerNorm(cfg.embed_dims[3], eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.embed_dims[3], num_classes) if num_classes > 0 else nn.Identity()
        for stage in self.stages:
            if stage.cls_token is not None:
                nn.init.trunc_normal_(stage.cls_token, std=0.02)
        self.apply(_init_weights)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_stages(self, x: Tensor, need_weights: bool = True, pick: Pick | None = None) -> list[StageOutput]:
        """Run the four stages; each stage's tokens are LayerNorm-ed as in PVT v2, CLS first if present.

        ``pick``: as in :meth:`PyramidVisionTransformer.forward_stages`.
        """
        B = x.shape[0]
        outs: list[StageOutput] = []
        for i, stage in enumerate(self.stages):
            embed = self.patch_embed if i == 0 else stage.downsample
            x, size = embed(x)  # (B, H*W, C)
            n_cls = 0 if stage.cls_token is None else 1
            if stage.cls_token is not None:
                x = torch.cat([stage.cls_token.expand(B, -1, -1), x], dim=1)
            maps = []
            for blk in stage.blocks:
                x, attn = blk(x, size, n_cls, need_weights)
                if attn is not None:
                    maps.append(attn)
            x = stage.norm(x)
            outs.append(_stage_output(i, x, size, maps, n_cls, pick))
            del maps
            H, W = size
            x = x[:, n_cls:].reshape(B, H, W, -1).permute(0, 3, 1, 2)  # (B, C, H, W) channels-last view
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """ImageNet-style pooled feature: mean of the stage-4 patch tokens, (B, C)."""
        last = self.forward_stages(x, need_weights=False)[-1]
        return last.tokens[:, last.n_cls :].mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))


Backbone = PyramidVisionTransformer | PyramidVisionTransformerV2


def build_backbone(cfg: VisionConfig, num_classes: int = 0, stage_cls: bool = True) -> Backbone:
    """The backbone for ``cfg.arch``."""
    cls = PyramidVisionTransformer if cfg.arch == "pvt_v1" else PyramidVisionTransformerV2
    return cls(cfg, num_classes=num_classes, stage_cls=stage_cls)


# Named backbone shapes (the released ImageNet models).
_V1 = dict(arch="pvt_v1", embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4))
_V2 = dict(arch="pvt_v2", num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), drop_path_rate=0.1)
BACKBONES: dict[str, VisionConfig] = {
    "pvt_tiny": VisionConfig(**_V1, name="pvt_tiny", depths=(2, 2, 2, 2)),
    "pvt_small": VisionConfig(**_V1, name="pvt_small", depths=(3, 4, 6, 3)),
    "pvt_medium": VisionConfig(**_V1, name="pvt_medium", depths=(3, 4, 18, 3)),
    "pvt_large": VisionConfig(**_V1, name="pvt_large", depths=(3, 8, 27, 3)),
    "pvt_v2_b0": VisionConfig(**_V2, name="pvt_v2_b0", embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "pvt_v2_b1": VisionConfig(**_V2, name="pvt_v2_b1", embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "pvt_v2_b2": VisionConfig(**_V2, name="pvt_v2_b2", embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "pvt_v2_b2_li": VisionConfig(
        **_V2, name="pvt_v2_b2_li", embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3), linear_attn=True
    ),
    "pvt_v2_b3": VisionConfig(**_V2, name="pvt_v2_b3", embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "pvt_v2_b4": VisionConfig(**_V2, name="pvt_v2_b4", embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "pvt_v2_b5": VisionConfig(
        arch="pvt_v2",
        name="pvt_v2_b5",
        embed_dims=(64, 128, 320, 512),
        num_heads=(1, 2, 5, 8),
        mlp_ratios=(4, 4, 4, 4),
        depths=(3, 6, 40, 3),
        drop_path_rate=0.1,
    ),
}
