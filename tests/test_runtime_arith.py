"""The simulation computes what ONNX Runtime computes: each emulated kernel against ORT's own on
random integers (bit for bit), and a whole quantized B0 against its exported INT8 file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import exact_w_bits
from parity import assert_input_dependent, input_dependent

import vitedge
from vitedge.quantization import QuantConfig, quantize
from vitedge.quantization.points import prepare
from vitedge.quantization.qmodules import QuantConv2d
from vitedge.quantization.runtime_arith import (
    RuntimeHardswish,
    exact_mode,
    graph_arithmetic,
    qlinear_add,
    quantize_to_grid,
    requantize,
)

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def run_node(
    node, inputs: dict[str, np.ndarray], constants: dict[str, np.ndarray], out_type: int
) -> np.ndarray:
    """One ONNX node on ORT's CPU kernels, graph optimisations off (the kernel itself)."""
    types = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.float32): TensorProto.FLOAT}
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(k, types[v.dtype], v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", out_type, None)],
        [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(
        helper.make_model(graph, opset_imports=opsets).SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    return session.run(None, inputs)[0]


def scalar(value, dtype) -> np.ndarray:
    return np.array(value, dtype=dtype)


def random_qparams(rng: np.random.Generator, names: str) -> dict[str, np.ndarray]:
    """Log-uniform scales in [1e-3, 0.1] and uint8 zero points for operands ``names`` ("abc"):
    keys ``s<name>`` and ``z<name>``, as the ONNX constants of a QLinear node."""
    out = {}
    for name in names:
        out["s" + name] = scalar(np.exp(rng.uniform(np.log(1e-3), np.log(1e-1))), np.float32)
        out["z" + name] = scalar(rng.integers(0, 256), np.uint8)
    return out


def test_quantize_linear_divides_like_the_runtime():
    rng = np.random.default_rng(0)
    scale, zero = np.float32(0.0123), 117
    # random values, plus every half step of the grid and its float neighbours: there x/s and
    # x·(1/s) can round to different integers, which random values almost never show
    ties = ((np.arange(-zero, 256 - zero) + 0.5) * scale).astype(np.float32)
    near, up, down = [ties], ties, ties
    for _ in range(4):
        up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
        near += [up, down]
    x = np.concatenate([(rng.standard_normal(1 << 18) * 3).astype(np.float32), *near])
    got = run_node(
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"]),
        {"x": x},
        {"s": scalar(scale, np.float32), "z": scalar(zero, np.uint8)},
        TensorProto.UINT8,
    )
    ours = quantize_to_grid(torch.from_numpy(x), torch.tensor(scale), torch.tensor(zero), 0, 255) + zero
    assert np.array_equal(ours.numpy().astype(np.uint8), got)
    reciprocal = np.clip(np.rint(x * (np.float32(1) / scale)) + zero, 0, 255).astype(np.uint8)
    assert not np.array_equal(reciprocal, got), "the inputs must tell a division from a multiplication"


def test_hardswish_rounds_like_the_exported_hardsigmoid_and_mul():
    x = torch.randn(1 << 18) * 4
    sig = run_node(
        helper.make_node("HardSigmoid", ["x"], ["y"], alpha=1 / 6, beta=0.5),
        {"x": x.numpy()},
        {},
        TensorProto.FLOAT,
    )
    assert torch.equal(RuntimeHardswish()(x), x * torch.from_numpy(sig))
    assert not torch.equal(
        torch.nn.functional.hardswish(x), x * torch.from_numpy(sig)
    )  # why the module exists


@pytest.mark.parametrize("seed", [0, 1])
def test_requantized_integer_matmul_matches_qlinearmatmul(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (2, 48, 24), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 24, 16), dtype=np.uint8)
    consts = random_qparams(rng, "aby")
    t = {k: torch.tensor(v) for k, v in consts.items()}
    node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])
    got = run_node(node, {"a": a, "b": b}, consts, TensorProto.UINT8)
    acc = torch.from_numpy(a.astype(np.float64) - int(t["za"])) @ torch.from_numpy(
        b.astype(np.float64) - int(t["zb"])
    )
    ours = requantize(acc, (t["sa"] * t["sb"]) / t["sy"], t["zy"], 0, 255) + t["zy"]
    assert np.array_equal(ours.numpy().astype(np.uint8), got)
    # a quantized matmul with a float output: float(acc) · (s_a · s_b)
    node = helper.make_node(
        "MatMulIntegerToFloat", ["a", "b", "sa", "sb", "za", "zb"], ["y"], domain="com.microsoft"
    )
    got = run_node(node, {"a": a, "b": b}, consts, TensorProto.FLOAT)
    assert np.array_equal((acc.float() * (t["sa"] * t["sb"])).numpy(), got)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_qlinear_add_matches_the_runtime_kernel(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, 65536, dtype=np.uint8)
    b = rng.integers(0, 256, 65536, dtype=np.uint8)
    consts = random_qparams(rng, "abc")
    node = helper.make_node(
        "QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["y"], domain="com.microsoft"
    )
    got = run_node(node, {"a": a, "b": b}, consts, TensorProto.UINT8)
    t = {k: torch.tensor(v) for k, v in consts.items()}
    a_t, b_t = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    ours = qlinear_add(a_t, t["sa"], t["za"], b_t, t["sb"], t["zb"], t["sc"], t["zc"], 0, 255)
    assert np.array_equal(ours.numpy().astype(np.uint8), got)


