"""MGHFT's training losses, kept outside the model.

- Stage alignment, per stage i between the stage's global token g_i and its view feature T_i (normalised):
  symmetric InfoNCE at temperature 0.07 plus 30 x MLCE, where MLCE = KL(P_t || P_v) summed over the B x B
  matrix, P = softmax over axis 0 of 0.5 * (1 + cosine similarity), transposed. Summed over the 4 stages.
- Objective: label-smoothed cross-entropy (0.2) + 0.5 x alignment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def info_nce(v: Tensor, t: Tensor, temperature: float = 0.07) -> Tensor:
    """Symmetric InfoNCE between matched rows of L2-normalised ``v`` and ``t`` (B, d)."""
    logits = v @ t.T / temperature  # (B, B)
    target = torch.arange(v.shape[0], device=v.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def mlce(v: Tensor, t: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(P_t || P_v) summed over all entries; P_x = softmax_axis0(0.5 * (1 + x x^T) / temperature)^T."""
    p_v = torch.softmax(0.5 * (1 + v @ v.T) / temperature, dim=0).T
    p_t = torch.softmax(0.5 * (1 + t @ t.T) / temperature, dim=0).T
    return F.kl_div(p_v.log(), p_t, reduction="sum")


def stage_alignment_loss(
    stage_global: Tensor,
    stage_text: Tensor,
    view_mask: Tensor | None = None,
    temperature: float = 0.07,
    mlce_weight: float = 30.0,
    mlce_temperature: float = 1.0,
) -> Tensor:
    """Sum over stages of InfoNCE + ``mlce_weight`` x MLCE; (B, S, d) inputs, view_mask (B, S) of present views.

    A stage only compares the samples whose view is present; a stage with fewer than two contributes 0.
    Computed in at least float32 whatever the autocast dtype (float64 stays float64).
    """
    dtype = torch.promote_types(stage_global.dtype, torch.float32)
    total = stage_global.new_zeros((), dtype=dtype)
    for s in range(stage_global.shape[1]):
        g, t = stage_global[:, s].to(dtype), stage_text[:, s].to(dtype)
        if view_mask is not None:
            keep = view_mask[:, s]
            g, t = g[keep], t[keep]
        if g.shape[0] < 2:
            continue
        g, t = F.normalize(g, dim=-1), F.normalize(t, dim=-1)
        total = total + info_nce(g, t, temperature) + mlce_weight * mlce(g, t, mlce_temperature)
    return total


class StageAlignmentLoss(nn.Module):
    """Module form of :func:`stage_alignment_loss`."""

    def __init__(self, temperature: float = 0.07, mlce_weight: float = 30.0, mlce_temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.mlce_weight = mlce_weight
        self.mlce_temperature = mlce_temperature

    def forward(self, stage_global: Tensor, stage_text: Tensor, view_mask: Tensor | None = None) -> Tensor:
        return stage_alignment_loss(
            stage_global, stage_text, view_mask, self.temperature, self.mlce_weight, self.mlce_temperature
        )


class MGHFTObjective(nn.Module):
    """Label-smoothed cross-entropy + ``align_weight`` x stage alignment, from the model's output dict."""

    def __init__(
        self,
        label_smoothing: float = 0.2,
        align_weight: float = 0.5,
        alignment: StageAlignmentLoss | None = None,
    ) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.align_weight = align_weight
        self.alignment = alignment or StageAlignmentLoss()

    def forward(self, outputs: dict[str, Tensor], targets: Tensor) -> dict[str, Tensor]:
        """Returns ``loss`` (to minimise) and its parts ``ce`` and ``align`` (detached copies for logging)."""
        ce = self.ce(outputs["logits"].float(), targets)
        loss = ce
        align = ce.new_zeros(())
        if self.align_weight and "stage_global" in outputs:
            # Recomputed from the stage features (cheap: 4 x B x B) so this objective's settings always apply.
            align = self.alignment(outputs["stage_global"], outputs["stage_text"], outputs.get("view_mask"))
            loss = loss + self.align_weight * align
        return {"loss": loss, "ce": ce.detach(), "align": align.detach()}
