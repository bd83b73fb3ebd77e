"""Quantization: the fake-quant op and observers, coverage of every point, error against bit
width, exactness of the Trio-ViT transforms, the log2 divisor, checkpoints, QAT, bad input.

Models are B0 and M0 at 64 px with weights drawn so the logits depend on the input (PyTorch's
default init makes these deep random nets nearly constant) and randomised BatchNorm statistics.
Calibration batches include the evaluated images, so errors measure rounding, not clipping of
unseen extremes. Property-based tests of the quantizers live in test_quantization_properties.py.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn as nn
from conftest import exact_w_bits, randomize_batchnorm
from parity import assert_parity

import vitedge
from vitedge.errors import VitedgeError
from vitedge.models.efficientvit_mit import LiteMLA, MBConv
from vitedge.models.efficientvit_msra import CascadedGroupAttention
from vitedge.quantization import (
    Log2Quantizer,
    ObserverConfig,
    QuantConfig,
    Quantizer,
    QuantSpec,
    TrioConfig,
    calibration_batches,
    count_kinds,
    freeze,
    load_quantized,
    log2_round,
    observe,
    point_report,
    prepare_qat,
    quantize,
    quantizers,
    report_markdown,
    save_quantized,
    scale_parameters,
    set_quant_state,
)
from vitedge.quantization.qmodules import (
    QuantConv2d,
    QuantLinear,
    QuantLiteMLA,
    QuantResidual,
    QuantResidualBlock,
)
from vitedge.quantization.quantizer import lsq_fake_quantize, qparams_from_range
from vitedge.train.ema import ModelEMA

RES = 64
# name -> (build kwargs, weight gain that keeps activations O(1) and the logits input-dependent)
MODELS = {"efficientvit_b0": ({}, 1.0), "efficientvit_m0": ({"img_size": RES}, 0.8)}
# Trio with a cheaper MSE search: the tests check the machinery, not the last 0.1 % of range.
FAST = ObserverConfig(mse_candidates=10, samples=4096)
_CACHE: dict[str, nn.Module] = {}


pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def _informative_init(model: nn.Module, gain: float, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * gain / math.sqrt(m.weight[0].numel()))
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    for name, p in model.named_parameters():
        if name.endswith("attention_biases"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def dense(name: str) -> nn.Module:
    """A random 10-class float model in eval mode (cached: quantize never edits it)."""
    if name not in _CACHE:
        kwargs, gain = MODELS[name]
        model = _informative_init(vitedge.create_model(name, num_classes=10, **kwargs), gain)
        _CACHE[name] = randomize_batchnorm(model).eval()
    return _CACHE[name]


def images(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, RES, RES, generator=torch.Generator().manual_seed(seed))


def calib() -> list[torch.Tensor]:
    """Two calibration batches; the first holds the evaluated images."""
    return [images(8, seed=1), images(8, seed=2)]


@torch.no_grad()
def rel_err(model: nn.Module, ref: nn.Module, x: torch.Tensor | None = None) -> float:
    x = images() if x is None else x
    y, r = model.eval()(x), ref.eval()(x)
    return float((y - r).norm() / r.norm())


def trio_config(**kw) -> QuantConfig:
    # these tests check coverage and arithmetic: every point on (the plan has its own tests)
    return QuantConfig(method="trio", observer=FAST, **{"auto_float": False, **kw})


# --------------------------------------------------------------------------------------------
# the op


def test_fake_quant_values_lie_on_the_grid_within_half_a_step():
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 3
    specs = (QuantSpec(8, symmetric=False), QuantSpec(8, symmetric=True), QuantSpec(4, symmetric=True, narrow=True))
    for spec in specs:
        q = Quantizer(spec, "input")
        q.calibrate_from(x[:2048])  # the rest may fall outside the calibrated range
        q.fake_quant = True
        y = q(x)
        s, z = q.scale, q.zero_point.float()
        codes = y / s + z
        assert torch.allclose(codes, codes.round(), atol=1e-3), "dequantized values must be grid points"
        assert codes.round().min() >= spec.qmin and codes.round().max() <= spec.qmax
        lo, hi = q.representable()
        inside = (x >= lo) & (x <= hi)
        assert (y - x)[inside].abs().max() <= s / 2 + 1e-6, "rounding error above half a step"
        assert torch.equal(y[x > hi], torch.full_like(y[x > hi], float(hi))), "saturates at the top"


def test_symmetric_range_is_exact_and_asymmetric_keeps_zero():
    w = torch.tensor([[-0.5, 0.25, 0.1], [2.0, -1.0, 0.0]])
    spec = QuantSpec(8, symmetric=True, narrow=True, per_channel=True)
    q = Quantizer(spec, "weight", channels=2)
    q.calibrate_from(w)
    q.fake_quant = True
    assert torch.allclose(q.scale, torch.tensor([0.5, 2.0]) / 127)
    assert torch.equal(q.zero_point, torch.zeros(2, dtype=torch.int32))
    y = q(w)
    assert y[0, 0] == -0.5 and y[1, 0] == 2.0, "the extreme of each channel is exact (±127 steps)"
    assert (spec.qmin, spec.qmax) == (-127, 127)
    scale, zp = qparams_from_range(torch.tensor([0.3]), torch.tensor([2.0]), QuantSpec(8))
    assert zp.item() == 0 and math.isclose(scale.item(), 2.0 / 255, rel_tol=1e-6), "range widened to contain 0"
    scale, zp = qparams_from_range(torch.tensor([-1.0]), torch.tensor([3.0]), QuantSpec(8))
    assert zp.item() == round(255 / 4)
    zero = torch.fake_quantize_per_tensor_affine(torch.zeros(1), scale.reshape(()), zp.reshape(()), 0, 255)
    assert zero.item() == 0.0, "zero is exactly representable (zero padding stays exact)"


def test_straight_through_gradient_passes_inside_and_stops_outside():
    x = torch.tensor([-3.0, -0.4, 0.0, 0.3, 0.9, 5.0], requires_grad=True)
    scale, zp = torch.tensor(0.01), torch.tensor(100, dtype=torch.int32)  # grid [-1.0, 1.55]
    torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    x.grad = None
    s = torch.tensor(0.01, requires_grad=True)
    y = lsq_fake_quantize(x, s, zp, 0, 255)
    assert torch.equal(y, torch.fake_quantize_per_tensor_affine(x.detach(), scale, zp, 0, 255))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    # LSQ: d x̂/d s = round(v) − v inside, qmin − z / qmax − z outside, times 1/sqrt(n·qmax)
    v = x.detach() / 0.01
    inside = torch.round(v) - v
    expected = torch.where(x.detach() < -1.0, torch.tensor(-100.0),
                           torch.where(x.detach() > 1.55, torch.tensor(155.0), inside)).sum()
    assert math.isclose(s.grad.item(), expected.item() / math.sqrt(6 * 255), rel_tol=1e-4)


def test_observers_choose_their_ranges():
    x = torch.cat([torch.randn(20000, generator=torch.Generator().manual_seed(0)), torch.tensor([40.0])])
    spec = QuantSpec(8)
    ranges = {}
    for name in ("minmax", "percentile", "mse"):
        q = Quantizer(dataclasses.replace(spec, observer=name), "input", observer_cfg=ObserverConfig(percentile=99.9))
        q.calibrate_from(x)
        ranges[name] = float(q.representable()[1])
    assert math.isclose(ranges["minmax"], 40.0, rel_tol=1e-2)
    assert ranges["percentile"] < 5.0 and ranges["mse"] < 40.0, "the outlier is clipped"
    ema = Quantizer(dataclasses.replace(spec, observer="ema"), "input", observer_cfg=ObserverConfig(ema_momentum=0.5))
    ema.observing = True
    ema(torch.tensor([0.0, 1.0]))
    ema(torch.tensor([0.0, 3.0]))
    ema.observing = False
    ema.update_qparams()
    assert float(ema.observed_max) == 2.0, "EMA: 0.5·1 + 0.5·3"


def test_log2_divisor_rounds_in_the_log_domain_and_clamps_the_exponent():
    d = torch.tensor([2.0 ** -6, 0.25, 1.0, 8.0, 512.0])
    assert torch.equal(log2_round(d), torch.tensor([-6.0, -2.0, 0.0, 3.0, 9.0])), "powers of two are exact"
    # the rounding point is 2^(y+1/2): just below stays, just above goes up
    assert log2_round(torch.tensor([4 * 2 ** 0.5 * 0.999])).item() == 2.0
    assert log2_round(torch.tensor([4 * 2 ** 0.5 * 1.001])).item() == 3.0
    q = Log2Quantizer(bits=4, exp_min=-6)
    q.fake_quant = True
    assert q.exp_max == 9, "a 4-bit exponent: 16 values, -6 … 9"
    out = q(torch.tensor([0.0, 1e-4, 2.0 ** -6, 3.0, 1000.0, 2.0 ** 9, 1e6]))
    assert out.tolist() == [2.0 ** -6, 2.0 ** -6, 2.0 ** -6, 4.0, 512.0, 512.0, 512.0]
    x = torch.tensor([3.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.item() == 1.0, "straight-through"
    window = Log2Quantizer(bits=4, exp_min=None)
    window.observing = True
    window(torch.tensor([0.01, 40.0]))  # log2(40) = 5.32 → top exponent 5
    window.update_qparams()
    assert (int(window.exp_min), window.exp_max) == (-10, 5)


@pytest.mark.parametrize("seen, window", [(40.0, (-6, 9)), (3000.0, (-3, 12)), (2.0 ** 9, (-6, 9))])
def test_sliding_divisor_window_moves_up_only_past_its_top(seen, window):
    # many tokens (a segmentation frame) push the divisor past 2^9; saturating there caps every
    # large denominator, so the window slides up; below its top it stays where the spec puts it
    q = Log2Quantizer(bits=4, exp_min=-6, slide=True)
    q.observing = True
    q(torch.tensor([0.5, seen]))  # log2(3000) = 11.55 → 12
    q.update_qparams()
    assert (int(q.exp_min), q.exp_max) == window
    fixed = Log2Quantizer(bits=4, exp_min=-6)
    fixed.observing = True
    fixed(torch.tensor([seen]))
    fixed.update_qparams()
    assert (int(fixed.exp_min), fixed.exp_max) == (-6, 9), "slide=False is the spec's literal window"


def test_uniform_attention_denominator_never_rounds_to_zero():
    from vitedge.quantization.qmodules import LinearAttentionPoints

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.rand(1, 2, 16, 4, generator=g) for _ in range(3))
    q[0, 0, 0] = torch.tensor([1e-4, 0.0, 0.0, 0.0])  # a token whose denominator is ~1e-4
    points = LinearAttentionPoints(QuantSpec(8), ObserverConfig(), divisor=None)
    set_quant_state(points, observing=True)
    points(q, k, v, 1e-15)
    set_quant_state(points, observing=False)
    for _, p in quantizers(points):
        p.update_qparams()
    points.den.fake_quant = True  # the denominator alone: its numerator stays non-zero
    out = points(q, k, v, 1e-15)
    assert torch.isfinite(out).all() and out.abs().max() < 10, "a zero denominator would blow up"


# --------------------------------------------------------------------------------------------
# whole models


@pytest.mark.parametrize("name", list(MODELS))
def test_error_shrinks_with_bits_and_16_bit_is_near_exact(name):
    model = dense(name)
    # every point quantized (no precision plan): a plan floats other points at each width, and a random
    # network's near-tied logits make it float many
    plain = QuantConfig(auto_float=False)
    errs = {bits: rel_err(quantize(model, calib(), "minmax", bits, bits, config=plain), model)
            for bits in (16, 8, 6, 4)}
    assert errs[16] < 2e-3, errs
    assert errs[8] < 0.15, errs
    assert errs[16] < errs[8] < errs[6] < errs[4], errs


@pytest.mark.parametrize("name", list(MODELS))
def test_every_conv_and_linear_is_quantized_and_reported(name):
    model = dense(name)
    qmodel = quantize(model, calib(), config=trio_config())
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in qmodel.modules()), "a float conv/linear is left"
    layers = [m for m in qmodel.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert len(layers) == n_layers
    for m in layers:
        assert m.input_quant.fake_quant and m.weight_quant.fake_quant
        assert m.weight_quant.scale.numel() == m.weight.shape[0], "per output channel"
    rows = point_report(qmodel)
    points = [r for r in rows if not r.kind.startswith("trio.")]
    assert all(r.enabled for r in points)
    uniform = [r for r in points if r.kind != "attn.divisor"]
    assert all(math.isfinite(r.scale[0]) and r.scale[0] > 0 and math.isfinite(r.scale[1]) for r in uniform)
    kinds = count_kinds(rows)
    assert kinds["weight"] == n_layers
    if name == "efficientvit_b0":
        mlas = [m for m in model.modules() if isinstance(m, LiteMLA)]
        branches = sum(1 + len(m.aggreg) for m in mlas)
        for op in ("q", "k", "v", "kv", "ksum", "num"):
            assert kinds[f"attn.{op}"] == branches
        assert kinds["attn.divisor"] == branches, "log2 divisor on every branch under trio"
        assert kinds["attn.out"] == len(mlas)
        assert kinds["trio.migration"] == kinds["trio.shift"] == sum(isinstance(m, MBConv) for m in model.modules())
    else:
        heads = sum(m.num_heads for m in model.modules() if isinstance(m, CascadedGroupAttention))
        for op in ("q", "k", "v", "attn"):
            assert kinds[f"attn.{op}"] == heads
    residuals = [m for m in qmodel.modules() if isinstance(m, (QuantResidual, QuantResidualBlock))]
    assert kinds["residual.branch"] == len(residuals) > 0
    shared = sum(bool(r.also) for r in points)
    assert shared > 0, "the residual stream is one point, shared with the branch's first conv"
    table = report_markdown(rows)
    assert all(f"`{r.name}" in table for r in rows)


def test_attention_and_residual_switches_leave_those_in_float():
    qmodel = quantize(dense("efficientvit_b0"), calib(),
                      config=QuantConfig(method="minmax", attention=False, residual=False))
    kinds = count_kinds(point_report(qmodel))
    assert not any(k.startswith(("attn.", "residual.")) for k in kinds), kinds
    assert not any(isinstance(m, QuantLiteMLA) for m in qmodel.modules())


@pytest.mark.parametrize("name", list(MODELS))
def test_trio_transforms_are_exact_before_rounding(name):
    model = dense(name)
    cfg = QuantConfig(method="minmax", trio=TrioConfig(log2_divisor=False), auto_float=False)  # plain PTQ
    qmodel = quantize(model, calib(), config=cfg)
    assert any(isinstance(m, QuantConv2d) and m.migration is not None for m in qmodel.modules())
    set_quant_state(qmodel, fake_quant=False)
    x = images()
    with torch.no_grad():
        assert_parity(qmodel(x), model(x), tol=5e-6, metric="rel",
                      what="migration and shifting must not change the float function")
    # with weights quantized, the shift compensation uses the quantized weight: still exact
    plain = quantize(model, calib(), config=dataclasses.replace(cfg, trio=TrioConfig(False, False, False)))
    for m in (qmodel, plain):
        set_quant_state(m, fake_quant=False)
        set_quant_state(m, fake_quant=True, weights=True)
    with torch.no_grad():
        assert_parity(qmodel(x), plain(x), tol=5e-6, metric="rel",
                      what="quantized weights, transforms on and off")


@pytest.mark.parametrize("name", list(MODELS))
def test_conv_bias_sits_on_the_int32_grid_a_runtime_stores(name):
    """ORT's QLinearConv adds the bias as round(b / (s_in·s_w)) on its accumulator; the simulation
    (and the exported constant) must use that same integer, shift compensation folded in."""
    qmodel = quantize(dense(name), calib(), config=trio_config())
    convs = [m for m in qmodel.modules() if isinstance(m, QuantConv2d) and m.bias is not None]
    assert convs and any(m.shift is not None for m in convs)
    for conv in convs:
        bias = conv.folded_bias()
        steps = bias / (conv.input_quant.scale * conv.weight_quant.scale)
        assert torch.allclose(steps, steps.round(), atol=1e-3), "bias off the accumulator grid"
        float_bias = conv.bias if conv.shift is None else None
        if float_bias is not None:  # at most half an accumulator step from the float bias
            step = conv.input_quant.scale * conv.weight_quant.scale
            assert ((bias - float_bias).abs() <= step / 2 + 1e-7).all()
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        conv = next(m for m in convs if m.shift is not None and m._bias_compensable())
        inp = {}
        handle = conv.register_forward_pre_hook(lambda mod, args: inp.setdefault("x", args[0]))
        y = qmodel(x)
        handle.remove()
        xq = conv.input_quant(conv.shift(inp["x"]))
        direct = conv._conv_forward(xq, conv.weight_quant(conv.weight), conv.folded_bias())
        assert torch.allclose(conv._compute(inp["x"]), direct, atol=1e-5)
    assert torch.isfinite(y).all()


def test_migration_cuts_the_error_of_per_channel_outliers(tmp_path):
    from vitedge.quantization.plots import plot_channel_ranges

    model = vitedge.fuse_bn(copy.deepcopy(dense("efficientvit_b0")))
    with torch.no_grad():  # every 7th channel of each depthwise input 30× larger
        for block in model.modules():
            if isinstance(block, MBConv):
                expand, dw = block.inverted_conv.conv, block.depth_conv.conv
                k = torch.arange(0, expand.out_channels, 7)
                expand.weight[k] *= 30
                expand.bias[k] *= 30
                dw.weight[k] /= 30
    base = QuantConfig(method="minmax")
    err_base = rel_err(quantize(model, calib(), config=base), model)
    migrated = quantize(model, calib(), config=dataclasses.replace(
        base, trio=TrioConfig(migration=True, shifting=False, log2_divisor=False)))
    err_mig = rel_err(migrated, model)
    assert err_mig < 0.6 * err_base, (err_mig, err_base)
    summary = plot_channel_ranges(migrated, images(), tmp_path / "ranges.png", max_layers=2)
    assert (tmp_path / "ranges.png").stat().st_size > 10_000
    assert all(s.transform == "migration" and s.levels_after > 10 * s.levels_before for s in summary), summary


def test_quantize_leaves_the_float_model_untouched():
    model = dense("efficientvit_m0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantize(model, calib(), "minmax")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(type(m).__name__ == "BatchNorm2d" for m in model.modules())


# --------------------------------------------------------------------------------------------
# artifacts


@pytest.mark.parametrize("name,cfg", [("efficientvit_b0", trio_config()),
                                      ("efficientvit_b0", trio_config(conv_outputs=True)),
                                      ("efficientvit_m0", QuantConfig(method="percentile", w_bits=6,
                                                                      conv_outputs=True))])
def test_saved_quantized_model_reloads_to_identical_logits(name, cfg, tmp_path):
    qmodel = quantize(dense(name), calib(), config=cfg)
    path = save_quantized(qmodel, tmp_path / "q.safetensors", extra={"classes": list("abcdefghij")})
    loaded = load_quantized(path)
    assert loaded.quant_config == cfg
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded(x), qmodel(x))
    assert point_report(loaded) == point_report(qmodel)
    with torch.no_grad():  # the generic loader recognises a quantized checkpoint too
        assert torch.equal(vitedge.load(path)(x), qmodel(x))
    with pytest.raises(VitedgeError, match="float model"):
        load_quantized(vitedge.save(dense(name), tmp_path / "float.safetensors"))


def test_points_left_in_float_stay_in_float_after_reload(tmp_path):
    """A precision plan that keeps points in float (here LiteMLA's numerators, the points that
    break small-data models) survives a save: reloading must not switch them back on."""
    qmodel = quantize(dense("efficientvit_b0"), calib(), config=trio_config(conv_outputs=True))
    numerators = [name for name, q in quantizers(qmodel) if q.kind == "attn.num"]
    assert len(numerators) == 8  # 4 LiteMLA blocks × 2 scales (the input and its aggregation)
    x = images()
    with torch.no_grad():
        all_int8 = qmodel(x)
    for name, q in quantizers(qmodel):
        q.fake_quant = q.kind != "attn.num"
    path = save_quantized(qmodel, tmp_path / "plan.safetensors")
    loaded = load_quantized(path)
    assert [name for name, q in quantizers(loaded) if not q.fake_quant] == numerators
    with torch.no_grad():
        reloaded = loaded(x)
        assert torch.equal(reloaded, qmodel(x)) and not torch.equal(reloaded, all_int8)
    record = vitedge.models.checkpoint.read_metadata(path)["extra"]["quantization"]
    assert record["format_version"] == 2 and record["float_points"] == numerators
    # every point on: still format 1, readable by the vitedge that wrote format 1
    plain = load_quantized(save_quantized(quantize(dense("efficientvit_b0"), calib(), config=trio_config()),
                                          tmp_path / "plain.safetensors"))
    assert all(q.fake_quant for _, q in quantizers(plain))
    assert vitedge.models.checkpoint.read_metadata(tmp_path / "plain.safetensors")["extra"][
        "quantization"]["format_version"] == 1


@pytest.mark.parametrize("name", list(MODELS))
def test_pruned_model_quantizes_and_reloads(name, tmp_path):
    pruned = vitedge.prune(dense(name), 0.4)
    qmodel = quantize(pruned, calib(), config=trio_config())
    loaded = load_quantized(save_quantized(qmodel, tmp_path / "pq.safetensors"))
    with torch.no_grad():
        assert torch.equal(loaded(images()), qmodel(images()))
    assert rel_err(qmodel, pruned) < 0.5


def test_fake_quant_model_exports_to_onnx_as_qdq_pairs(tmp_path):
    """What is simulated is what a QDQ runtime runs: every point exports as QuantizeLinear /
    DequantizeLinear, and ONNX Runtime, fusing those pairs into its integer kernels (QLinearConv,
    QLinearMatMul, QLinearAdd), reproduces the simulation's logits to float precision.

    Conv outputs are points and the weights ``exact_w_bits()`` wide, so every conv runs as an
    exact integer kernel on every CPU. Measured (ORT vs simulation, relative, AVX2 without VNNI,
    7-bit weights): B0 6.5e-7, M0 2.2e-7, while the logits of the other images are 0.28 / 0.11
    away (8-bit weights on this CPU: 0.20 / 0.17, ORT's int16 pair sums saturate). What is left
    is the float head (LayerNorm, pooling): on some images one of its values sits on a rounding
    tie, and one step at the last Linear's input moves the logits by ~5e-4.

    Not compared: the same file at ORT_DISABLE_ALL. That runs the float graph (DQ → float Conv →
    QuantizeLinear, Add of dequantized operands), while the simulation computes the integer
    kernels the fused graph runs; the two round differently on values within float error of a
    tie (the first in B0: one of 32,768 outputs of stem.res0's point conv, 9.499999 steps in
    float, exactly 9.5 → 10 in integers), and each flipped step grows through the quantized
    network up to the size of the quantization noise itself (B0: 3.6e-4 at that point, 0.045 at
    the logits, against 0.12 between float and quantized model). A torch forward of that float
    graph (fake-quant dividing by the scale as QuantizeLinear does) carries the same integers as
    ORT_DISABLE_ALL at every point (logits 2-6e-7; in two B0 settings one late step, 3-6e-4,
    where oneDNN and MLAS sum a float conv in different orders): no point is missing from the
    file, none is extra, and the log2 divisor exports as simulated."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    x = images()
    for name in ("efficientvit_m0", "efficientvit_b0"):
        qmodel = quantize(dense(name), calib(), config=trio_config(conv_outputs=True, w_bits=exact_w_bits()))
        path = str(tmp_path / f"{name}.onnx")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on int() of buffers: constants by design
            torch.onnx.export(qmodel, (x,), path, dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"])
        ops = [n.op_type for n in onnx.load(path).graph.node]
        assert ops.count("QuantizeLinear") >= len(list(quantizers(qmodel))) - count_kinds(
            point_report(qmodel)).get("attn.divisor", 0)
        options = ort.SessionOptions()  # default: all graph optimizations, QDQ fused into integer kernels
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        y = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        with torch.no_grad():
            ref = qmodel(x)
        # a tie in the float head flips one step of one image (which image depends on the CPU's
        # weight bits: B0's fourth with 8-bit weights on VNNI, 6.6e-4); every other image is exact
        off = [i for i in range(len(x)) if float((y[i] - ref[i]).abs().max() / ref[i].abs().max()) > 5e-6]
        assert len(off) <= 1 and all(float((y[i] - ref[i]).abs().max()) < 2e-3 for i in off), (name, off)
        exact = [i for i in range(len(x)) if i not in off]
        assert_parity(y[exact], ref[exact], tol=5e-6, metric="rel", what=name)


# --------------------------------------------------------------------------------------------
# QAT


def test_reconstruction_learns_steps_toward_the_float_logits_and_keeps_the_weights():
    from vitedge.quantization.reconstruct import reconstruct

    model = dense("efficientvit_b0")
    batches = calib()
    cfg = QuantConfig(method="minmax", a_bits=4, observer=FAST)  # coarse, so there is something to win
    plain = quantize(model, batches, config=cfg)
    learned = quantize(model, batches, config=cfg)
    losses = reconstruct(learned, model, batches, iters=30, lr=1e-2)
    assert min(losses[-5:]) < losses[0]
    assert rel_err(learned, model) < rel_err(plain, model)
    assert all(torch.equal(a, b) for (n, a), (_, b) in zip(plain.named_parameters(), learned.named_parameters())
               if "weight" in n or "bias" in n)
    assert not any(q.learning for _, q in quantizers(learned) if isinstance(q, Quantizer))  # frozen
    assert not model.training  # the float model comes back in the mode it had
    with pytest.raises(VitedgeError, match="reconstruct_iters"):
        QuantConfig(reconstruct_iters=-1)


def test_qat_learns_scales_that_reduce_the_loss(tmp_path):
    model = dense("efficientvit_b0")
    qmodel = prepare_qat(quantize(model, calib(), config=QuantConfig(method="minmax", w_bits=4, a_bits=4,
                                                                     auto_float=False)))  # plain PTQ
    x = images(8)
    with torch.no_grad():
        target = model(x)
    points = [q for _, q in quantizers(qmodel) if isinstance(q, Quantizer)]
    before = [q.scale.clone() for q in points]
    opt = torch.optim.Adam(scale_parameters(qmodel), lr=0.02)  # log step sizes: 2 % per step
    losses = []
    for _ in range(8):
        loss = nn.functional.mse_loss(qmodel(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    qmodel.state_dict()  # syncs each scale with its learned log
    assert sum(not torch.equal(b, q.scale) for b, q in zip(before, points)) > len(points) // 2, "scales move"
    assert all((q.scale > 0).all() for q in points)
    weight_grad = qmodel.stem.in_conv.conv.weight.grad
    assert weight_grad is not None and weight_grad.abs().sum() > 0, "weights train through the STE too"
    # a checkpoint written mid-QAT (as the trainer does every epoch) reloads to the same function
    loaded = load_quantized(save_quantized(qmodel, tmp_path / "qat.safetensors"))
    with torch.no_grad():
        assert torch.equal(loaded(x), qmodel.eval()(x))
    freeze(qmodel)
    assert scale_parameters(qmodel) == [] and not any(k.endswith("log_scale") for k in qmodel.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded(x), qmodel(x)), "freezing keeps the learned scales"


@pytest.mark.parametrize("name", ["efficientvit_b0", "efficientvit_m0"])
def test_qat_evaluation_scores_what_the_frozen_model_scores(name):
    """Mid-QAT evaluation (and that of its weight EMA) runs the runtime's integer arithmetic on
    the current step sizes, so the trainer's per-epoch top-1 is the frozen, deployed model's."""
    model = dense(name)
    qmodel = prepare_qat(quantize(model, calib(), "trio" if name.endswith("b0") else "mse"))
    x = images(8)
    opt = torch.optim.Adam(scale_parameters(qmodel), lr=0.02)
    ema = ModelEMA(qmodel, decay=0.5)
    for _ in range(3):
        loss = qmodel(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()  # moves log_scale; the scale buffers are now a step behind
        ema.update(qmodel)
    for learning in (qmodel.eval(), ema.module):
        with torch.no_grad():
            mid = learning(x)
        frozen = freeze(copy.deepcopy(learning))
        with torch.no_grad():
            assert torch.equal(mid, frozen(x))


def test_qat_with_tracked_ranges_follows_the_data():
    qmodel = prepare_qat(quantize(dense("efficientvit_b0"), calib(), "minmax"), learn_scales=False)
    stem = qmodel.stem.in_conv.conv.input_quant
    scale = stem.scale.detach().clone()
    qmodel(images(2) * 10)  # a much wider input range
    assert stem.scale > scale, "the EMA range widens"
    freeze(qmodel)
    frozen = stem.scale.detach().clone()
    qmodel(images(2) * 100)
    assert torch.equal(stem.scale.detach(), frozen)
    observe(qmodel)  # the toggle alone: activations follow the data again
    qmodel(images(2) * 100)
    assert stem.scale > frozen
    observe(qmodel, enabled=False)
    assert not any(q.observing for _, q in quantizers(qmodel))


# --------------------------------------------------------------------------------------------
# inputs


def test_calibration_data_in_every_accepted_form():
    x = images(8)
    assert [b.shape[0] for b in calibration_batches(x)] == [8]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(8)), batch_size=3)
    assert [b.shape[0] for b in calibration_batches(loader)] == [3, 3, 2]
    singles = [(img, 0) for img in torch.randn(70, 3, 8, 8)]  # a dataset of (image, label)
    assert [b.shape[0] for b in calibration_batches(singles)] == [32, 32, 6]
    assert len(calibration_batches(iter([x, x, x]), max_batches=2)) == 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(w_bits=1), "w_bits=1"),
    (dict(a_bits=17), "a_bits=17"),
    (dict(w_bits=8.0), "w_bits: input should be a valid integer, got 8.0"),  # the config model's type check
    (dict(a_bits=True), "a_bits: input should be a valid integer, got True"),
    (dict(method="minmx"), "did you mean 'minmax'"),
    (dict(method="kmeans"), "choose one of minmax, percentile, mse, trio"),
])
def test_bad_settings_fail_with_one_clear_line(kwargs, match):
    with pytest.raises(VitedgeError, match=match) as err:
        quantize(dense("efficientvit_b0"), calib(), **kwargs)
    assert "\n" not in str(err.value)


