"""The integer runtime's arithmetic, reproduced in the simulation so that what we simulate is
what deploys, bit for bit where the runtime's formula is known.

A fake-quantized model computes in float on dequantized values; ONNX Runtime computes the same
graph on integers and rounds in its own order. Each rounding that differs by one ulp near a tie
flips one output step, and a flipped step grows through the layers behind it (a migrated
depthwise input magnifies it up to ``1/s_c``). In evaluation (no gradient, not exporting) the
quantized layers therefore follow ONNX Runtime's CPU kernels, checked against them one op at a
time (``tests/test_runtime_arith.py``):

- ``QuantizeLinear``: ``clamp(rne(x / s) + z)`` — a division, where ``torch.fake_quantize_*``
  multiplies by ``1/s``;
- ``QLinearConv`` / ``QLinearMatMul``: the integer accumulator ``Σ (x − z_x)·w`` (+ int32 bias),
  then ``rne(float(acc) · m) + z_y`` with ``m = (s_x · s_w) / s_y`` in float32;
- ``MatMulIntegerToFloat`` (a quantized matmul with a float output): ``float(acc) · (s_a · s_b)``;
- ``QLinearAdd``: ``rne(fma(a, r_a, fma(b, r_b, z_c − fma(r_a, z_a, r_b·z_b))))`` with
  ``r = s / s_c`` (the x86 kernel's float form; the plain ``(DQ(a) + DQ(b)) / s_c`` differs on a
  few elements in a million);
- ``HardSwish`` (ORT rewrites the exported node into HardSigmoid · x): ``x · clamp(α·x + β, 0, 1)``
  with two float32 roundings inside (no fused multiply-add).

Accumulators are computed in float32 when every partial sum is provably below 2^24 (then exact),
else in float64.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "RuntimeHardswish",
    "exact_mode",
    "graph_arithmetic",
    "integer_accumulate",
    "qlinear_add",
    "quantize_to_grid",
    "requantize",
]

_EXACT_FLOAT32 = float(1 << 24)
_DISABLED = [False]  # set by graph_arithmetic()


@contextlib.contextmanager
def graph_arithmetic() -> Iterator[None]:
    """Within: the quantized layers compute the graph's float ops (as exported), not the
    runtime's integer emulation — for tools that read the computation's structure
    (operator lists, cost models)."""
    previous, _DISABLED[0] = _DISABLED[0], True
    try:
        yield
    finally:
        _DISABLED[0] = previous


def exact_mode(*tensors: torch.Tensor) -> bool:
    """True when the runtime's arithmetic applies: no gradient to compute (``torch.no_grad`` or
    nothing that requires one), not tracing for ONNX (the exporter must see the plain ops it
    turns into Q/DQ) and not inside :func:`graph_arithmetic`."""
    if _DISABLED[0] or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return False
    return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)


def quantize_to_grid(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """``clamp(rne(x / s) + z, qmin, qmax) − z``: the integer offsets (as float) ONNX Runtime's
    QuantizeLinear stores, less the zero point. ``scale``/``zero_point`` broadcast against ``x``."""
    z = zero_point.to(x.dtype)
    return torch.clamp(torch.round(x / scale) + z, qmin, qmax) - z


def integer_accumulate(op, xi: torch.Tensor, wi: torch.Tensor, bound: float) -> torch.Tensor:
    """``op(xi, wi)`` on integer-valued tensors, exact: float32 while ``bound`` (an upper bound on
    every partial sum's magnitude) is below 2^24, float64 otherwise; returned as float64."""
    if bound < _EXACT_FLOAT32:
        return op(xi, wi).double()
    return op(xi.double(), wi.double())


def requantize(
    acc: torch.Tensor, multiplier: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """``clamp(rne(float32(acc) · m) + z) − z`` — ONNX Runtime's requantization of an int32
    accumulator onto the output grid (``m`` float32, broadcast against ``acc``)."""
    z = zero_point.to(torch.float32)
    scaled = acc.to(torch.float32) * multiplier.to(torch.float32)
    return torch.clamp(torch.round(scaled) + z, qmin, qmax) - z


def _fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``fl32(a·b + c)`` with one rounding, as a fused multiply-add (float32 products are exact in
    float64)."""
    return (a.double() * b.double() + c.double()).float()


def qlinear_add(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    a_zero: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    b_zero: torch.Tensor,
    c_scale: torch.Tensor,
    c_zero: torch.Tensor,
    qmin: int,
    qmax: int,
) -> torch.Tensor:
    """ONNX Runtime's QLinearAdd on raw integers ``a``, ``b`` (as float): the x86 kernel's float
    form ``fma(a, r_a, fma(b, r_b, z_c − fma(r_a, z_a, r_b·z_b)))`` with ``r = s / s_c``, rounded
    half to even and saturated; returns the output integers (zero point included)."""
    f32 = torch.float32
    ra, rb = (a_scale.to(f32) / c_scale.to(f32)), (b_scale.to(f32) / c_scale.to(f32))
    za, zb, zc = (z.to(f32) for z in (a_zero, b_zero, c_zero))
    const = zc - _fma32(ra, za, rb * zb)
    t = _fma32(a.to(f32), ra, _fma32(b.to(f32), rb, const))
    return torch.clamp(torch.round(t), qmin, qmax)


class RuntimeHardswish(nn.Module):
    """Hardswish as ONNX Runtime computes the exported node, ``x · clamp(x·(1/6) + 0.5, 0, 1)`` in
    float32 (torch's kernel computes ``x · clamp(x + 3, 0, 6) / 6``, a different rounding); exports
    as ``F.hardswish`` does (one HardSwish node)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("alpha", torch.tensor(1.0 / 6.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() or x.dtype != torch.float32:
            return F.hardswish(x)
        return x * torch.clamp(x * self.alpha + 0.5, 0.0, 1.0)
