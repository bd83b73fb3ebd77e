"""Quantization targets: each runtime gets the point layout its integer kernels fuse, recorded in
the checkpoint and the exported file; OpenVINO runs the attention matmuls of that graph in int8."""

from __future__ import annotations

import collections
import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import input_dependent

import vitedge
from vitedge.quantization import QuantConfig, load_quantized, quantizers, save_quantized, set_quant_state
from vitedge.quantization import api as quant_api
from vitedge.quantization.qmodules import LinearAttentionPoints, SoftmaxAttentionPoints


def _calib(res: int, n: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(4, 3, res, res, generator=gen) for _ in range(n)]


def _kinds(qmodel: torch.nn.Module) -> collections.Counter:
    return collections.Counter(q.kind for _, q in quantizers(qmodel, weights=False))


def test_target_fixes_the_layout_and_contradictions_fail_in_one_line():
    cfg = QuantConfig.for_target("openvino", method="minmax", w_bits=8)
    assert (cfg.target, cfg.conv_outputs, cfg.residual, cfg.method) == ("openvino", False, False, "minmax")
    assert QuantConfig.for_target("onnxruntime").conv_outputs
    assert QuantConfig.for_target("tensorrt").a_symmetric
    # the layout wins over fields that contradict it, and moving a config keeps the rest
    assert QuantConfig.for_target("openvino", conv_outputs=True).conv_outputs is False
    moved = QuantConfig.for_target("onnxruntime", method="mse", w_bits=6).retarget("openvino")
    assert (moved.target, moved.conv_outputs, moved.method, moved.w_bits) == ("openvino", False, "mse", 6)
    assert QuantConfig.from_dict(moved.to_dict()) == moved
    with pytest.raises(vitedge.VitedgeError, match=r"target openvino needs conv_outputs=False .*for_target"):
        QuantConfig(target="openvino", conv_outputs=True, residual=False)
    with pytest.raises(vitedge.VitedgeError, match="unknown quantization target 'openvnio': did you mean 'openvino'"):
        QuantConfig.for_target("openvnio")


@pytest.mark.parametrize("saturates", [True, False])
def test_overflow_fix_follows_the_cpu_for_cpu_targets(monkeypatch, saturates):
    from vitedge.quantization import config as quant_config

    monkeypatch.setattr(quant_config, "int8_pairs_saturate", lambda: saturates)
    for target in ("openvino", "onnxruntime"):
        assert QuantConfig.for_target(target).overflow_fix is saturates
        assert QuantConfig(method="minmax").retarget(target).overflow_fix is saturates
    assert not QuantConfig.for_target("simulation").overflow_fix and not QuantConfig.for_target("tensorrt").overflow_fix
    assert QuantConfig.for_target("openvino", overflow_fix=False).overflow_fix is False  # given: kept
    torch.manual_seed(0)
    b0 = input_dependent(vitedge.create_model("efficientvit_b0", num_classes=3, img_size=32)).eval()
    q = vitedge.quantize(b0, _calib(32), target="openvino", config=QuantConfig(auto_float=False))
    weights = {p.spec.qmax for _, p in quantizers(q, weights=True)}
    signed = {p.spec.qmax for m in q.modules() if isinstance(m, LinearAttentionPoints) for p in (m.v, m.kv)}
    # without VNNI, u8 × s7 pair sums stay below 2^15 (255·63·2): the runtime computes the simulation
    assert (weights, signed) == (({63}, {63}) if saturates else ({127}, {127}))
    assert q.quant_config.weight_bits == (7 if saturates else 8) and q.quant_config.w_bits == 8


