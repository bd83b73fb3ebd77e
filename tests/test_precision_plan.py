"""Precision plans: the measured choice of points kept in float, explicit selectors, and that
a point in float stays in float through calibration, QAT, save/load and export."""

from __future__ import annotations

import onnx
import pytest
import torch
from parity import distinct_images, input_dependent, spread_predictions

import vitedge
from vitedge.errors import VitedgeError
from vitedge.quantization import (
    QuantConfig,
    calibrate,
    load_quantized,
    prepare_qat,
    quantizers,
    save_quantized,
)
from vitedge.quantization.plan import (
    AGREED_KL,
    MIN_KL,
    PrecisionPlan,
    Score,
    auto_plan,
    keep_in_float,
    replan,
    select_points,
)
from vitedge.quantization.points import aliases

RES = 64


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    model = input_dependent(vitedge.create_model("efficientvit_b0", num_classes=10, img_size=RES), resolution=RES)
    images = distinct_images(96, RES, seed=1)
    spread_predictions(model, images)
    return model.eval(), [images[:48], images[48:]]


def _quantize(model, images, **cfg):
    """16-bit min-max points: a random network's near-tied logits flip under 8-bit noise (and
    under the log2 divisor), so only a fine grid leaves the float model's predictions alone and
    lets a broken point stand out."""
    cfg = {"method": "minmax", "w_bits": 16, "a_bits": 16, "conv_outputs": True, **cfg}
    return vitedge.quantize(model, images[0], config=QuantConfig(**cfg), holdout=images[1])


def _break(qmodel, names, factor=2.0 ** 12):
    """Points on a grid too coarse for their data (16 bits → 4): a stand-in for LiteMLA's
    numerator on the flower photos, where one per-tensor 8-bit scale cannot hold the range."""
    points = dict(quantizers(qmodel))
    for name in names:
        points[name].scale.mul_(factor)


def test_plan_keeps_exactly_the_broken_points_in_float(model_and_images):
    model, images = model_and_images
    qmodel = _quantize(model, images, auto_float=False)
    nums = [n for n, q in quantizers(qmodel) if q.kind == "attn.num"]
    broken = nums[:2]
    _break(qmodel, broken)
    plan = auto_plan(qmodel, model, [images[1]])
    assert plan.int8.agreement < 90, plan.int8  # the breakage is real
    assert set(plan.float_points) == set(broken), plan.reasons
    assert plan.planned.kl < 0.2 * plan.int8.kl and plan.planned.agreement > plan.int8.agreement
    assert "attn.num (2 points)" in plan.summary()
    assert plan.kinds["attn.num"].kl < min(s.kl for k, s in plan.kinds.items() if k != "attn.num")
    points = dict(quantizers(qmodel))
    assert all(points[n].in_float and not points[n].fake_quant for n in broken)
    assert all(points[n].fake_quant for n in nums[2:])


def test_plan_leaves_a_model_that_takes_int8_alone(model_and_images):
    model, images = model_and_images
    qmodel = _quantize(model, images, auto_float=False)
    plan = auto_plan(qmodel, model, [images[1]], target_agreement=0.0)
    assert plan.float_points == () and plan.reasons == ()
    assert all(q.fake_quant for _, q in quantizers(qmodel))
    # with the target out of reach, logits that barely move are still left alone
    plan = auto_plan(qmodel, model, [images[1]], target_agreement=101.0)
    assert plan.int8.kl < MIN_KL and plan.float_points == () and plan.reasons == ()
    # a broken point no kind can fix by the required share stays INT8
    _break(qmodel, [n for n, q in quantizers(qmodel) if q.kind == "attn.num"][:1])
    plan = auto_plan(qmodel, model, [images[1]], min_gain=1.01)
    assert plan.int8.kl > MIN_KL and plan.float_points == ()
    assert "no kind removes 101% of the remaining divergence (best: attn.num" in plan.reasons[-1]


