"""Measured time per operator kind on OpenVINO, from its per-node performance counters.

OpenVINO's CPU plugin keeps a ``real_time`` per executed node when compiled with
``PERF_COUNT`` (a timestamp pair per node, no per-node strings), so it perturbs the run far less
than ONNX Runtime's profiler. Each node gets the kinds of :mod:`vitedge.hardware.operators`: a
convolution by the weight shape in the compiled (runtime) model, the rest by layer type. Fused
nodes count for their main op (a convolution with its activation post-op is a conv; a
``Subgraph`` is a fused chain of element-wise ops).

The same model is also compiled without counters and timed in blocks alternating with the
counted one, so ``latency_ms`` is what a user waits for and both see the same machine state.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from vitedge.deploy.runtimes import openvino_cpu_config
from vitedge.errors import VitedgeError
from vitedge.hardware.operators import classify_conv
from vitedge.hardware.ort_profile import summarise_runs

_SKIP = {"Input", "Output", "Parameter", "Result", "Const", "Constant"}
_CONV = {"Convolution", "GroupConvolution", "BinaryConvolution", "Deconvolution"}
OV_KINDS: dict[str, str] = {
    **{t: "matmul" for t in ("MatMul", "FullyConnected", "Gemm", "ScaledDotProductAttention")},
    **{
        t: "elementwise"
        for t in (
            "Eltwise",
            "Subgraph",
            "FakeQuantize",
            "Convert",
            "Multiply",
            "Add",
            "Subtract",
            "Divide",
            "Power",
            "Relu",
            "HSwish",
            "HSigmoid",
            "Clamp",
            "Exp",
            "Math",
            "Select",
            "Maximum",
            "Minimum",
            "Sigmoid",
        )
    },
    **{t: "norm" for t in ("MVN", "Softmax", "SoftMax", "NormalizeL2", "BatchNormInference", "RMS")},
    **{
        t: "reshape"
        for t in (
            "Transpose",
            "Reorder",
            "Reshape",
            "Concatenation",
            "Concat",
            "Split",
            "VariadicSplit",
            "Gather",
            "StridedSlice",
            "Slice",
            "Pad",
            "Broadcast",
            "Squeeze",
            "Unsqueeze",
            "ShapeOf",
            "Tile",
            "DepthToSpace",
            "SpaceToDepth",
            "Roll",
        )
    },
    **{
        t: "pool" for t in ("Pooling", "AvgPool", "MaxPool", "ReduceMean", "Reduce", "ReduceSum", "ReduceMax")
    },
    **{t: "resize" for t in ("Interpolate",)},
}


def node_kind(layer_type: str, input_shapes: list[tuple[int, ...]]) -> str | None:
    """The operator kind of one compiled OpenVINO node (``None`` for inputs, outputs, constants)."""
    if layer_type in _SKIP:
        return None
    if layer_type in _CONV and len(input_shapes) >= 2 and len(input_shapes[0]) >= 2:
        x, w = input_shapes[0], input_shapes[1]
        if len(w) == len(x) + 1:  # grouped: [G, Cout/G, Cin/G, kh, kw]
            groups = int(w[0])
            return classify_conv(int(x[1]), (int(w[0]) * int(w[1]), *w[2:]), groups)
        return classify_conv(int(x[1]), w, 1)
    return OV_KINDS.get(layer_type, "other")


def _runtime_kinds(compiled: Any) -> dict[str, tuple[str, str | None]]:
    """Node name → (layer type, kind), from the compiled model's runtime graph."""
    out = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        layer_type = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
        shapes = [
            tuple(i.get_partial_shape().to_shape()) for i in op.inputs() if i.get_partial_shape().is_static
        ]
        out[op.get_friendly_name()] = (layer_type, node_kind(layer_type, shapes))
    return out


def _typed(
    info: Any, kinds_of: dict[str, tuple[str, str | None]], executed: Any
) -> list[tuple[str, str, float]]:
    """One run's executed nodes as ``(kind, layer type, ms)``, inputs/outputs/constants left out."""
    rows = []
    for p in info:
        layer_type, kind = kinds_of.get(p.node_name, ("?", "other"))
        if p.status == executed and kind is not None:
            rows.append((kind, layer_type, p.real_time.total_seconds() * 1e3))
    return rows


def profile_openvino(
    path: str | os.PathLike,
    *,
    resolution: int,
    batch: int = 1,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 10,
    precision: str = "fp32",
    block: int = 10,
) -> dict[str, Any]:
    """Per-kind time of ``path`` on OpenVINO's CPU plugin (same keys as
    :func:`vitedge.hardware.ort_profile.parse_trace`, plus ``latency_ms``)."""
    import numpy as np
    import openvino as ov



    x = np.random.default_rng(0).standard_normal((batch, 3, resolution, resolution), dtype=np.float32)
    core = ov.Core()
    base = openvino_cpu_config(core, precision, threads)
    try:
        model = core.read_model(str(path))
        plain = core.compile_model(model, "CPU", base).create_infer_request()
        counted_model = core.compile_model(model, "CPU", {**base, "PERF_COUNT": True})
    except Exception as err:  # OpenVINO raises RuntimeError subclasses of its own
        raise VitedgeError(f"openvino cannot load {path}: {str(err).splitlines()[0][:160]}") from err
    counted = counted_model.create_infer_request()
    kinds_of = _runtime_kinds(counted_model)
    executed = ov.ProfilingInfo.Status.EXECUTED
    for _ in range(warmup):
        plain.infer({0: x})
        counted.infer({0: x})
    latency, run_s, per_run, ratios = [], [], [], []
    while len(latency) < runs:
        done = len(latency)
        for request, sink in ((plain, latency), (counted, run_s)):
            time.sleep(0.05)  # the other request's threads go idle
            request.infer({0: x})
            for _ in range(min(block, runs - len(sink))):
                start = time.perf_counter()
                request.infer({0: x})
                sink.append(time.perf_counter() - start)
                if request is counted:
                    per_run.append(_typed(request.get_profiling_info(), kinds_of, executed))
        # this block's counted node time against the un-counted block just before it
        block_ms = [sum(ms for *_, ms in run) for run in per_run[done:]]
        ratios.append(statistics.median(block_ms) / (statistics.median(latency[done:]) * 1e3))
    summary = summarise_runs(per_run)
    return {
        "runs": len(per_run),
        "run_ms": statistics.median(run_s) * 1e3,
        **summary,
        "node_ms_raw": summary["node_ms"],
        "overhead_us": 0.0,
        "accounted": statistics.median(ratios),
        "latency_ms": statistics.median(latency) * 1e3,
        "threads": threads,
        "batch": batch,
        "resolution": resolution,
    }
