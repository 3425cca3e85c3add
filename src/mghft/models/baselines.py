"""Baselines trained by the same loop as MGHFT, with the same inputs and output dict.

- ``TextOnlyClassifier``: the four view features alone (no image), projected as in MGHFT and classified by an
  MLP; absent views take a learned embedding. Given its text encoder it reads view texts itself (``predict``
  with an interpreter describes the image, and the model classifies the description).
- ``ClipClassifier``: a CLIP image tower (Radford et al., ICML 2021) through ``transformers`` with a linear head,
  as a linear probe (frozen tower) or fine-tuned. The paper's "CLIP-Base" row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mghft.config import ModelConfig
from mghft.data.transforms import CLIP_MEAN, CLIP_STD

__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipClassifier", "TextOnlyClassifier"]


class TextOnlyClassifier(nn.Module):
    """Classify from the view texts only."""

    def __init__(self, cfg: ModelConfig, text_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_encoder = text_encoder  # encodes view texts at prediction time; training reads cached features
        d = cfg.model_dim
        self.text_proj = nn.Linear(cfg.text.dim, d)
        self.missing_view = nn.Parameter(torch.zeros(cfg.num_views, d))
        nn.init.trunc_normal_(self.missing_view, std=0.02)
        self.mlp = nn.Sequential(
            nn.LayerNorm(cfg.num_views * d),
            nn.Linear(cfg.num_views * d, d),
            nn.GELU(),
            nn.Dropout(cfg.fusion.dropout),
            nn.Linear(d, cfg.num_classes),
        )

    def forward(
        self,
        images: Tensor,
        *,
        text_features: Tensor | None = None,
        view_mask: Tensor | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        B, V = images.shape[0], self.cfg.num_views
        if text_features is None:
            text_features = torch.zeros(B, V, self.cfg.text.dim, device=images.device)
            view_mask = torch.zeros(B, V, dtype=torch.bool, device=images.device)
        if view_mask is None:
            view_mask = torch.ones(B, V, dtype=torch.bool, device=images.device)
        t = self.text_proj(text_features.to(self.text_proj.weight.dtype))
        t = torch.where(view_mask.unsqueeze(-1), t, self.missing_view.unsqueeze(0).to(t.dtype))  # (B, V, d)
        return {"logits": self.mlp(t.flatten(1)), "view_mask": view_mask}

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Everything but a frozen text encoder (rebuilt from its id), as for MGHFT."""
        sd = self.state_dict()
        if self.text_encoder is not None and not self.cfg.text.trainable:
            sd = {k: v for k, v in sd.items() if not k.startswith("text_encoder.")}
        return sd


class ClipClassifier(nn.Module):
    """A CLIP image tower and a linear head on its pooled, projected image embedding."""

    def __init__(self, cfg: ModelConfig, offline: bool | None = None) -> None:
        super().__init__()
        from transformers import CLIPVisionModelWithProjection

        from mghft.models.text import offline_mode

        self.cfg = cfg
        self.text_encoder = None
        offline = offline_mode() if offline is None else offline
        assert cfg.clip_model is not None
        self.tower = CLIPVisionModelWithProjection.from_pretrained(cfg.clip_model, local_files_only=offline)
        if not cfg.clip_finetune:
            self.tower.requires_grad_(False)
        self.head = nn.Linear(self.tower.config.projection_dim, cfg.num_classes)

    def train(self, mode: bool = True) -> ClipClassifier:
        super().train(mode)
        if not self.cfg.clip_finetune:
            self.tower.eval()
        return self

    def forward(self, images: Tensor, **_: Any) -> dict[str, Any]:
        with torch.set_grad_enabled(self.cfg.clip_finetune and torch.is_grad_enabled()):
            emb = self.tower(pixel_values=images).image_embeds  # (B, projection_dim)
        return {"logits": self.head(emb)}

    def trainable_state_dict(self) -> dict[str, Tensor]:
        return self.state_dict()