def test_every_conv_writes_on_a_point_and_multi_reader_outputs_stay_float():
    model = vitedge.create_model("efficientvit_b0", num_classes=10).eval()
    net = prepare(model, QuantConfig(conv_outputs=True))
    convs = {n: c for n, c in net.named_modules() if isinstance(c, QuantConv2d)}
    assert all(c.requant_point is not None for c in convs.values())
    linked = {n for n, c in convs.items() if "consumer" in c.__dict__}
    assert "stages.0.blocks.1.main.point_conv.conv" in linked  # → the residual's branch point
    assert "stages.3.blocks.1.context_module.main.proj.conv" in linked
    # without conv-output points the qkv conv feeds both the aggregation conv's point and the
    # attention's reshape: a runtime cannot fuse it, so neither does the simulation
    net = prepare(model, QuantConfig(conv_outputs=False))
    qkv = net.get_submodule("stages.2.blocks.1.context_module.main.qkv.conv")
    assert qkv.requant_point is None
    assert "consumer" not in qkv.__dict__ and "consumer" not in net.state_dict().__repr__()


def test_exact_mode_only_without_gradient_and_outside_export():
    w = torch.zeros(2, requires_grad=True)
    with torch.no_grad():
        assert exact_mode(w)
        with graph_arithmetic():
            assert not exact_mode(w)
    assert not exact_mode(w)
    assert exact_mode(torch.zeros(2))


@pytest.mark.parametrize(
    ("name", "res", "identical"),
    [
        # images whose logits equal ORT's (max |Δ| < 1e-4), measured: B1 15/16 (one step flipped in
        # the float head: LayerNorm, pooling), M0 12/16 (ORT's float Softmax rounds one of 153,664
        # attention probabilities of its first block across a step, which then grows), B0 16/16;
        # with torch's float graph instead: 2/16, 0/16, 7/16
        ("efficientvit_b1", 96, 0.85),
        ("efficientvit_m0", 224, 0.6),
        ("efficientvit_b0", 64, 0.9),
    ],
)
def test_quantized_model_reproduces_the_onnx_runtime_logits(tmp_path, name, res, identical):
    torch.manual_seed(0)
    kwargs = {"img_size": res} if name.startswith("efficientvit_m") else {}
    # informative weights: with the default init these logits move by ~1e-6 between two images,
    # and "equal within 1e-4" would hold for ORT fed another image
    model = input_dependent(vitedge.create_model(name, num_classes=10, **kwargs), resolution=res)
    calib = [torch.randn(8, 3, res, res) for _ in range(2)]
    qmodel = quantize(model, calib, config=QuantConfig(conv_outputs=True, w_bits=exact_w_bits(), auto_float=False))
    path = vitedge.export(qmodel, tmp_path / "model.onnx", precision="int8", resolution=res)
    from vitedge.deploy import OnnxRuntime

    runtime = OnnxRuntime(path, threads=1)
    x = torch.randn(16, 3, res, res)
    ort_logits = torch.from_numpy(runtime(x.numpy()))
    with torch.no_grad():
        exact = qmodel(x)
        with graph_arithmetic():
            graph = qmodel(x)
    assert_input_dependent(exact, exact.roll(1, 0), 1e-4, what=f"{name} simulated logits")
    exact_err = (exact - ort_logits).abs().amax(dim=1)
    graph_err = (graph - ort_logits).abs().amax(dim=1)
    assert (exact_err < 1e-4).float().mean() >= identical
    assert (exact_err < 1e-4).sum() > (graph_err < 1e-4).sum()
    assert exact_err.mean() < 0.8 * graph_err.mean()