def test_default_quantize_scores_a_plan_on_the_holdout(model_and_images):
    model, images = model_and_images
    qmodel = _quantize(model, images)
    plan = qmodel.precision_plan
    assert plan.predictions == images[1].shape[0]
    assert plan.int8 is not None and 0.0 <= plan.int8.agreement <= 100.0


def test_selectors_name_points_kinds_and_layers(model_and_images):
    model, images = model_and_images
    qmodel = _quantize(model, images, auto_float=False)
    kinds = {n: q.kind for n, q in quantizers(qmodel)}
    nums = [n for n, k in kinds.items() if k == "attn.num"]
    assert select_points(qmodel, ["attn.num"]) == nums
    layer = nums[0].rsplit(".attn_quant", 1)[0]
    under = select_points(qmodel, [layer])
    paths = {n: aliases(qmodel)[id(q)] for n, q in quantizers(qmodel)}
    # a point shared with the shortcut outside the layer counts: one of its paths is inside
    assert nums[0] in under and len(under) > 7
    assert all(any(p.startswith(layer + ".") for p in paths[n]) for n in under)
    assert [n for n in paths if any(p.startswith(layer + ".") for p in paths[n])] == under
    assert select_points(qmodel, [nums[1], "attn.num"]) == [nums[1]] + [n for n in nums if n != nums[1]]
    with pytest.raises(VitedgeError, match=r"'attn.nmu'.*no quantization point, kind or layer") as err:
        select_points(qmodel, ["attn.nmu"])
    assert "\n" not in str(err.value)
    with pytest.raises(VitedgeError, match="keep_float"):
        QuantConfig(keep_float="attn.num")


def test_float_points_survive_calibration_qat_and_state_switches(model_and_images):
    model, images = model_and_images
    qmodel = _quantize(model, images, auto_float=False, keep_float=("attn.num",))
    nums = select_points(qmodel, ["attn.num"])
    assert qmodel.precision_plan.float_points == tuple(nums)
    points = dict(quantizers(qmodel))
    calibrate(qmodel, images[0])
    vitedge.quantization.set_quant_state(qmodel, fake_quant=True)
    assert not any(points[n].fake_quant for n in nums)
    prepare_qat(qmodel)
    assert not any(points[n].fake_quant for n in nums)
    assert sum(q.fake_quant for q in points.values()) == len(points) - len(nums)


def test_plan_round_trips_and_exports_without_its_float_points(model_and_images, tmp_path):
    model, images = model_and_images
    qmodel = _quantize(model, images, auto_float=False)
    _break(qmodel, [n for n, q in quantizers(qmodel) if q.kind == "attn.num"][:1])
    plan = auto_plan(qmodel, model, [images[1]])
    assert len(plan.float_points) == 1
    path = save_quantized(qmodel, tmp_path / "q.safetensors")
    again = load_quantized(path)
    assert again.precision_plan.float_points == plan.float_points
    assert again.precision_plan.summary() == plan.summary()
    assert PrecisionPlan.from_dict(plan.to_dict()) == plan
    x = images[1][:4]
    with torch.no_grad():
        assert torch.equal(again(x), qmodel(x))
    # the export (8-bit: ONNX has no 16-bit QDQ): one QuantizeLinear fewer for a point in float
    one = [n for n, q in quantizers(again) if q.kind == "attn.num"][0]
    counts = []
    for keep, name in (((), "full"), ((one,), "planned")):
        q = _quantize(model, images, auto_float=False, w_bits=8, a_bits=8, keep_float=keep)
        vitedge.export(q, tmp_path / f"{name}.onnx", precision="int8")
        graph = onnx.load(str(tmp_path / f"{name}.onnx")).graph
        counts.append(sum(n.op_type == "QuantizeLinear" for n in graph.node))
    assert counts[1] == counts[0] - 1, counts


def test_keep_in_float_is_idempotent(model_and_images):
    model, images = model_and_images
    qmodel = _quantize(model, images, auto_float=False)
    names = select_points(qmodel, ["attn.kv"])
    keep_in_float(qmodel, names)
    keep_in_float(qmodel, names)
    assert sum(q.in_float for _, q in quantizers(qmodel)) == len(names)


