"""Property tests of the quantizers (hypothesis): for any range and bit width, the grid holds
what it promises — values on the grid, error within half a step inside the range, saturation
outside, zero exact, symmetric ranges exact, the learnable path equal to the fixed one, the
log2 divisor within its exponent window and within √2 of its input."""

from __future__ import annotations

import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vitedge.quantization import Log2Quantizer, Quantizer, QuantSpec, log2_round  # noqa: E402
from vitedge.quantization.quantizer import lsq_fake_quantize, qparams_from_range  # noqa: E402
from vitedge.quantization.runtime_arith import graph_arithmetic  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None)
# no subnormals: torch switches the CPU to flush-to-zero, which hypothesis refuses to sample under
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32)
specs = st.builds(QuantSpec, bits=st.integers(2, 16), symmetric=st.booleans(), narrow=st.booleans())
widths = st.floats(0.0009765625, 1024.0, allow_subnormal=False, width=32)
batches = st.lists(finite, min_size=1, max_size=64)


def _spec(spec: QuantSpec) -> QuantSpec:
    # narrow only means something for symmetric grids
    return QuantSpec(spec.bits, spec.symmetric, spec.narrow and spec.symmetric)


@SETTINGS
@given(spec=specs, lo=finite, width=widths, values=batches)
def test_grid_holds_for_any_range(spec, lo, width, values):
    spec = _spec(spec)
    q = Quantizer(spec, "input")
    q.calibrate_from(torch.tensor([lo, lo + width]))
    q.fake_quant = True
    x = torch.tensor(values)
    y = q(x)
    s, z = q.scale.double(), q.zero_point.double()
    codes = y.double() / s + z
    assert torch.allclose(codes, codes.round(), atol=1e-2)
    assert codes.round().min() >= spec.qmin and codes.round().max() <= spec.qmax
    g_lo, g_hi = (t.double() for t in q.representable())
    inside = (x.double() >= g_lo) & (x.double() <= g_hi)
    err = (y.double() - x.double()).abs()
    ulps = 4 * torch.finfo(torch.float32).eps * x.double().abs()  # float32 arithmetic of s·(q − z)
    assert (err[inside] <= (s / 2 + ulps)[inside] + 1e-6).all()
    assert torch.allclose(y.double()[x.double() > g_hi], g_hi.expand_as(y[x.double() > g_hi]).double(), rtol=1e-5)
    assert torch.allclose(y.double()[x.double() < g_lo], g_lo.expand_as(y[x.double() < g_lo]).double(), rtol=1e-5)
    assert q(torch.zeros(1)).item() == 0.0, "zero is on every grid"
    # the calibrated range is covered (up to the half step lost to an integer zero point)
    assert g_lo <= min(lo, 0.0) + s and g_hi >= max(lo + width, 0.0) - s


@SETTINGS
@given(bits=st.integers(2, 16), amax=widths)
def test_symmetric_range_maps_its_extremes_exactly(bits, amax):
    spec = QuantSpec(bits, symmetric=True, narrow=True)
    scale, zp = qparams_from_range(torch.tensor([-amax / 3]), torch.tensor([amax]), spec)
    assert zp.item() == 0
    assert math.isclose(scale.item() * spec.qmax, amax, rel_tol=1e-6)
    y = torch.fake_quantize_per_tensor_affine(torch.tensor([amax, -amax]), scale.reshape(()), zp.reshape(()),
                                              spec.qmin, spec.qmax)
    assert torch.allclose(y, torch.tensor([amax, -amax]), rtol=1e-6)


@SETTINGS
@given(spec=specs, lo=finite, width=widths, values=batches)
def test_learnable_path_equals_fixed_path(spec, lo, width, values):
    spec = _spec(spec)
    q = Quantizer(spec, "input")
    q.calibrate_from(torch.tensor([lo, lo + width]))
    q.fake_quant = True
    x = torch.tensor(values)
    with graph_arithmetic():  # torch's fake-quant op (evaluation would divide, as the runtime does)
        fixed = q(x)
    learned = lsq_fake_quantize(x, q.scale.detach().clone().requires_grad_(), q.zero_point, spec.qmin, spec.qmax)
    # x·(1/s) is rounded the same way in both; allow one step where a value sits on a boundary
    assert ((fixed - learned).abs() <= q.scale * 1.0001).all()
    assert (fixed != learned).float().mean() <= 0.05


@SETTINGS
@given(spec=specs, lo=finite, width=widths)
def test_qat_evaluation_is_the_frozen_arithmetic(spec, lo, width):
    """Mid-QAT evaluation (no gradient) must score what the frozen, exported model scores: values
    on the grid's rounding ties are where x·(1/s) and the runtime's x/s part."""
    spec = _spec(spec)
    q = Quantizer(spec, "input")
    q.calibrate_from(torch.tensor([lo, lo + width]))
    q.fake_quant = True
    q.learn(True)
    s = q.log_scale.detach().exp()
    ties = (torch.arange(spec.qmin, spec.qmax, dtype=torch.float32) + 0.5 - q.zero_point) * s
    x = torch.cat([ties, torch.nextafter(ties, ties + 1), torch.nextafter(ties, ties - 1)])
    with torch.no_grad():
        learning = q(x)
    q.learn(False)
    with torch.no_grad():
        assert torch.equal(learning, q(x))


@SETTINGS
@given(d=st.floats(0.0, 1e6, allow_subnormal=False, width=32), exp_min=st.integers(-20, 5), bits=st.integers(1, 6))
def test_log2_divisor_stays_in_its_window_and_within_sqrt2(d, exp_min, bits):
    q = Log2Quantizer(bits, exp_min)
    q.fake_quant = True
    out = q(torch.tensor([d])).item()
    y = math.log2(out)
    assert y == int(y) and exp_min <= y <= exp_min + 2 ** bits - 1
    if 2.0 ** exp_min <= d <= 2.0 ** (exp_min + 2 ** bits - 1):
        assert 2 ** -0.5 * (1 - 1e-6) <= out / d <= 2 ** 0.5 * (1 + 1e-6)
    if d > 0:
        assert log2_round(torch.tensor([d])).item() == round(math.log2(d) - 1e-9) or \
            abs(math.log2(d) - math.floor(math.log2(d)) - 0.5) < 1e-5


@SETTINGS
@given(d=st.lists(st.floats(0.0, 1e6, allow_subnormal=False, width=32), min_size=1, max_size=16),
       low=st.integers(-20, 5), bits=st.integers(1, 6))
def test_windowed_log2_round_equals_clamped_log2_round(d, low, bits):
    # the table form the export uses agrees with the plain definition, clamped
    high = low + 2 ** bits - 1
    t = torch.tensor(d)
    windowed, plain = log2_round(t, low, high), log2_round(t).clamp(low, high)
    # the export's one-log form may decide the other way within float error of a rounding point
    near_tie = (torch.log2(t.double()) - torch.floor(torch.log2(t.double())) - 0.5).abs() < 1e-5
    assert torch.equal(windowed[~near_tie], plain[~near_tie])
