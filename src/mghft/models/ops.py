"""Token-wise linear layers that run the bias (and GELU) inside the matrix product on CPU.

``torch.nn.functional.linear`` with a bias on CPU first copies the bias into every output row and then
accumulates the product on top: one extra pass over the output, which for PVT's token-wise layers (12,545 tokens
at 448 px in stage 1) costs as much as a third of the product. oneDNN's linear applies the bias, and optionally
the exact (erf) GELU, in the product's epilogue instead. :func:`linear` uses it for float32 CPU
tensors, in inference and (through a custom autograd function with the standard gradients) in training; it
falls back to ``F.linear`` wherever oneDNN does not apply (other devices or dtypes, tracing, export,
``torch.compile``) or after :func:`set_onednn_linear` turned it off. Both paths compute the same function;
outputs differ by float rounding only (the order of the accumulation).

Under CPU autocast to bfloat16 (``--precision bf16``, :mod:`mghft.precision`) inference takes the same fused path
in bfloat16 where the CPU has bfloat16 dot products (oneDNN reports ``_is_mkldnn_bf16_supported``), with a
bfloat16 copy of each weight kept beside it; elsewhere autocast's own ``F.linear`` runs. :func:`float32_island`
and :func:`f32` keep the parts that decide discrete choices (attention scores and softmax, the rollout, the
fusion's row-0 attention) in float32 under autocast; outside autocast they change nothing.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_enabled = True
_BF16 = (
    _AVAILABLE
    and hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported")
    and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
)
_LOW = (torch.bfloat16, torch.float16)


def f32(x: Tensor) -> Tensor:
    """``x`` in float32 when autocast made it bfloat16 or float16; otherwise ``x`` itself (no copy)."""
    return x.float() if x.dtype in _LOW else x


@contextlib.contextmanager
def float32_island() -> Iterator[None]:
    """Suspend CPU autocast inside the block (with :func:`f32` on the inputs, the block computes in float32);
    without autocast nothing changes, so float32 results are bit for bit the same."""
    if not torch.is_autocast_enabled("cpu"):
        yield
        return
    with torch.autocast("cpu", enabled=False):
        yield


def _linear_pointwise_flops(x_shape: list[int], w_shape: list[int], *args: object, **kwargs: object) -> int:
    """2 x tokens x in x out, as ``torch.utils.flop_counter`` counts ``addmm``."""
    return 2 * math.prod(x_shape[:-1]) * w_shape[0] * w_shape[1]


if _AVAILABLE:  # so that torch's flop counter counts the model's linear layers on this path too
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    if torch.ops.mkldnn._linear_pointwise not in flop_registry:
        register_flop_formula(torch.ops.mkldnn._linear_pointwise)(_linear_pointwise_flops)


def use_onednn_linear(enabled: bool) -> bool:
    """Turn the oneDNN path of :func:`linear` on or off for this process; returns the previous setting."""
    global _enabled
    before, _enabled = _enabled, enabled
    return before


@contextlib.contextmanager
def set_onednn_linear(enabled: bool) -> Iterator[None]:
    """Turn the oneDNN path of :func:`linear` on or off within a ``with`` block (e.g. to compare both)."""
    before = use_onednn_linear(enabled)
    try:
        yield
    finally:
        use_onednn_linear(before)


def _onednn_applies(x: Tensor, weight: Tensor) -> bool:
    if not (_AVAILABLE and _enabled) or x.device.type != "cpu" or x.dtype != weight.dtype:
        return False
    if x.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
        return False
    return not (
        torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
    )


def _bf16_applies(x: Tensor, weight: Tensor) -> bool:
    """Inference under CPU autocast to bfloat16 on a CPU where oneDNN has bfloat16 products."""
    if not (_BF16 and _enabled) or x.device.type != "cpu" or weight.dtype != torch.float32:
        return False
    if not torch.is_autocast_enabled("cpu") or torch.get_autocast_dtype("cpu") != torch.bfloat16:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())


def _bf16_copy(t: Tensor) -> Tensor:
    """A bfloat16 copy of a weight, kept on the tensor and renewed when the weight changes in place."""
    cached = getattr(t, "_mghft_bf16", None)
    if cached is not None and cached[0] == t._version:
        return cached[1]
    copy = t.detach().to(torch.bfloat16)
    t._mghft_bf16 = (t._version, copy)  # type: ignore[attr-defined]
    return copy


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None, gelu: bool) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else "")


class _OneDnnLinear(torch.autograd.Function):
    """oneDNN forward, the standard linear backward (grad_x = g W, grad_W = g^T x, grad_b = sum g)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias, gelu=False)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        g_x = g_w = g_b = None
        flat = grad.reshape(-1, grad.shape[-1])  # (tokens, out)
        if ctx.needs_input_grad[0]:
            g_x = grad @ weight  # (..., in)
        if ctx.needs_input_grad[1]:
            g_w = flat.t() @ x.reshape(-1, x.shape[-1])  # (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            g_b = flat.sum(0)
        return g_x, g_w, g_b


def linear(x: Tensor, layer: nn.Linear, gelu: bool = False) -> Tensor:
    """``layer(x)``, followed by the exact GELU if ``gelu``: (..., in) -> (..., out).

    On CPU in float32 the bias (and, without gradients, the GELU) run inside oneDNN's product; the
    result equals ``F.gelu(layer(x))`` / ``layer(x)`` up to float rounding, with the same gradients.
    """
    return linear_weights(x, layer.weight, layer.bias, gelu)


def linear_weights(x: Tensor, weight: Tensor, bias: Tensor | None, gelu: bool = False) -> Tensor:
    """:func:`linear` with the weight (out, in) and bias (out,) given directly."""
    if _bf16_applies(x, weight):
        b = None if bias is None else _bf16_copy(bias)
        return _onednn(x.to(torch.bfloat16), _bf16_copy(weight), b, gelu)
    if not _onednn_applies(x, weight):
        y = F.linear(x, weight, bias)
        return F.gelu(y) if gelu else y
    params = (weight,) if bias is None else (weight, bias)
    grads = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))
    if not grads:
        return _onednn(x, weight, bias, gelu)
    y = _OneDnnLinear.apply(x, weight, bias)
    return F.gelu(y) if gelu else y