def test_a_float_denominator_takes_its_key_sum_to_float(model_and_images):
    """A quantized ``Kᵀ1`` that rounds to 0 under a float denominator divides by eps alone (flowers17
    B0 with every other point in float: NaN logits); floating a denominator floats its ``Kᵀ1``."""
    model, images = model_and_images
    qmodel = _quantize(model, images, auto_float=False, w_bits=8, a_bits=8)
    points = dict(quantizers(qmodel))
    ksums = [n for n, q in points.items() if q.kind == "attn.ksum"]
    _break(qmodel, ksums, factor=2.0 ** 20)  # every Kᵀ1 rounds to 0
    for q in points.values():  # everything but Kᵀ1 in float, bypassing the rule
        if q.kind != "attn.ksum":
            q.in_float, q.fake_quant = True, False
    x = images[1][:8]
    with torch.no_grad():
        assert not torch.isfinite(qmodel(x)).all()  # the hazard is real
    dens = select_points(qmodel, ["attn.den"])
    keep_in_float(qmodel, dens)
    assert all(points[n].in_float for n in ksums) and len(dens) == len(ksums)
    with torch.no_grad():
        assert torch.allclose(qmodel(x), model(x), atol=1e-4)  # every point in float now
    # the plan's trials and the checkpoint keep the same rule
    fresh = _quantize(model, images, auto_float=False, w_bits=8, a_bits=8, keep_float=("attn.den",))
    assert {q.kind for _, q in quantizers(fresh) if q.in_float} == {"attn.den", "attn.ksum"}


def test_step_sizes_are_learned_when_the_plan_falls_short_and_kept_only_if_they_help(model_and_images):
    """A plan that leaves the held-out predictions short of the agreement target with nothing
    left to float (every point's grid too coarse: the error spread over all layers, like a
    segmentation model's) escalates to learned step sizes; they stay only where the held-out
    divergence drops, and otherwise the calibrated ones come back."""
    from vitedge.quantization.api import _learn_scales_when_short
    from vitedge.quantization.plan import Score, score_against

    model, images = model_and_images
    qmodel = _quantize(model, images, a_bits=6, w_bits=6, auto_float=False)
    # scored on the calibration images themselves, where learning must help (it minimises that KL)
    broken = score_against(qmodel, model, [images[0]])
    assert broken.kl > MIN_KL and broken.agreement < 99.0  # a real shortfall to repair
    calibrated = {n: q.scale.clone() for n, q in quantizers(qmodel) if hasattr(q, "scale")}

    qmodel.precision_plan = PrecisionPlan(int8=broken, planned=broken)
    _learn_scales_when_short(qmodel, model, [images[0]], [images[0]], iters=30)
    plan = qmodel.precision_plan
    assert plan.learned_steps == 30 and plan.planned.kl < broken.kl
    assert plan.planned == score_against(qmodel, model, [images[0]])  # what the model now does
    assert "step sizes learned 30 steps" in plan.reasons[-1] and "step sizes learned 30" in plan.summary()
    assert any(not torch.equal(q.scale, calibrated[n]) for n, q in quantizers(qmodel) if n in calibrated)

    # claimed shortfall smaller than what learning reaches: the calibrated step sizes come back
    again = _quantize(model, images, a_bits=6, w_bits=6, auto_float=False)
    again.precision_plan = PrecisionPlan(int8=broken, planned=Score(kl=2 * MIN_KL, agreement=50.0))
    _learn_scales_when_short(again, model, [images[0]], [images[1]], iters=30)
    assert again.precision_plan.learned_steps == 0 and "did not help" in again.precision_plan.reasons[-1]
    assert all(torch.equal(q.scale, calibrated[n]) for n, q in quantizers(again) if n in calibrated)

    # close enough (agreeing with a small KL, or near-ties only), or switched off: nothing is learned
    for planned, iters in ((Score(kl=AGREED_KL, agreement=99.5), 30), (Score(kl=MIN_KL, agreement=50.0), 30),
                           (broken, 0)):
        fine = _quantize(model, images, a_bits=6, w_bits=6, auto_float=False)
        fine.precision_plan = PrecisionPlan(int8=broken, planned=planned)
        _learn_scales_when_short(fine, model, [images[0]], [images[1]], iters=iters)
        assert fine.precision_plan.learned_steps == 0 and fine.precision_plan.reasons == ()