def test_a_target_whose_runtime_is_missing_fails_before_any_work(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(quant_api.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorrt" else real(name, *a))
    model = vitedge.create_model("efficientvit_b0", num_classes=3, img_size=32)
    with pytest.raises(vitedge.VitedgeError, match="target tensorrt needs the tensorrt package.*pip install tensorrt"):
        vitedge.quantize(model, [torch.zeros(1)], target="tensorrt")  # the batch would fail if calibrated


def test_openvino_layout_quantizes_only_conv_and_matmul_inputs():
    torch.manual_seed(0)
    b0 = input_dependent(vitedge.create_model("efficientvit_b0", num_classes=3, img_size=32)).eval()
    full = _kinds(vitedge.quantize(b0, _calib(32), config=QuantConfig.for_target("onnxruntime", auto_float=False)))
    ov = vitedge.quantize(b0, _calib(32), target="openvino", config=QuantConfig(auto_float=False))
    kinds = _kinds(ov)
    assert {"conv.output", "residual.branch", "attn.num", "attn.divisor", "attn.ksum"} <= set(full)
    dropped = {"conv.output", "residual.branch", "residual.shortcut", "attn.num", "attn.divisor", "attn.den",
               "attn.ksum"}
    assert not dropped & set(kinds)
    assert kinds["attn.q"] == kinds["attn.k"] == kinds["attn.v"] == kinds["attn.kv"] == full["attn.q"] > 0
    for points in (m for m in ov.modules() if isinstance(m, LinearAttentionPoints)):
        # input 1 of KᵀV and of Q·(KᵀV) is signed with zero point 0; K and Q are ReLU'd, so theirs is 0
        assert points.v.spec.symmetric and points.kv.spec.symmetric and not points.q.spec.symmetric
        assert int(points.q.zero_point) == int(points.k.zero_point) == 0
    # the layout only moves points: with every point off it computes the float model
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(set_quant_state(ov, fake_quant=False)(x), b0(x), atol=1e-4)


def test_openvino_layout_of_softmax_attention_keeps_the_float_function():
    torch.manual_seed(0)
    m0 = input_dependent(vitedge.create_model("efficientvit_m0", num_classes=3)).eval()
    q = vitedge.quantize(m0, _calib(224, 1), target="openvino", config=QuantConfig(auto_float=False))
    heads = [m for m in q.modules() if isinstance(m, SoftmaxAttentionPoints)]
    assert heads and all(h.q.spec.symmetric and h.k.spec.symmetric and h.v.spec.symmetric
                         and not h.attn.spec.symmetric for h in heads)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():  # (attn · vᵀ)ᵀ is v · attnᵀ
        assert torch.allclose(set_quant_state(q, fake_quant=False)(x), m0(x), atol=1e-4)


def test_target_survives_the_checkpoint_and_reaches_the_file(tmp_path):
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    b0 = input_dependent(vitedge.create_model("efficientvit_b0", num_classes=3, img_size=32)).eval()
    q = vitedge.quantize(b0, _calib(32), target="openvino", config=QuantConfig(auto_float=False))
    back = load_quantized(save_quantized(q, tmp_path / "q.safetensors"))
    assert back.quant_config.target == "openvino"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x), q(x))
    path = vitedge.export(back, tmp_path / "q.onnx", precision="int8")
    assert vitedge.deploy.read_onnx_metadata(path)["vitedge.quant_target"] == "openvino"


