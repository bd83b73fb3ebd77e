"""Measured time per operator kind on ONNX Runtime, from its own per-node profiler.

Runs in a process of its own (torch's OpenMP threads slow ORT in the same process, see
:mod:`vitedge.bench.latency_worker`) through :mod:`vitedge.hardware.profile_worker`:

    python -m vitedge.hardware.profile_worker m.onnx --runtime onnxruntime --threads 2 --resolution 224

ORT's trace has one ``model_run`` event per inference and one ``*_kernel_time`` event per node
executed; only the timed runs (after the warm-up) are kept. The profiler is not free: each
kernel event carries ≈ 3 µs of its own bookkeeping (memory-arena and thread-pool statistics),
which is most of a small node's time (M0 has 513 nodes in ≈ 3 ms). That overhead is measured on
the spot — a chain of 200 ``Relu`` nodes on an 8-element tensor, profiled and un-profiled, at
the same thread count — and taken off every node before summing. Each node gets the same kinds as
:mod:`vitedge.hardware.operators`, a convolution by its weight's geometry, so measured time and
the roofline floor of our operator list can be compared kind by kind. Fused nodes count for
their main op: ``FusedConv`` (conv + activation) is a conv, ``FusedMatMul`` a matmul.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from vitedge.deploy.runtimes import OnnxRuntime
from vitedge.hardware.operators import classify_conv

_CONV = {"Conv", "FusedConv", "NhwcConv", "QLinearConv", "ConvInteger", "NhwcFusedConv"}
ORT_KINDS: dict[str, str] = {
    **{
        op: "matmul"
        for op in (
            "MatMul",
            "Gemm",
            "FusedMatMul",
            "FusedGemm",
            "MatMulInteger",
            "QLinearMatMul",
            "MatMulIntegerToFloat",
            "DynamicQuantizeMatMul",
        )
    },
    **{
        op: "elementwise"
        for op in (
            "Add",
            "Sub",
            "Mul",
            "Div",
            "Relu",
            "HardSigmoid",
            "HardSwish",
            "Sigmoid",
            "Clip",
            "Pow",
            "Sqrt",
            "Erf",
            "Gelu",
            "FastGelu",
            "BiasGelu",
            "Max",
            "Min",
            "Where",
            "Equal",
            "Less",
            "Greater",
            "Neg",
            "Exp",
            "Log",
            "Abs",
            "Round",
            "Floor",
            "Ceil",
            "Reciprocal",
            "Tanh",
            "Cast",
            "QuantizeLinear",
            "DequantizeLinear",
            "QLinearAdd",
            "QLinearMul",
            "QLinearSigmoid",
            "QLinearLeakyRelu",
            "LeakyRelu",
            "Sum",
            "BiasAdd",
        )
    },
    **{
        op: "norm"
        for op in (
            "LayerNormalization",
            "SimplifiedLayerNormalization",
            "SkipLayerNormalization",
            "BatchNormalization",
            "Softmax",
            "LogSoftmax",
            "InstanceNormalization",
            "GroupNorm",
            "GroupNormalization",
        )
    },
    **{
        op: "reshape"
        for op in (
            "Reshape",
            "Transpose",
            "Concat",
            "Split",
            "Slice",
            "Gather",
            "GatherElements",
            "Flatten",
            "Squeeze",
            "Unsqueeze",
            "Pad",
            "Identity",
            "Expand",
            "Shape",
            "ReorderInput",
            "ReorderOutput",
            "Tile",
            "DepthToSpace",
            "SpaceToDepth",
            "QLinearConcat",
        )
    },
    **{
        op: "pool"
        for op in (
            "GlobalAveragePool",
            "AveragePool",
            "MaxPool",
            "ReduceMean",
            "ReduceSum",
            "GlobalMaxPool",
            "ReduceMax",
            "ReduceMin",
            "QLinearGlobalAveragePool",
            "QLinearAveragePool",
        )
    },
    **{op: "resize" for op in ("Resize", "Upsample", "QLinearResize")},
}


def node_kind(op_name: str, input_shapes: list[list[int]]) -> str:
    """The operator kind of one ORT node (``other`` for op types we have not classified)."""
    if op_name in _CONV:
        x = input_shapes[0] if input_shapes else []
        w_index = 3 if op_name == "QLinearConv" else 1  # QLinearConv: x, x_scale, x_zp, w, ...
        w = input_shapes[w_index] if len(input_shapes) > w_index else []
        if len(x) >= 2 and len(w) >= 2 and w[1]:
            return classify_conv(int(x[1]), w, groups=max(1, int(x[1]) // int(w[1])))
        return "conv"
    return ORT_KINDS.get(op_name, "other")


def _shapes(arg: list[dict[str, list[int]]] | None) -> list[list[int]]:
    return [next(iter(d.values())) if d else [] for d in (arg or [])]


def parse_trace(events: list[dict[str, Any]], skip_runs: int = 0, overhead_us: float = 0.0) -> dict[str, Any]:
    """Per-kind and per-op-type time from an ORT trace over the runs after ``skip_runs``, each
    node's duration less ``overhead_us`` (the profiler's own cost per node, at least 0).

    Returns ``run_ms`` (median end-to-end time of a profiled run), ``node_ms_raw`` (uncorrected
    node time), ``per_run_ms`` (corrected node time of each run) and what :func:`summarise_runs`
    returns for the corrected times.
    """
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )[skip_runs:]
    if not runs:
        raise ValueError("the ORT trace holds no timed model_run event")
    starts = [r["ts"] for r in runs]
    per_run: list[list[tuple[str, str, float, float]]] = [[] for _ in runs]  # (kind, op, dur, raw)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        i = _run_of(e["ts"], runs, starts)
        if i is None:
            continue
        args = e.get("args", {})
        op = args.get("op_name", "?")
        kind = node_kind(op, _shapes(args.get("input_type_shape")))
        per_run[i].append((kind, op, max(0.0, e["dur"] - overhead_us), e["dur"]))
    summary = summarise_runs([[(kind, op, dur / 1e3) for kind, op, dur, _ in run] for run in per_run])
    raw = summarise_runs([[(kind, op, raw / 1e3) for kind, op, _, raw in run] for run in per_run])
    return {
        "runs": len(runs),
        "run_ms": statistics.median(r["dur"] for r in runs) / 1e3,
        **summary,
        "node_ms_raw": raw["node_ms"],
        "overhead_us": overhead_us,
        "per_run_ms": [sum(d for _, _, d, _ in run) / 1e3 for run in per_run],
    }


def summarise_runs(per_run: list[list[tuple[str, str, float]]]) -> dict[str, Any]:
    """Per-kind and per-op-type ms of one inference from per-run lists of ``(kind, op, ms)``.

    Runs are averaged over their middle half (by total node time): timings here jump by tens of
    percent, a median per kind would not add up, and a plain mean would follow the outliers.
    Returns ``node_ms``, ``kinds`` and ``op_types`` (both summing to ``node_ms``) and ``nodes``
    (node count per kind in one run).
    """
    order = sorted(range(len(per_run)), key=lambda i: sum(ms for *_, ms in per_run[i]))
    quarter = len(per_run) // 4
    middle = order[quarter : len(per_run) - quarter] or order
    kinds: dict[str, float] = defaultdict(float)
    op_types: dict[str, float] = defaultdict(float)
    for i in middle:
        for kind, op, ms in per_run[i]:
            kinds[kind] += ms / len(middle)
            op_types[op] += ms / len(middle)
    counts: dict[str, int] = defaultdict(int)
    for kind, _, _ in per_run[0] if per_run else ():
        counts[kind] += 1
    return {
        "node_ms": sum(kinds.values()),
        "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "op_types": dict(sorted(op_types.items(), key=lambda kv: -kv[1])),
        "nodes": dict(counts),
    }


def _run_of(ts: float, runs: list[dict[str, Any]], starts: list[float]) -> int | None:
    import bisect

    i = bisect.bisect_right(starts, ts) - 1
    if i >= 0 and ts <= runs[i]["ts"] + runs[i]["dur"]:
        return i
    return None


def profile_onnx(
    path: str | os.PathLike,
    *,
    resolution: int,
    batch: int = 1,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 10,
) -> dict[str, Any]:
    """Profile ``path`` on ORT's CPU provider in this process; see :func:`parse_trace`.

    Four sessions take turns run by run, so every figure sees the same machine state (timings
    here drift by tens of percent within a minute): the model without the profiler (its median
    is ``latency_ms``, what a user waits for), the model under the profiler, and the no-op
    calibration chain both ways (the profiler's cost per node, ``overhead_us``). Taking turns
    needs idle thread pools to sleep rather than spin (``allow_spinning=0`` for all four).
    """
    import numpy as np


    x = np.random.default_rng(0).standard_normal((batch, 3, resolution, resolution), dtype=np.float32)
    chain_x = np.zeros((1, 8), np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        chain = _relu_chain(Path(tmp) / "chain.onnx")
        plain = OnnxRuntime(path, threads=threads, spinning=False)
        profiled = OnnxRuntime(path, threads=threads, spinning=False, profile_prefix=Path(tmp) / "model")
        chain_plain = OnnxRuntime(chain, threads=threads, spinning=False)
        chain_profiled = OnnxRuntime(
            chain, threads=threads, spinning=False, profile_prefix=Path(tmp) / "chain"
        )
        model_s, chain_s = [], []
        for i in range(warmup + runs):
            model_s.append(_timed(plain, x))
            profiled(x)
            chain_s.append(_timed(chain_plain, chain_x))
            chain_profiled(chain_x)
        chain_trace = json.loads(chain_profiled.end_profiling().read_text())
        model_trace = json.loads(profiled.end_profiling().read_text())
    chain_profiled_us = parse_trace(chain_trace, skip_runs=warmup)["node_ms"] * 1e3
    overhead_us = max(0.0, (chain_profiled_us - statistics.median(chain_s[warmup:]) * 1e6) / CHAIN_LENGTH)
    result = parse_trace(model_trace, skip_runs=warmup, overhead_us=overhead_us)
    result.update(
        threads=threads,
        batch=batch,
        resolution=resolution,
        latency_ms=statistics.median(model_s[warmup:]) * 1e3,
        # each profiled run against the un-profiled run just before it: robust to drift
        accounted=statistics.median(
            t / (p * 1e3) for t, p in zip(result.pop("per_run_ms"), model_s[warmup:])
        ),
    )
    return result


CHAIN_LENGTH = 200


def _timed(runtime: Any, x: Any) -> float:
    import time

    start = time.perf_counter()
    runtime(x)
    return time.perf_counter() - start


def _relu_chain(path: Path) -> Path:
    """``CHAIN_LENGTH`` Relu nodes on an 8-element tensor: a graph of nodes with nothing to compute."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(CHAIN_LENGTH)]
    graph = helper.make_graph(
        nodes,
        "relu_chain",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info(f"t{CHAIN_LENGTH}", TensorProto.FLOAT, [1, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path
