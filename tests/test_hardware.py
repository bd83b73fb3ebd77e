"""The operator list (``vitedge.hardware.operators``) and the Trio-ViT FPGA cycle model
(``vitedge.hardware.accelerator``).

Traces are the expensive part (a B1/B2 estimate at 288 px takes seconds on a 2-core CPU), so
models, operator lists and estimates are built once per module and shared.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import vitedge
from vitedge.hardware.accelerator import (
    ACCELERATORS,
    AcceleratorConfig,
    AcceleratorEstimate,
    estimate,
    get_accelerator,
)
from vitedge.hardware.operators import KINDS, OperatorList, classify_conv, extract_operators
from vitedge.quantization import ObserverConfig, QuantConfig

# Published Trio-ViT (ZCU102) throughput: (model, resolution) -> FPS.
REFERENCE_FPS = {
    ("efficientvit_b1", 224): 800.0,
    ("efficientvit_b1", 256): 617.0,
    ("efficientvit_b1", 288): 476.0,
    ("efficientvit_b2", 224): 263.0,
}
# Ops that only change tensor metadata: PyTorch eager moves no bytes for them. Written out here,
# not imported, so that the test does not take the code's own list on trust.
VIEW_OPS = {"view", "_unsafe_view", "reshape", "transpose", "permute", "t", "expand", "slice", "select", "split",
            "split_with_sizes", "unsqueeze", "squeeze", "alias", "unbind", "narrow"}
CONV_KINDS = ("conv", "pointwise", "depthwise")
QUANT_RES = 32
# Trio-ViT's transforms and log2 divisor, with min/max ranges: the ranges do not matter here, and the
# MSE search would triple the fixture's time.
FAST_TRIO = QuantConfig(method="trio", observer=ObserverConfig(weight="minmax", activation="minmax"))


def _model(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return vitedge.create_model(name, **kwargs).eval()


def _conv_ops(ops: OperatorList) -> list[tuple]:
    return [(o.scope, o.kind, o.macs, o.output_shape) for o in ops if o.op == "convolution"]


# --------------------------------------------------------------------------------------------
# shared, module-scoped work


@pytest.fixture(scope="module")
def traces():
    """``trace(name)``: (model, unfolded operator list, FlopCounterMode's MACs) at the model's input
    size, computed once per model."""
    cache: dict[str, tuple[nn.Module, OperatorList, int]] = {}

    def trace(name: str) -> tuple[nn.Module, OperatorList, int]:
        if name not in cache:
            model = _model(name)
            ops = extract_operators(model)
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                model(torch.randn(ops.input_shape))
            cache[name] = model, ops, counter.get_total_flops() // 2
        return cache[name]

    return trace


@pytest.fixture(scope="module")
def b0(traces):
    return traces("efficientvit_b0")[0]


@pytest.fixture(scope="module")
def b0_ops(traces):
    return traces("efficientvit_b0")[1]


@pytest.fixture(scope="module")
def b0_folded(b0):
    return extract_operators(b0, fold_bn=True)


@pytest.fixture(scope="module")
def estimates():
    """``get(name, resolution)``: the default-accelerator estimate, computed once per pair;
    ``get.model(name)``: the (seeded, eval-mode) model it was computed from."""
    models: dict[str, nn.Module] = {}
    cache: dict[tuple[str, int], AcceleratorEstimate] = {}

    def model(name: str) -> nn.Module:
        if name not in models:
            models[name] = _model(name)
        return models[name]

    def get(name: str, resolution: int = 224) -> AcceleratorEstimate:
        if (name, resolution) not in cache:
            cache[name, resolution] = estimate(model(name), resolution=resolution)
        return cache[name, resolution]

    get.model = model
    return get


@pytest.fixture(scope="module")
def quantized_b0():
    """(float B0, its fake-quantized copy, the float model's BN-folded operators, the quantized
    model's operators): Trio-ViT method, a few random calibration images, traced at 32 px."""
    model = _model("efficientvit_b0", num_classes=10)
    calib = [torch.randn(2, 3, QUANT_RES, QUANT_RES, generator=torch.Generator().manual_seed(1))]
    qmodel = vitedge.quantize(model, calib, config=FAST_TRIO)
    return (
        model,
        qmodel,
        extract_operators(model, resolution=QUANT_RES, fold_bn=True),
        extract_operators(qmodel, resolution=QUANT_RES),
    )


# --------------------------------------------------------------------------------------------
# 1. operator list


TRACED = ["efficientvit_b0", "efficientvit_m0"]


@pytest.mark.parametrize("name", TRACED)
def test_operator_macs_match_torch_flop_counter(traces, name):
    _, ops, flop_macs = traces(name)
    assert ops.macs == flop_macs
    assert ops.macs == sum(o.macs for o in ops)
    assert flop_macs > 0


@pytest.mark.parametrize("name", TRACED)
def test_operator_kinds_are_known_and_none_is_other(traces, name):
    _, ops, _ = traces(name)
    kinds = {o.kind for o in ops}
    assert kinds <= set(KINDS)
    assert "other" not in kinds, [o.name for o in ops if o.kind == "other"]
    # Both families run convs of all three geometries, attention matmuls and BatchNorm.
    assert {"conv", "pointwise", "depthwise", "matmul", "norm", "elementwise", "reshape"} <= kinds
    assert [o.index for o in ops] == list(range(len(ops)))


def test_conv_kinds_follow_geometry_and_litemla_bmm_is_matmul(estimates):
    ops = extract_operators(estimates.model("efficientvit_b1"), resolution=64)
    assert ops[0].op == "convolution" and ops[0].kind == "conv"
    assert ops[0].kernel == (3, 3) and ops[0].stride == (2, 2)
    convs = [o for o in ops if o.op == "convolution"]
    assert {o.kind for o in convs} == {"conv", "pointwise", "depthwise"}
    for o in convs:
        c_in = o.input_shapes[0][1]
        if o.kind == "depthwise":
            assert o.groups == c_in > 1 and o.weight_shape[1] == 1
        elif o.kind == "pointwise":
            assert o.kernel == (1, 1)
        else:
            assert math.prod(o.kernel) > 1 and o.weight_shape[1] * o.groups == c_in
        assert o.macs == math.prod(o.output_shape) * math.prod(o.weight_shape[1:])
    bmms = [o for o in ops if o.module_type == "LiteMLA" and o.op == "bmm"]
    assert bmms and all(o.kind == "matmul" and o.macs > 0 for o in bmms)
    # The classifier's linear layers are matmuls too.
    assert any(o.scope.startswith("head") and o.op in ("mm", "addmm") and o.kind == "matmul" for o in ops)


@pytest.mark.parametrize(
    "in_channels, weight_shape, groups, kind",
    [
        (32, (32, 1, 3, 3), 32, "depthwise"),
        (32, (32, 1, 5, 5), 32, "depthwise"),
        (32, (64, 32, 1, 1), 1, "pointwise"),
        (32, (64, 8, 1, 1), 4, "pointwise"),  # grouped 1×1
        (3, (16, 3, 3, 3), 1, "conv"),
        (32, (32, 8, 3, 3), 4, "conv"),  # grouped 3×3
        (1, (8, 1, 3, 3), 1, "conv"),  # one input channel but not grouped
    ],
)
def test_classify_conv(in_channels, weight_shape, groups, kind):
    assert classify_conv(in_channels, weight_shape, groups) == kind


def test_fold_bn_removes_batch_norm_and_leaves_the_model_alone(b0, b0_ops, b0_folded):
    plain = b0_ops
    assert any("batch_norm" in o.op for o in plain)
    assert not any("batch_norm" in o.op for o in b0_folded)
    # Only BatchNorm went: the head's LayerNorm is still there, and no MACs moved.
    assert {o.op for o in b0_folded if o.kind == "norm"} == {"native_layer_norm"}
    assert b0_folded.folded_bn and not plain.folded_bn
    assert b0_folded.macs == plain.macs
    assert _conv_ops(b0_folded) == _conv_ops(plain)
    # The traced model is untouched: still BatchNorm modules, same weights, mode restored.
    before = {k: v.clone() for k, v in b0.state_dict().items()}
    b0.train()
    extract_operators(b0, resolution=32, fold_bn=True)
    assert b0.training
    b0.eval()
    assert any(isinstance(m, nn.BatchNorm2d) for m in b0.modules())
    after = b0.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_views_move_no_bytes_and_compute_ops_do(b0_ops):
    ops = b0_ops
    views = [o for o in ops if o.op in VIEW_OPS]
    assert len({o.op for o in views}) >= 3
    assert all(o.bytes_read() == 0 and o.bytes_written() == 0 for o in views)
    assert all(o.kind == "reshape" for o in views)
    copies = [o for o in ops if o.op in ("cat", "clone", "constant_pad_nd")]
    assert copies and all(o.bytes_read() > 0 and o.bytes_written() > 0 for o in copies)
    for o in ops:
        if o.op == "convolution":
            assert o.elem_bytes == 4
            assert o.bytes_written() == 4 * math.prod(o.output_shape)
            assert o.bytes_read() == 4 * (math.prod(o.input_shapes[0]) + o.weight_elems)
            assert o.weight_elems >= math.prod(o.weight_shape)
            assert o.bytes_read(elem_bytes=1) == o.bytes_read() // 4


def test_quantized_model_extracts_like_the_float_one(quantized_b0):
    _, qmodel, floats, quants = quantized_b0
    quantizers = [
        type(m).__name__ for m in qmodel.modules() if type(m).__name__ in ("Quantizer", "Log2Quantizer")
    ]
    assert len(quantizers) > 50 and "Log2Quantizer" in quantizers  # Trio-ViT's log2 divisor too
    assert not [o.name for o in quants if o.module_type in ("Quantizer", "Log2Quantizer")]
    assert _conv_ops(quants) == _conv_ops(floats)
    conv_macs = sum(o.macs for o in floats if o.kind in CONV_KINDS)
    assert conv_macs > 0
    assert sum(o.macs for o in quants if o.kind in CONV_KINDS) == conv_macs
    assert "other" not in {o.kind for o in quants}


def test_quantized_conv_weights_are_attributed_as_weights(quantized_b0):
    floats = [o for o in quantized_b0[2] if o.op == "convolution"]
    quants = [o for o in quantized_b0[3] if o.op == "convolution"]
    assert [(o.weight_shape, o.weight_elems, o.input_elems) for o in quants] == [
        (o.weight_shape, o.weight_elems, o.input_elems) for o in floats
    ]


def test_quantized_model_can_be_estimated(quantized_b0):
    _, _, floats, quants = quantized_b0
    assert estimate(quants).macs == pytest.approx(estimate(floats).macs, rel=0.05)


# --------------------------------------------------------------------------------------------
# 2. accelerator acceptance


def test_default_accelerator_is_the_published_array():
    cfg = get_accelerator("trio-zcu102")
    assert cfg is ACCELERATORS["trio-zcu102"]
    assert cfg == AcceleratorConfig()
    assert cfg.multipliers == 2048
    assert cfg.dsps == 1024
    assert cfg.peak_gops == pytest.approx(819.2)
    assert cfg.ddr_bytes_per_cycle == pytest.approx(96.0)


def test_b1_utilisation_at_224(estimates):
    est = estimates("efficientvit_b1", 224)
    assert 0.90 <= est.utilisation <= 0.97
    assert est.utilisation == pytest.approx(est.macs / (est.cycles * 2048))
    assert est.excluded_macs > 0  # the classifier head is left to the host


@pytest.mark.parametrize("name, resolution", sorted(REFERENCE_FPS))
def test_fps_within_ten_percent_of_reference(estimates, name, resolution):
    est = estimates(name, resolution)
    assert est.fps == pytest.approx(REFERENCE_FPS[name, resolution], rel=0.10)
    assert est.resolution == (resolution, resolution)
    assert est.fps == pytest.approx(200e6 / est.cycles)
    assert est.latency_ms == pytest.approx(1e3 / est.fps)
    assert 0 < est.gops <= est.config.peak_gops
    assert est.gops == pytest.approx(2 * est.macs * est.fps / 1e9)
    assert est.gops_per_dsp == pytest.approx(est.gops / 1024)
    assert not est.memory_bound_layers  # 19.2 GB/s and a 2 MiB buffer keep the array busy


def test_strict_lanes_book_no_lane_twice(estimates):
    """The published model prices a fused layer's PW on all lanes while the RPE runs the DW (and
    attention matmuls while it divides): those layers exceed the array. strict_lanes does not."""
    est = estimates("efficientvit_b1", 224)
    multipliers = est.config.multipliers
    over = {layer.kind for layer in est.layers if layer.utilisation(multipliers) > 1.0}
    assert over and over <= {"dw→pw", "attention"}
    strict = estimate(vitedge.create_model("efficientvit_b1"), est.config.with_overrides(strict_lanes=True))
    assert max(layer.utilisation(multipliers) for layer in strict.layers) <= 1.0
    assert strict.macs == est.macs
    assert 0.9 * est.fps < strict.fps < est.fps


# --------------------------------------------------------------------------------------------
# 3. pruned models


def test_pruned_model_is_proportionally_faster(estimates):
    dense = estimates("efficientvit_b1", 224)
    model = estimates.model("efficientvit_b1")
    params = sum(p.numel() for p in model.parameters())
    pruned_model = vitedge.prune(model, ratio=0.4, criterion="l2")
    assert sum(p.numel() for p in model.parameters()) == params  # the shared dense model is untouched
    assert sum(p.numel() for p in pruned_model.parameters()) < params
    pruned = estimate(pruned_model)
    assert pruned.fps > dense.fps
    mac_ratio = pruned.macs / dense.macs
    cycle_ratio = pruned.cycles / dense.cycles
    assert mac_ratio < 0.8  # really pruned
    # Measured: MAC ratio 0.617, cycle ratio 0.629 (1.9 % apart).
    assert cycle_ratio == pytest.approx(mac_ratio, rel=0.15)
    assert pruned.utilisation == pytest.approx(dense.utilisation, abs=0.05)


# --------------------------------------------------------------------------------------------
# 4. memory


def test_ddr_starved_accelerator_is_memory_bound(b0_folded):
    base = estimate(b0_folded)
    starved = estimate(b0_folded, get_accelerator("trio-zcu102").with_overrides(ddr_gbps=0.05))
    assert starved.config.ddr_gbps == 0.05 and get_accelerator("trio-zcu102").ddr_gbps == 19.2
    assert len(base.memory_bound_layers) == 0
    assert len(starved.memory_bound_layers) > len(base.memory_bound_layers)
    assert len(starved.memory_bound_layers) >= len(starved.layers) // 2
    assert all(
        layer.bound == "memory" and layer.memory_cycles > layer.compute_cycles
        for layer in starved.memory_bound_layers
    )
    assert starved.fps < base.fps / 10
    assert starved.macs == base.macs
    assert any("0.05 GB/s" in a for a in starved.assumptions)


def test_default_buffer_keeps_feature_maps_on_chip_and_a_tiny_one_does_not(b0_folded):
    base = estimate(b0_folded)
    tiny = estimate(b0_folded, get_accelerator("trio-zcu102").with_overrides(buffer_kib=1))
    # Default: DDR carries the INT8 weights of the mapped layers and the input image, nothing else.
    weights = sum(o.weight_elems for o in b0_folded if not o.scope.startswith("head"))
    image = math.prod(b0_folded.input_shape)
    assert sum(layer.ddr_bytes for layer in base.layers) == weights + image
    assert (
        sum(layer.ddr_bytes for layer in tiny.layers) > sum(layer.ddr_bytes for layer in base.layers) + image
    )
    assert all(t.ddr_bytes >= b.ddr_bytes for t, b in zip(tiny.layers, base.layers))
    assert tiny.cycles >= base.cycles


def test_estimate_of_a_model_matches_its_operator_list(b0, b0_folded):
    from_model = estimate(b0)
    from_ops = estimate(b0_folded)
    assert from_model.cycles == from_ops.cycles
    assert [layer.name for layer in from_model.layers] == [layer.name for layer in from_ops.layers]


# --------------------------------------------------------------------------------------------
# 5. bad input


@pytest.mark.parametrize(
    "make, parameter",
    [
        (lambda: AcceleratorConfig(mat_lanes=0), "mat_lanes"),
        (lambda: AcceleratorConfig(mat_lanes=True), "mat_lanes"),
        (lambda: AcceleratorConfig(replication=2.5), "replication"),
        (lambda: AcceleratorConfig(ddr_gbps=-1), "ddr_gbps"),
        (lambda: AcceleratorConfig(clock_mhz=float("nan")), "clock_mhz"),
        (lambda: AcceleratorConfig(buffer_kib=float("inf")), "buffer_kib"),
        (lambda: get_accelerator("trio-zcu102").with_overrides(bogus=1), "bogus"),
        (lambda: get_accelerator("trio-zcu102").with_overrides(pes=0), "pes"),
        (lambda: get_accelerator("nope"), "nope"),
    ],
    ids=[
        "mat_lanes=0",
        "mat_lanes=True",
        "replication=2.5",
        "ddr_gbps=-1",
        "clock_mhz=nan",
        "buffer_kib=inf",
        "bogus",
        "override-pes=0",
        "unknown-preset",
    ],
)
def test_bad_accelerator_parameters_are_named(make, parameter):
    with pytest.raises(vitedge.VitedgeError, match=parameter):
        make()


def test_softmax_attention_cannot_be_mapped():
    with pytest.raises(vitedge.VitedgeError, match="cannot be mapped") as info:
        estimate(_model("efficientvit_m0", img_size=64))
    assert "softmax" in str(info.value)


def test_head_layer_norm_cannot_be_mapped(estimates):
    with pytest.raises(vitedge.VitedgeError, match="cannot be mapped") as info:
        estimate(estimates.model("efficientvit_b1"), resolution=64, include_head=True)
    assert "layer_norm" in str(info.value)


def test_estimate_refuses_a_batch(b0):
    with pytest.raises(vitedge.VitedgeError, match="batch_size=1"):
        estimate(extract_operators(b0, resolution=32, batch_size=2, fold_bn=True))


# --------------------------------------------------------------------------------------------
# 6. reports


def test_markdown_has_every_layer_and_the_assumptions(estimates):
    est = estimates("efficientvit_b1", 224)
    md = est.to_markdown()
    assert "Assumptions" in md
    assert all(f"- {a}" in md for a in est.assumptions)
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| layer |")]
    assert len(rows) == len(est.layers)
    for row, layer in zip(rows, est.layers):
        assert row.startswith(f"| {layer.name} | {layer.kind} | {layer.engine} |")
        assert f"| {layer.bound} |" in row
    assert f"{est.fps:.1f} FPS" in md


def test_summary_and_dict_agree_with_the_estimate(estimates):
    est = estimates("efficientvit_b1", 224)
    s = est.summary()
    assert s["fps"] == est.fps
    assert s["cycles"] == est.cycles == sum(layer.cycles for layer in est.layers)
    assert s["macs"] == est.macs
    assert s["layers"] == len(est.layers)
    assert s["dsps"] == 1024 and s["peak_gops"] == pytest.approx(819.2)
    d = est.to_dict()
    assert d["summary"] == s
    assert len(d["layers"]) == len(est.layers)
    assert {row["bound"] for row in d["layers"]} <= {"compute", "memory"}
    assert any("classifier head excluded" in a for a in d["assumptions"])
