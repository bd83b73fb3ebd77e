"""Latency as the precision plan's second measurement: which groups of points run faster in float
on the runtime a model is quantized for.

INT8 is not always faster. On a CPU without VNNI, M0's tiny attention matmuls (49 tokens × 16
channels) run slower as int8 GEMMs with their requantization than as f32 ones; on AVX-512, oneDNN's
int8 depthwise kernels trail its bf16 ones. A rule cannot know the machine; a measurement can. For
each group still in INT8 (:data:`GROUPS`: the attention operands, the depthwise convolutions), the
model is exported with that group in float and timed on the runtime beside the plan as it stands,
all files in one process in alternating blocks (:mod:`vitedge.bench.paired`). A group whose float
version is faster by more than ``min_gain`` stays in float. Keeping a point in float never costs
accuracy, so the accuracy half of the plan (:func:`~vitedge.quantization.auto_plan`) still holds.

Example::

    qmodel = vitedge.quantize(model, calib, target="openvino")
    ratios = latency_plan(qmodel, resolution=224)   # e.g. {"attention": 0.88, "depthwise": 1.01}
    print(qmodel.precision_plan.summary())
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import tempfile
from pathlib import Path

import torch.nn as nn

from vitedge.bench.paired import paired_latency, paired_ratio
from vitedge.deploy import export
from vitedge.errors import VitedgeError
from vitedge.quantization import keep_in_float, quantizers
from vitedge.quantization.plan import fixed_plan
from vitedge.quantization.qmodules import QuantConv2d

__all__ = ["GROUPS", "group_points", "latency_plan"]

GROUPS = ("attention", "depthwise")
MIN_GAIN = 0.03  # below this, a difference is within what a busy machine's paired blocks resolve


def group_points(qmodel: nn.Module) -> dict[str, list[str]]:
    """Each group's points that are in INT8 now (path of each quantizer, shared ones once).

    ``attention``: every attention operand (not ``attn.out``, the projection conv's input, which
    an int8 convolution reads like any other); ``depthwise``: input and weight of every depthwise
    convolution."""
    in_int8 = {id(q): name for name, q in quantizers(qmodel) if not q.in_float}
    groups: dict[str, list[str]] = {"attention": [], "depthwise": []}
    for name, q in quantizers(qmodel):
        if id(q) in in_int8 and q.kind.startswith("attn.") and q.kind != "attn.out":
            groups["attention"].append(name)
    for name, module in qmodel.named_modules():
        if isinstance(module, QuantConv2d) and module.groups > 1 and module.groups == module.in_channels:
            for q in (module.input_quant, module.weight_quant):
                if id(q) in in_int8 and in_int8[id(q)] not in groups["depthwise"]:
                    groups["depthwise"].append(in_int8[id(q)])
    return {group: points for group, points in groups.items() if points}


def latency_plan(qmodel: nn.Module, *, resolution: int, runtime: str | None = None, threads: int = 2,
                 rounds: int = 15, min_gain: float = MIN_GAIN) -> dict[str, float]:
    """Time ``qmodel`` on ``runtime`` (default: its quantization target) with each combination
    of the groups of :func:`group_points` in float, and keep in float, in ``qmodel`` and its
    precision plan, the fastest combination if it beats the plan as it stands by more than
    ``min_gain``. Combinations, not groups one by one: two groups that each save 3 % save 6 %
    together, and a group's saving can depend on its neighbours' precision (an int8 depthwise
    conv after a float one needs its own quantize step). Returns each combination's latency
    (``"attention+depthwise"``) relative to the plan as it stood (paired medians, batch 1)."""
    runtime = runtime or qmodel.quant_config.target
    if runtime not in ("onnxruntime", "openvino"):
        raise VitedgeError(f"a latency plan is measured on onnxruntime or openvino, not {runtime!r}; quantize "
                           "for one of them (target=...)")

    groups = group_points(qmodel)
    if not groups:
        return {}
    combos = {"+".join(combo): combo for size in range(1, len(groups) + 1)
              for combo in itertools.combinations(groups, size)}
    with tempfile.TemporaryDirectory(prefix="vitedge-latency-plan-") as tmp:
        files = {"plan": export(qmodel, Path(tmp) / "plan.onnx", "int8", resolution=resolution,
                                dynamic_batch=False)}
        for label, combo in combos.items():
            variant = copy.deepcopy(qmodel)
            keep_in_float(variant, [point for group in combo for point in groups[group]])
            files[label] = export(variant, Path(tmp) / f"{label}.onnx", "int8", resolution=resolution,
                                  dynamic_batch=False)
        blocks = paired_latency(runtime, [(str(f), "int8") for f in files.values()], resolution=resolution,
                                threads=threads, rounds=rounds)
    ratios = {label: paired_ratio(blocks, str(files[label]), str(files["plan"])) for label in combos}
    plan = getattr(qmodel, "precision_plan", None) or fixed_plan(qmodel)
    kinds = {name: q.kind for name, q in quantizers(qmodel)}
    best = min(ratios, key=ratios.__getitem__)
    chosen = combos[best] if ratios[best] < 1.0 - min_gain else ()
    reasons = list(plan.reasons)
    point_kinds = dict(plan.point_kinds)
    for group in chosen:
        keep_in_float(qmodel, groups[group])
        point_kinds.update({name: f"{group} (latency)" if kinds[name] != "weight" else f"{group} weight (latency)"
                            for name in groups[group]})
    if chosen:
        reasons.append(f"{' and '.join(chosen)} kept in float for speed: {ratios[best]:.2f}× the all-INT8 "
                       f"latency on {runtime}")
    rejected = [f"{label} {ratio:.2f}×" for label, ratio in ratios.items() if label != best or not chosen]
    if rejected:
        reasons.append(f"timed in float on {runtime}, not chosen: " + ", ".join(rejected))
    qmodel.precision_plan = dataclasses.replace(plan, point_kinds=point_kinds, reasons=tuple(reasons),
                                                latency=dict(ratios))
    return ratios
