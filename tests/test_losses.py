"""The losses against their formulas, computed by hand on small inputs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mghft.losses import MGHFTObjective, info_nce, mlce, stage_alignment_loss


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def test_info_nce_by_hand() -> None:
    v = _unit(torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64))
    t = _unit(torch.tensor([[0.8, 0.6], [0.0, 1.0]], dtype=torch.float64))
    s = (v @ t.T / 0.07).tolist()
    row = [-math.log(math.exp(s[i][i]) / sum(math.exp(x) for x in s[i])) for i in range(2)]
    col = [-math.log(math.exp(s[i][i]) / sum(math.exp(s[j][i]) for j in range(2))) for i in range(2)]
    expected = (sum(row) / 2 + sum(col) / 2) / 2
    assert math.isclose(info_nce(v, t).item(), expected, rel_tol=1e-12)


def test_mlce_by_hand() -> None:
    v = _unit(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64))
    t = _unit(torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))

    def p(x: torch.Tensor) -> list[list[float]]:
        sim = (0.5 * (1 + x @ x.T)).tolist()
        n = len(sim)
        # softmax over axis 0, then transposed: P[i][j] = exp(sim[j][i]) / sum_k exp(sim[k][i])
        return [[math.exp(sim[j][i]) / sum(math.exp(sim[k][i]) for k in range(n)) for j in range(n)] for i in range(n)]

    pv, pt = p(v), p(t)
    expected = sum(pt[i][j] * (math.log(pt[i][j]) - math.log(pv[i][j])) for i in range(3) for j in range(3))
    assert math.isclose(mlce(v, t).item(), expected, rel_tol=1e-12)
    assert mlce(v, v).item() == 0.0


def test_stage_alignment_sums_stages_and_respects_the_view_mask() -> None:
    torch.manual_seed(0)
    g, t = torch.randn(4, 4, 8, dtype=torch.float64), torch.randn(4, 4, 8, dtype=torch.float64)
    per_stage = [info_nce(_unit(g[:, s]), _unit(t[:, s])) + 30 * mlce(_unit(g[:, s]), _unit(t[:, s])) for s in range(4)]
    assert math.isclose(stage_alignment_loss(g, t).item(), sum(x.item() for x in per_stage), rel_tol=1e-6)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[:, 2] = False  # stage 3's view absent everywhere: its term drops out
    mask[3, 0] = False  # stage 1 compares samples 0..2 only
    s1 = info_nce(_unit(g[:3, 0]), _unit(t[:3, 0])) + 30 * mlce(_unit(g[:3, 0]), _unit(t[:3, 0]))
    expected = s1.item() + per_stage[1].item() + per_stage[3].item()
    assert math.isclose(stage_alignment_loss(g, t, mask).item(), expected, rel_tol=1e-6)


def test_objective_is_smoothed_ce_plus_half_alignment() -> None:
    torch.manual_seed(0)
    out = {"logits": torch.randn(5, 7), "stage_global": torch.randn(5, 4, 16), "stage_text": torch.randn(5, 4, 16)}
    y = torch.tensor([0, 1, 2, 3, 6])
    res = MGHFTObjective()(out, y)
    ce = F.cross_entropy(out["logits"], y, label_smoothing=0.2)
    align = stage_alignment_loss(out["stage_global"], out["stage_text"])
    torch.testing.assert_close(res["loss"], ce + 0.5 * align)
    torch.testing.assert_close(res["ce"], ce)
