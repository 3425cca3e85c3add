"""MGHFT: Multi-Granularity Hierarchical Fusion Transformer (Chen et al., ACM MM 2025, arXiv 2507.18929).

Per stage i of a PVT with a CLS token in every stage, with T_i the projected feature of view i:
- global token g_i: the stage CLS (stages 1-3 through an MLP to the stage-4 width);
- local tokens: Local Re-Attention picks alpha * sr_i^2 patches per head; each gets t'_i = MLP_i(T_i) added
  (stages 1-3 then project tokens and t'_i, giving the local text token T''_i, to the stage-4 width);
- the stage alignment loss compares g_i with T_i (see ``mghft.losses``).
Then G' = G + softmax(G T^T) T over [g4, g3, g2, g1], the visual sequence Z = LayerNorm([G' ; local tokens])
(B x 996 x 512 for the paper model) and the text sequence [T4..T1, T''4..T''1] (B x 8 x 512) meet in one
text-guided fusion attention block; token 0 goes to the linear head. Only that row of the block is computed
(every token still enters its attention): the queries, output projection, residual and MLP of the other 995 rows
reach neither the logits nor an explanation, so they are skipped, and with one query the attention is taken
through the key and value weights without forming the 996 keys and values (``FusionAttention``), with the same
result up to float rounding.

Explanations come from token 0 and the backbone: ``view_attention`` is token 0's step-1 attention over the text
tokens, ``local_patches`` are Local Re-Attention's picks (the CLS row of the rolled-out backbone attention).

The model runs with any subset of views absent (``view_mask``): an absent view is replaced by a learned
per-view embedding and left out of the alignment loss, so a bare image can be classified.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mghft.config import ModelConfig
from mghft.losses import stage_alignment_loss
from mghft.models.fusion import TIE_TOLERANCE, FusionBlock, gather_tokens, mlp2, select_local_tokens
from mghft.models.ops import f32, float32_island, linear
from mghft.models.pvt import build_backbone
from mghft.models.text import TextEncoder


class MGHFT(nn.Module):
    """The full model. Build it with :func:`mghft.create_model`; ``text_encoder`` is optional.

    Without a text encoder the model takes precomputed per-view features (``text_features``); with one it also
    takes token ids of shape (B, views, L).
    """

    def __init__(self, cfg: ModelConfig, text_encoder: TextEncoder | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        dims = cfg.vision.embed_dims
        d, h = cfg.model_dim, cfg.fusion.hidden_dim
        self.backbone = build_backbone(cfg.vision, num_classes=0, stage_cls=True)
        self.text_encoder = text_encoder
        self.text_proj = nn.Linear(cfg.text.dim, d)
        self.missing_view = nn.Parameter(torch.zeros(cfg.num_views, d))
        self.cross_proj = nn.ModuleList(mlp2(d, dims[i], dims[i]) for i in range(4))
        self.local_proj = nn.ModuleList(mlp2(dims[i], dims[i], d) for i in range(3))
        self.global_proj = nn.ModuleList(mlp2(dims[i], dims[i], d) for i in range(3))
        self.visual_proj = nn.Linear(d, h)
        self.text_seq_proj = nn.Linear(d, h)
        self.fusion_pos_embed = nn.Parameter(torch.zeros(1, cfg.visual_tokens, h))
        self.fusion = FusionBlock(
            h, cfg.fusion.num_heads, cfg.fusion.mlp_dim, cfg.fusion.dropout, cfg.fusion.attn_dropout
        )
        self.head = nn.Linear(h, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for mlps in (self.cross_proj, self.local_proj, self.global_proj):
            for m in mlps.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
        for lin in (self.text_proj, self.visual_proj, self.text_seq_proj, self.head):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.normal_(lin.bias, std=1e-6)
        nn.init.trunc_normal_(self.fusion_pos_embed, std=0.02)
        nn.init.trunc_normal_(self.missing_view, std=0.02)

    # ----------------------------------------------------------------------------------------------------------
    # text

    def encode_text(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        text_features: Tensor | None = None,
        view_mask: Tensor | None = None,
        batch_size: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Projected view features T (B, V, d) and the mask of present views (B, V).

        Give ``text_features`` (B, V, text.dim) from a cache, or token ids (B, V, L) to run the encoder, or
        neither (every view absent). Absent views take the learned ``missing_view`` embedding.
        """
        V = self.cfg.num_views
        if text_features is None and input_ids is not None:
            if self.text_encoder is None:
                raise ValueError("token ids given but the model has no text encoder; pass text_features instead")
            B, _, L = input_ids.shape
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            flat = self.text_encoder(input_ids.reshape(B * V, L), attention_mask.reshape(B * V, L))  # (B*V, D)
            text_features = flat.reshape(B, V, -1)
        if text_features is None:
            if batch_size is None:
                raise ValueError("batch_size is needed when no text is given")
            mask = torch.zeros(batch_size, V, dtype=torch.bool, device=self.missing_view.device)
            return self.missing_view.unsqueeze(0).expand(batch_size, -1, -1), mask
        if text_features.ndim != 3 or text_features.shape[1:] != (V, self.cfg.text.dim):
            raise ValueError(f"text_features must be (B, {V}, {self.cfg.text.dim}), got {tuple(text_features.shape)}")
        B = text_features.shape[0]
        if view_mask is None:
            view_mask = torch.ones(B, V, dtype=torch.bool, device=text_features.device)
        t = self.text_proj(text_features.to(self.text_proj.weight.dtype))  # (B, V, d)
        t = torch.where(view_mask.unsqueeze(-1), t, self.missing_view.unsqueeze(0).to(t.dtype))
        return t, view_mask.bool()

    # ----------------------------------------------------------------------------------------------------------
    # vision + fusion

    def forward_features(self, images: Tensor, t: Tensor, explain: bool = False) -> dict[str, Any]:
        """Stage injection, soft-fuse and the sequences the fusion block reads (see the module docstring)."""
        cfg = self.cfg
        k = cfg.local_tokens_per_head()
        full = cfg.fusion.rollout == "full"
        # compat="official" keeps the public code's plain topk, so that float64 parity with it stays exact.
        tie = 0.0 if cfg.compat == "official" else TIE_TOLERANCE

        def pick(i: int, maps: list[Tensor], n_cls: int) -> Tensor | None:  # each stage's maps freed once used
            return select_local_tokens(maps, k[i], i == 3, n_cls, full, tie) if cfg.fusion.local_stages[i] else None

        stages = self.backbone.forward_stages(images, need_weights=True, pick=pick)
        g_list, local_list, local_text = [], [], []
        picked = []
        for i, st in enumerate(stages):
            cls = st.tokens[:, 0]  # (B, C_i)
            t_local = self.cross_proj[i](t[:, i])  # (B, C_i)
            if cfg.fusion.local_stages[i]:
                idx = st.picked  # (B, heads * k_i)
                assert idx is not None
                parts = gather_tokens(st.tokens, idx)  # (B, K_i, C_i)
                if cfg.fusion.local_text_injection:
                    parts = parts + t_local.unsqueeze(1)
                if explain:
                    picked.append((idx - st.n_cls, st.size))
            if i < 3:
                t_local = self.local_proj[i](t_local)  # (B, d)
                g_list.append(self.global_proj[i](cls))  # (B, d)
                if cfg.fusion.local_stages[i]:
                    parts = self.local_proj[i](parts)  # (B, K_i, d)
            else:
                g_list.append(cls)
                if cfg.fusion.stale_stage4_text:
                    t_local = local_text[-1]
            if cfg.fusion.local_stages[i]:
                local_list.append(parts)
            local_text.append(t_local)

        stage_global = torch.stack(g_list, dim=1)  # (B, 4, d), stage order
        g, tt = stage_global.flip(1), t.flip(1)  # [g4, g3, g2, g1], [T4, ..., T1]
        with float32_island():  # a 4 x 4 softmax: float32 under autocast too
            g, tt = f32(g), f32(tt)
            g = g + torch.softmax(g @ tt.transpose(1, 2), dim=-1) @ tt  # (B, 4, d) global soft-fuse
        local = torch.cat(local_list, dim=1).flip(1)  # (B, sum K_i, d), whole sequence reversed
        z = self.backbone.norm(torch.cat([g, local], dim=1))  # (B, visual_tokens, d)
        text_seq = torch.cat([tt, torch.stack(local_text, dim=1).flip(1)], dim=1)  # (B, 8, d)
        out: dict[str, Any] = {"visual_seq": z, "text_seq": text_seq, "stage_global": stage_global}
        if explain:
            out["local_patches"] = picked
        return out

    def forward(
        self,
        images: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        *,
        text_features: Tensor | None = None,
        view_mask: Tensor | None = None,
        compute_align_loss: bool | None = None,
        explain: bool = False,
    ) -> dict[str, Any]:
        """Classify stickers.

        Args:
            images: (B, 3, H, W), normalised.
            input_ids, attention_mask: (B, views, L) token ids for the model's text encoder, or
            text_features: (B, views, text.dim) precomputed encoder features (preferred for a frozen encoder).
            view_mask: (B, views) bool, False where a view is absent. Without any text every view is absent.
            compute_align_loss: add ``align_loss`` (default: in training mode).
            explain: add ``local_patches`` (per stage: patch indices (B, K) and grid size) and
                ``view_attention`` (B, views): how much the fused token 0 attended to each view's text tokens.

        Returns:
            dict with ``logits`` (B, classes), ``stage_global`` and ``stage_text`` (B, 4, d), ``view_mask``,
            ``visual_seq`` (B, visual_tokens, d), ``text_seq`` (B, 8, d) and the optional entries above.
        """
        t, view_mask = self.encode_text(input_ids, attention_mask, text_features, view_mask, images.shape[0])
        out = self.forward_features(images, t, explain)
        hid = linear(out["visual_seq"], self.visual_proj) + self.fusion_pos_embed  # (B, N, hidden)
        tgfa = self.cfg.fusion.attention == "tgfa"
        ctx = self.text_seq_proj(out["text_seq"]) if tgfa else None  # (B, 8, hidden)
        # Only token 0 reaches the head (and the view weights): its row alone is computed, exactly.
        fused, text_attn = self.fusion(hid, ctx, need_weights=explain and ctx is not None, rows=1)  # (B, 1, hidden)
        out["logits"] = self.head(fused[:, 0])
        out["stage_text"] = t
        out["view_mask"] = view_mask
        if compute_align_loss if compute_align_loss is not None else self.training:
            out["align_loss"] = stage_alignment_loss(out["stage_global"], t, view_mask)
        if explain and text_attn is not None:
            w = text_attn[:, :, 0].mean(dim=1)  # (B, 8): token 0's attention over [T4..T1, T''4..T''1]
            per_view = (w[:, :4] + w[:, 4:]).flip(1)  # (B, 4) in view order
            out["view_attention"] = per_view / per_view.sum(dim=1, keepdim=True)
        return out

    def predict_proba(self, images: Tensor, **kwargs: Any) -> Tensor:
        """Class probabilities (B, classes)."""
        return F.softmax(self(images, **kwargs)["logits"].float(), dim=-1)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The weights a checkpoint needs: everything but a frozen text encoder (rebuilt from its id)."""
        sd = self.state_dict()
        if self.text_encoder is not None and not self.cfg.text.trainable:
            sd = {k: v for k, v in sd.items() if not k.startswith("text_encoder.")}
        return sd