def _runtime_ops(path_or_compiled) -> collections.Counter:
    """(layer type, runtime precision, part of an attention) of each op OpenVINO's CPU plugin runs."""
    import openvino as ov

    compiled = path_or_compiled
    if not isinstance(compiled, ov.CompiledModel):
        compiled = ov.Core().compile_model(str(path_or_compiled), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ops = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        ops[info["layerType"].astype(str), info["runtimePrecision"].astype(str),
            "attn_quant" in info["originalLayersNames"].astype(str)] += 1
    return ops


def _int8_attention_matmuls(ops: collections.Counter) -> int:
    return sum(n for (kind, prec, attn), n in ops.items() if kind == "MatMul" and attn and prec in ("u8", "i8"))


def test_openvino_runs_every_attention_matmul_of_its_target_in_int8(tmp_path):
    pytest.importorskip("openvino")
    torch.manual_seed(0)
    b0 = input_dependent(vitedge.create_model("efficientvit_b0", num_classes=3, img_size=64)).eval()
    files, qmodels = {}, {}
    for target in ("openvino", "onnxruntime"):
        q = qmodels[target] = vitedge.quantize(b0, _calib(64), target=target, config=QuantConfig(auto_float=False))
        files[target] = vitedge.export(q, tmp_path / f"{target}.onnx", precision="int8", dynamic_batch=False)
    ov_ops, ort_ops = _runtime_ops(files["openvino"]), _runtime_ops(files["onnxruntime"])
    branches = sum(isinstance(m, LinearAttentionPoints) for m in q.modules())
    # KᵀV and Q·(KᵀV) of every branch in int8 (u8 activations × i8); only the denominator's
    # product (Qᵀ·ΣK, after a ReduceSum) stays float
    int8_matmuls = _int8_attention_matmuls(ov_ops)
    float_matmuls = sum(n for (kind, prec, attn), n in ov_ops.items() if kind == "MatMul" and attn and prec == "f32")
    assert int8_matmuls == 2 * branches and float_matmuls <= 2 * branches, ov_ops
    # every FakeQuantize folds into the int8 op before it (the image's may stay on its own)
    standalone = sum(n for (kind, _, _), n in ov_ops.items() if kind == "FakeQuantize")
    assert standalone <= 1, ov_ops
    # the ONNX Runtime layout on OpenVINO: its attention matmuls and points stay float ops
    assert not any(kind == "MatMul" and attn and prec in ("u8", "i8") for kind, prec, attn in ort_ops), ort_ops
    assert sum(n for (kind, _, _), n in ort_ops.items() if kind == "FakeQuantize") > standalone + 2
    # a dynamic-batch file runs as fused on vitedge's OpenVINO runtime: it compiles per batch size
    from vitedge.deploy.runtimes import OpenVinoRuntime

    dynamic = vitedge.export(qmodels["openvino"], tmp_path / "dynamic.onnx", precision="int8")
    runtime = OpenVinoRuntime(dynamic, threads=1, precision="int8")
    x = torch.randn(3, 3, 64, 64).numpy()
    assert runtime(x).shape == (3, 3) and set(runtime._compiled) == {1, 3}
    for compiled in (runtime.compiled, runtime._compiled[3][0]):
        assert _int8_attention_matmuls(_runtime_ops(compiled)) == 2 * branches


def test_latency_plan_keeps_in_float_the_groups_that_run_faster(monkeypatch, tmp_path):
    from vitedge.bench import latency_plan as lp

    torch.manual_seed(0)
    m0 = input_dependent(vitedge.create_model("efficientvit_m0", num_classes=3)).eval()
    q = vitedge.quantize(m0, _calib(224, 1), target="openvino", config=QuantConfig(auto_float=False))
    groups = lp.group_points(q)
    assert set(groups) == {"attention", "depthwise"}
    assert all(k.startswith("attn.") and k != "attn.out" for k in (dict(quantizers(q))[n].kind
                                                                  for n in groups["attention"]))
    timed = {}

    def fake_paired(runtime, sources, **kw):  # attention in float runs at 0.8×, depthwise at 1.0×
        timed["sources"] = [Path(p).stem for p, _ in sources]
        speed = {"plan": 1.0, "attention": 0.8, "depthwise": 1.0, "attention+depthwise": 0.81}
        return {p: [speed[Path(p).stem]] * 3 for p, _ in sources}

    monkeypatch.setattr(lp, "paired_latency", fake_paired)
    ratios = lp.latency_plan(q, resolution=224)
    assert timed["sources"] == ["plan", "attention", "depthwise", "attention+depthwise"]
    assert ratios == {"attention": 0.8, "depthwise": 1.0, "attention+depthwise": 0.81}
    floated = {n for n, p in quantizers(q) if p.in_float}
    assert floated == set(groups["attention"])
    plan = q.precision_plan
    assert plan.latency == ratios and set(plan.float_points) == floated
    assert any("attention kept in float for speed: 0.80×" in r for r in plan.reasons)
    assert any("depthwise 1.00×" in r and "attention+depthwise 0.81×" in r for r in plan.reasons)
    # two groups that each save a little save enough together: both are kept in float
    q2 = vitedge.quantize(m0, _calib(224, 1), target="openvino", config=QuantConfig(auto_float=False))
    slight = {"plan": 1.0, "attention": 0.98, "depthwise": 0.98, "attention+depthwise": 0.95}
    monkeypatch.setattr(lp, "paired_latency", lambda runtime, sources, **kw: {
        p: [slight[Path(p).stem]] * 3 for p, _ in sources})
    lp.latency_plan(q2, resolution=224)
    assert {n for n, p in quantizers(q2) if p.in_float} == set(groups["attention"]) | set(groups["depthwise"])
    assert any("attention and depthwise kept in float for speed: 0.95×" in r for r in q2.precision_plan.reasons)
    back = load_quantized(save_quantized(q, tmp_path / "q.safetensors"))
    assert back.precision_plan.latency == ratios and {n for n, p in quantizers(back) if p.in_float} == floated
    with pytest.raises(vitedge.VitedgeError, match="onnxruntime or openvino, not 'tensorrt'"):
        lp.latency_plan(q, resolution=224, runtime="tensorrt")


def test_latency_plan_measures_on_the_runtime():
    pytest.importorskip("openvino")
    from vitedge.bench.latency_plan import latency_plan

    torch.manual_seed(0)
    b0 = input_dependent(vitedge.create_model("efficientvit_b0", num_classes=3, img_size=32)).eval()
    q = vitedge.quantize(b0, _calib(32), target="openvino", config=QuantConfig(auto_float=False))
    ratios = latency_plan(q, resolution=32, threads=1, rounds=3)
    assert set(ratios) == {"attention", "depthwise", "attention+depthwise"}
    assert all(0.2 < r < 5 for r in ratios.values())
    assert q.precision_plan.latency == ratios


def test_float_glue_is_f32_unless_bf16_was_checked_and_the_runtime_honours_it(tmp_path):
    ov = pytest.importorskip("openvino")
    from vitedge.deploy.runtimes import OpenVinoRuntime, int8_float_glue

    with pytest.raises(vitedge.VitedgeError, match="float glue type"):
        QuantConfig(float_glue="fp16")
    torch.manual_seed(0)
    b0 = input_dependent(vitedge.create_model("efficientvit_b0", num_classes=3, img_size=32)).eval()
    q = vitedge.quantize(b0, _calib(32), target="openvino", config=QuantConfig(auto_float=False))
    unchecked = vitedge.export(q, tmp_path / "unchecked.onnx", precision="int8")
    fp32 = vitedge.export(b0, tmp_path / "fp32.onnx")
    q.quant_config = QuantConfig.for_target("openvino", auto_float=False, float_glue="bf16")
    back = load_quantized(save_quantized(q, tmp_path / "q.safetensors"))
    assert back.quant_config.float_glue == "bf16"  # the checkpoint keeps it
    checked = vitedge.export(back, tmp_path / "checked.onnx", precision="int8")
    # a vitedge INT8 file runs its glue as the simulation computes it (f32) unless bf16 was checked;
    # any other file (NNCF's, an FP32 file) gets OpenVINO's default
    assert [int8_float_glue(p) for p in (unchecked, checked, fp32)] == ["f32", "bf16", "bf16"]
    bf16_here = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    hints = [OpenVinoRuntime(p, threads=1, precision="int8").compiled.get_property("INFERENCE_PRECISION_HINT")
             for p in (unchecked, checked)]
    assert hints == [ov.Type.f32, ov.Type.bf16 if bf16_here else ov.Type.f32]


def test_float_glue_check_keeps_f32_when_bf16_changes_predictions(monkeypatch):
    from vitedge.bench import float_glue as fg

    torch.manual_seed(0)
    b0 = input_dependent(vitedge.create_model("efficientvit_b0", num_classes=3, img_size=32)).eval()
    images = _calib(32)

    class FakeRuntime:  # bf16 glue: as f32, or the first image of each batch flipped, or every logit halved
        def __init__(self, path, threads, precision, float_glue, mode):
            self.mode = mode if float_glue == "bf16" else "same"
            assert precision == "int8" and Path(path).is_file()

        def __call__(self, x):
            logits = torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 3).float().numpy()
            if self.mode == "flip":
                logits[0] = logits[0][::-1]
            return logits * 0.5 if self.mode == "soften" else logits

    monkeypatch.setattr(fg, "native_bf16", lambda: True)
    decided = {}
    for mode in ("flip", "same", "soften"):
        q = vitedge.quantize(b0, images, target="openvino", config=QuantConfig(auto_float=False))
        monkeypatch.setattr(fg, "OpenVinoRuntime", lambda *a, mode=mode, **k: FakeRuntime(*a, **k, mode=mode))
        result = fg.check_float_glue(q, images, threads=1)
        decided[mode] = (result["float_glue"], round(result["agreement"], 1), q.quant_config.float_glue)
        assert any(r.startswith(f"float glue on openvino: {result['float_glue']}") for r in q.precision_plan.reasons)
    # a changed prediction, or logits that move (same argmax, KL 0.031 > MAX_KL) keep the glue in f32
    assert decided == {"flip": ("f32", 75.0, "f32"), "same": ("bf16", 100.0, "bf16"),
                       "soften": ("f32", 100.0, "f32")}
    # nothing to decide for another target or on a CPU without native bf16
    ort = vitedge.quantize(b0, images, target="onnxruntime", config=QuantConfig(auto_float=False))
    assert fg.check_float_glue(ort, images) is None and ort.quant_config.float_glue == "f32"
    monkeypatch.setattr(fg, "native_bf16", lambda: False)
    assert fg.check_float_glue(q, images) is None
