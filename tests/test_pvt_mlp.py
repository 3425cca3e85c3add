"""The PVT MLP's memory-saving backward (GELU recomputed) gives the plain ops' values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mghft.models import pvt
from mghft.models.pvt import Mlp


def _plain(mlp: Mlp, x: torch.Tensor) -> torch.Tensor:
    return mlp.fc2(F.gelu(mlp.fc1(x)))


@pytest.mark.parametrize("dwconv", [False, True])
def test_values_and_gradients_equal_the_plain_ops_in_float64(dwconv: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    mlp = Mlp(8, 32, dwconv=dwconv).double().train()
    x = torch.randn(2, 1 + 9, 8, dtype=torch.float64, requires_grad=True)
    out = mlp(x, (3, 3), 1)
    monkeypatch.setattr(pvt._GeluLinear, "apply", lambda h, w, b: F.linear(F.gelu(h), w, b))
    ref = mlp(x, (3, 3), 1)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *mlp.parameters()], g)
    refs = torch.autograd.grad(ref, [x, *mlp.parameters()], g)
    for a, b in zip(grads, refs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_gradcheck() -> None:
    torch.manual_seed(0)
    mlp = Mlp(4, 8).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: mlp(t, (1, 2), 1), (x,))


def test_keeps_one_hidden_activation_instead_of_two() -> None:
    mlp = Mlp(16, 64).train()
    x = torch.randn(4, 50, 16, requires_grad=True)
    hidden = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.shape[-1] == 64 and t.ndim == 3:
            hidden.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mlp(x, (7, 7), 1)
    assert len(hidden) == 1


def test_autocast_bfloat16_gives_float32_weight_gradients() -> None:
    torch.manual_seed(0)
    mlp = Mlp(16, 64).train()
    x = torch.randn(2, 10, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mlp(x, (3, 3), 1)
        with torch.no_grad():
            ref = _plain(mlp, x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref)
    out.float().sum().backward()
    assert mlp.fc2.weight.grad is not None and mlp.fc2.weight.grad.dtype == torch.float32
    assert x.grad is not None and x.grad.dtype == torch.float32