def _num_broken_with(model, images, kind, factor):
    """An INT8 model with one ``attn.num`` point destroyed and the first point of ``kind`` broken by
    ``factor``; with the point names by kind."""
    qmodel = _quantize(model, images, auto_float=False)
    by_kind = {}
    for name, q in quantizers(qmodel):
        by_kind.setdefault(q.kind, []).append(name)
    _break(qmodel, by_kind["attn.num"][:1], 2.0 ** 14)
    _break(qmodel, by_kind[kind][:1], factor)
    return qmodel, by_kind


def test_plan_finds_a_kind_that_a_worse_one_masks(model_and_images):
    """Once the worst kind is in float, the remaining kinds are scored again: a kind whose damage
    hardly shows beside it (flowers17 B0 on ONNX Runtime: ``attn.kv`` after ``attn.num``) is
    found in the next round and kept in float too. The first kind left the model short of the
    target, so all of its points stay in float; the second reached it, so only its broken point
    does."""
    model, images = model_and_images
    qmodel, by_kind = _num_broken_with(model, images, "attn.kv", 2.0 ** 9)
    masked = by_kind["attn.kv"][:1]
    plan = auto_plan(qmodel, model, [images[1]])
    # alone, floating the masked point barely moves the divergence that attn.num causes
    assert plan.kinds["attn.kv"].kl > 0.8 * plan.int8.kl, plan.kinds
    assert set(plan.float_points) == set(by_kind["attn.num"] + masked), plan.reasons
    assert plan.planned.kl < 0.05 * plan.int8.kl, plan.reasons
    assert f"attn.num: {len(by_kind['attn.num'])} of {len(by_kind['attn.num'])} points" in plan.reasons[1]
    assert f"attn.kv: 1 of {len(by_kind['attn.kv'])} points" in plan.reasons[2]


def test_replan_after_a_speed_plan_floats_what_then_matters(model_and_images):
    """Points kept in float for speed change what the rest of the model's INT8 error is made of:
    the plan runs again from there and adds the points that now matter, keeping the speed labels."""
    model, images = model_and_images
    qmodel, by_kind = _num_broken_with(model, images, "conv.output", 2.0 ** 12)
    broken_conv = by_kind["conv.output"][:1]
    attention = [n for kind, names in by_kind.items() if kind.startswith("attn.") and kind != "attn.out"
                 for n in names]
    keep_in_float(qmodel, attention)  # what a speed plan does when the attention runs faster in float
    qmodel.precision_plan = PrecisionPlan(point_kinds={n: "attention (latency)" for n in attention})
    plan = replan(qmodel, model, [images[1]])
    assert set(plan.float_points) == set(attention) | set(broken_conv), plan.reasons
    assert plan.point_kinds[broken_conv[0]] == "conv.output"
    assert all(plan.point_kinds[n] == "attention (latency)" for n in attention)
    assert plan.reasons[0].startswith("with the speed plan's points in float: held-out KL")
    assert plan.planned.kl < 0.05 * plan.int8.kl and plan.accuracy_points == tuple(broken_conv)
    # nothing left to fix: a second replan adds nothing
    again = replan(qmodel, model, [images[1]])
    assert again.float_points == plan.float_points


def test_agreement_alone_does_not_stop_the_plan_when_the_logits_moved():
    from vitedge.quantization.plan import close_enough

    assert close_enough(Score(kl=MIN_KL, agreement=0.0))                # near-ties only
    assert close_enough(Score(kl=AGREED_KL, agreement=99.0))
    assert not close_enough(Score(kl=1.1 * AGREED_KL, agreement=100.0))  # every held-out image agrees, yet
    assert not close_enough(Score(kl=1.1 * MIN_KL, agreement=98.9))
