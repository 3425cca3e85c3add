"""The CPU linear layers with the bias and GELU inside oneDNN's product: same values and gradients as F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

import mghft
from mghft.models import ops
from mghft.models.ops import linear, set_onednn_linear

pytestmark = pytest.mark.skipif(not ops._AVAILABLE, reason="this torch build has no oneDNN")


def _ops_run(fn) -> set[str]:  # type: ignore[no-untyped-def]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("gelu", [False, True])
def test_inference_equals_f_linear_and_runs_in_onednn(gelu: bool) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(96, 200)
    x = torch.randn(2, 333, 96)[:, 1:]  # a non-contiguous slice, as the token views are
    ref = F.linear(x, layer.weight, layer.bias)
    ref = F.gelu(ref) if gelu else ref
    with torch.inference_mode():
        out = linear(x, layer, gelu=gelu)
        names = _ops_run(lambda: linear(x, layer, gelu=gelu))
    assert "mkldnn::_linear_pointwise" in names
    assert not {"aten::addmm", "aten::gelu"} & names  # bias and GELU inside the product
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_training_gradients_equal_f_linear() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(64, 48)
    x = torch.randn(3, 50, 64, requires_grad=True)
    g = torch.randn(3, 50, 48)
    out = linear(x, layer, gelu=True)
    assert "mkldnn::_linear_pointwise" in _ops_run(lambda: linear(x, layer))
    grads = torch.autograd.grad(out, (x, layer.weight, layer.bias), g)
    ref_out = F.gelu(F.linear(x, layer.weight, layer.bias))
    ref = torch.autograd.grad(ref_out, (x, layer.weight, layer.bias), g)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_float64_tracing_and_switch_use_f_linear_exactly() -> None:
    layer = nn.Linear(8, 5)
    x = torch.randn(4, 8)
    with set_onednn_linear(False), torch.no_grad():
        assert torch.equal(linear(x, layer), F.linear(x, layer.weight, layer.bias))

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return linear(t, self.layer, gelu=True)

    with torch.no_grad():
        traced = torch.jit.trace(Wrap(), (x,))
    assert "mkldnn" not in str(traced.graph)  # exports see the standard ops
    d = nn.Linear(8, 5).double()
    with torch.no_grad():
        assert torch.equal(linear(x.double(), d), F.linear(x.double(), d.weight, d.bias))


def test_backbone_features_match_the_standard_layers() -> None:
    torch.manual_seed(0)
    model = mghft.create_model("mghft_tiny", text_encoder=False, image_size=64).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fast = model.backbone.forward_features(images)
        with set_onednn_linear(False):
            plain = model.backbone.forward_features(images)
    assert fast.abs().max() > 0.1
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)


def test_flop_counter_counts_the_onednn_path_like_addmm() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    layer = nn.Linear(32, 48)
    x = torch.randn(2, 10, 32)
    counts = []
    for enabled in (True, False):
        with set_onednn_linear(enabled), torch.no_grad(), FlopCounterMode(display=False) as counter:
            linear(x, layer, gelu=True)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] == 2 * 20 * 32 * 48