def test_bad_calibration_data_and_inputs_fail_clearly():
    model = dense("efficientvit_b0")
    for empty in ([], iter(()), torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 3, 8, 8)))):
        with pytest.raises(VitedgeError, match="calibration set is empty"):
            quantize(model, empty)
    with pytest.raises(VitedgeError, match="yielded a str"):
        quantize(model, ["not an image"])
    with pytest.raises(VitedgeError, match="already quantized"):
        quantize(quantize(model, calib(), "minmax"), calib())
    with pytest.raises(VitedgeError, match="divisor_bits"):
        TrioConfig(divisor_bits=0)
    with pytest.raises(VitedgeError, match="divisor_slide"):
        TrioConfig(divisor_slide="yes")
    with pytest.raises(VitedgeError, match="percentile"):
        ObserverConfig(percentile=20)
    with pytest.raises(VitedgeError, match="did you mean 'mse'"):
        ObserverConfig(activation="mes")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_conv_output_points_sit_before_activations_and_share_attention_tensors(name):
    """``conv_outputs``: one point between each conv and its activation (and on the attention
    convs, shared with the conv that reads the same tensor), with a bounded effect at 8 bits."""
    plain = quantize(dense(name), calib(), config=trio_config())
    qmodel = quantize(dense(name), calib(), config=trio_config(conv_outputs=True))
    outputs = [q for _, q in quantizers(qmodel) if q.kind == "conv.output"]
    assert len(outputs) >= 20 and all(q.scale > 0 for q in outputs)
    assert count_kinds(point_report(plain)).get("conv.output", 0) == 0
    if name == "efficientvit_b0":
        mla = next(m for m in qmodel.modules() if isinstance(m, QuantLiteMLA))
        assert mla.aggreg[0][0].input_quant is mla.qkv.conv.output_quant  # one tensor, one scale
        block = next(m for m in qmodel.modules() if isinstance(m, MBConv))
        assert block.inverted_conv.conv.output_quant is not None  # before the Hardswish
    else:
        attn = next(m for m in qmodel.modules() if type(m).__name__ == "QuantCascadedGroupAttention")
        assert attn.dws[0].input_quant is attn.qkvs[0].output_quant
    assert rel_err(qmodel, dense(name)) < 3 * rel_err(plain, dense(name)) + 0.05


def test_reconstruction_steps_hold_a_bounded_number_of_pixels(monkeypatch):
    """Whole segmentation frames learn in steps of a few frames: a 64-frame batch at once would
    hold gigabytes of activations for the backward pass."""
    from vitedge.quantization import reconstruct as rec

    model = dense("efficientvit_b0")
    qmodel = quantize(model, calib(), config=QuantConfig(method="minmax", auto_float=False))
    seen = []
    forward = qmodel.forward
    monkeypatch.setattr(qmodel, "forward", lambda x: seen.append(tuple(x.shape)) or forward(x))
    monkeypatch.setattr(rec, "MAX_STEP_PIXELS", 3 * RES * RES)
    rec.reconstruct(qmodel, model, [torch.randn(7, 3, RES, RES)], iters=4)
    assert [s[0] for s in seen] == [3, 3, 1, 3]  # the batch in steps of 3 images, then round again
