"""CPU roofline and per-operator-kind latency breakdown on a real runtime.

The floor of an operator is the time it cannot beat on this machine:
``max(MACs / peak MAC rate, bytes moved / memory bandwidth)``, from the operator list of
:mod:`vitedge.hardware.operators` and the machine's peaks. The measured side is ONNX Runtime's
own per-node profile of the model's BN-folded FP32 export (:mod:`vitedge.hardware.ort_profile`,
in a fresh process). Both sides are summed per kind, so the table shows where the time goes
and how far each kind is from what the hardware allows — the Microsoft paper's argument that
small ViTs are bound by memory access (reshapes, element-wise ops, normalisation), not MACs.

Peaks are measured, not taken from a datasheet: the best FP32 GEMM rate (1024³, the runtime's
thread count) and the copy bandwidth over a working set the size of the model's larger tensors
(8 MiB, cache-resident on most CPUs, hence a lower floor than DRAM would give). Both can be
passed in instead.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from vitedge.deploy import get_runtime
from vitedge.deploy.export import export
from vitedge.errors import VitedgeError
from vitedge.hardware.operators import KINDS, Operator, OperatorList, extract_operators
from vitedge.hardware.profile_worker import PROFILERS
from vitedge.io import atomic_write
from vitedge.quantization.points import is_quantized
from vitedge.tables import Table
from vitedge.workers import run_json_worker


@dataclass(frozen=True)
class MachinePeaks:
    """Peak rates of the machine the runtime runs on."""

    macs_per_s: float  # FP32 multiply-accumulates per second
    bytes_per_s: float  # memory (copy) bandwidth, bytes read + written per second
    threads: int
    source: str = "given"

    def __post_init__(self) -> None:
        if not (
            self.macs_per_s > 0
            and self.bytes_per_s > 0
            and math.isfinite(self.macs_per_s)
            and math.isfinite(self.bytes_per_s)
        ):
            raise VitedgeError(
                f"machine peaks must be positive (got {self.macs_per_s} MAC/s, {self.bytes_per_s} B/s)"
            )

    def floor_s(self, op: Operator) -> float:
        """The roofline floor of one operator, in seconds."""
        moved = op.bytes_read() + op.bytes_written()
        return max(op.macs / self.macs_per_s, moved / self.bytes_per_s)


def measure_peaks(threads: int, gemm: int = 1024, copy_mib: int = 8, repeats: int = 25) -> MachinePeaks:
    """Best-of-``repeats`` FP32 GEMM rate and copy bandwidth on ``threads`` threads (best, not
    median: a floor must not be beaten, and this machine's throughput drifts)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(gemm, gemm), torch.randn(gemm, gemm)
        torch.mm(a, b)
        gemm_s = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
        src = torch.empty(copy_mib * 2**20 // 4).uniform_()
        dst = torch.empty_like(src)
        dst.copy_(src)
        copy_s = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats * 3))
    finally:
        torch.set_num_threads(previous)
    return MachinePeaks(
        macs_per_s=gemm**3 / gemm_s,
        bytes_per_s=2 * src.numel() * 4 / copy_s,
        threads=threads,
        source=f"measured: FP32 GEMM {gemm}³ and a {copy_mib} MiB copy, best of {repeats}",
    )


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ORT sessions taking turns in one process must not spin (see ort_profile.profile_onnx): its
# latency here is without spinning, a little above what `vitedge bench` reports.
_SPIN_NOTE = {"onnxruntime": ", idle pool threads sleeping instead of spinning"}


@dataclass
class KindRow:
    kind: str
    ops: int  # operators of this kind in our list
    nodes: int  # ORT nodes of this kind in one run
    macs: int
    bytes: int
    floor_ms: float
    measured_ms: float  # per inference, on the un-profiled latency's scale (see cpu_breakdown)
    profiled_ms: float = 0.0  # as the profiler saw it, less its own per-node cost

    @property
    def ratio(self) -> float:
        """measured / floor (∞ when the floor is zero, i.e. pure views measured as real copies)."""
        if self.floor_ms > 0:
            return self.measured_ms / self.floor_ms
        return math.inf if self.measured_ms > 0 else 0.0


@dataclass
class CpuBreakdown:
    """Measured time per operator kind beside its roofline floor, for one model on one runtime."""

    model: str
    resolution: int
    runtime: str
    threads: int
    peaks: MachinePeaks
    rows: list[KindRow]
    latency_ms: float  # median end-to-end latency without the profiler (what a user waits for)
    run_ms: float  # median end-to-end time of one inference under the profiler
    node_ms: float  # median per-run sum of the node kernel times, less the profiler's own cost
    node_ms_raw: float = 0.0  # the same sum as the profiler reports it
    accounted_paired: float | None = None  # median over runs of node time / adjacent un-profiled run
    overhead_us: float = 0.0  # the profiler's cost per node, measured beside the model
    op_types: dict[str, float] = field(default_factory=dict)

    @property
    def accounted(self) -> float:
        """Share of the end-to-end latency (no profiler) that the per-node times explain.

        Node times are taken less the profiler's own per-node cost (measured on a chain of
        no-op nodes), which is not part of the latency a user sees. The rest of the latency is
        the executor between nodes; more than 100 % means the kernels ran slower under the
        profiler than without it (its thread-pool statistics), and the per-kind times are then
        scaled onto the latency (:attr:`scale`). Each profiled run is compared with the un-profiled
        run (or block) measured right before it, and the median ratio taken: timings here drift
        by tens of percent within a minute, which two separate medians would not cancel."""
        if self.accounted_paired is not None:
            return self.accounted_paired
        return self.node_ms / self.latency_ms

    @property
    def attributed_ms(self) -> float:
        """Per-inference time the kinds account for, on the latency's scale."""
        return sum(r.measured_ms for r in self.rows)

    @property
    def scale(self) -> float:
        """Factor from profiled node time to the latency's scale (1 unless the profile over-counts)."""
        return _scale(self.accounted)

    @property
    def floor_ms(self) -> float:
        return sum(r.floor_ms for r in self.rows)

    def furthest_from_floor(self, n: int = 3) -> list[KindRow]:
        """The ``n`` kinds with the largest measured/floor ratio (among kinds that take time)."""
        timed = [r for r in self.rows if r.measured_ms > 0]
        return sorted(timed, key=lambda r: -r.ratio)[:n]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "resolution": self.resolution,
            "runtime": self.runtime,
            "threads": self.threads,
            "peaks": asdict(self.peaks),
            "latency_ms": self.latency_ms,
            "run_ms": self.run_ms,
            "node_ms": self.node_ms,
            "node_ms_raw": self.node_ms_raw,
            "overhead_us": self.overhead_us,
            "accounted": self.accounted,
            "scale": self.scale,
            "attributed_ms": self.attributed_ms,
            "floor_ms": self.floor_ms,
            "furthest_from_floor": [r.kind for r in self.furthest_from_floor()],
            "kinds": [{**asdict(r), "ratio": None if math.isinf(r.ratio) else r.ratio} for r in self.rows],
            "op_types": self.op_types,
        }

    def table(self) -> Table:
        """Time per operator kind beside its roofline floor (:func:`kinds_table`)."""
        return kinds_table(self.to_dict())

    def to_markdown(self) -> str:
        p = self.peaks
        lines = [
            f"## {self.model} at {self.resolution}² on {self.runtime} ({self.threads} threads, batch 1)",
            "",
            f"Latency {self.latency_ms:.3f} ms (median, no profiler{_SPIN_NOTE.get(self.runtime, '')}); "
            "the nodes' times sum to "
            f"{self.node_ms:.3f} ms; run by run they are **{100 * self.accounted:.1f} %** of it ("
            + (
                f"as profiled {self.node_ms_raw:.3f} ms, less the profiler's own "
                f"{self.overhead_us:.2f} µs per node, measured on a chain of no-op nodes; "
                if self.overhead_us > 0
                else "per-node counters; "
            )
            + f"a profiled run took {self.run_ms:.3f} ms)."
            + (
                " The profile over-counts (the profiler slows parallel kernels), so the times below are "
                f"its shares scaled by {self.scale:.3f} onto the latency."
                if self.scale < 1
                else f" The rest ({100 * (1 - self.accounted):.1f} %) is the executor between nodes."
            )
            + " Roofline floor of the whole model "
            f"{self.floor_ms:.3f} ms ({p.macs_per_s / 1e9:.1f} GMAC/s, "
            f"{p.bytes_per_s / 1e9:.1f} GB/s; {p.source}).",
            "",
            self.table().markdown(heading="").rstrip("\n"),
        ]
        far = ", ".join(
            f"**{r.kind}** ({'∞' if math.isinf(r.ratio) else f'{r.ratio:.0f}'}×)"
            for r in self.furthest_from_floor()
        )
        lines += [
            "",
            f"Furthest from their floor: {far}.",
            "",
            "The runtime fuses activations into its convolutions and matmuls (ORT FusedConv, OpenVINO "
            "post-ops): their time counts for the conv/matmul kind, while our list keeps them as "
            "element-wise ops. Views cost no bytes "
            "in our list (PyTorch moves nothing), so a reshape kind far above its floor is data "
            "movement the runtime adds (Transpose, layout reorders, Concat/Slice copies).",
        ]
        return "\n".join(lines) + "\n"


def kind_floors(ops: OperatorList, peaks: MachinePeaks) -> dict[str, tuple[int, int, int, float]]:
    """Per kind: (operators, MACs, bytes moved, floor in ms)."""
    out: dict[str, list[float]] = {}
    for op in ops:
        row = out.setdefault(op.kind, [0, 0, 0, 0.0])
        row[0] += 1
        row[1] += op.macs
        row[2] += op.bytes_read() + op.bytes_written()
        row[3] += peaks.floor_s(op) * 1e3
    return {k: (int(v[0]), int(v[1]), int(v[2]), v[3]) for k, v in out.items()}


def cpu_breakdown(
    model: nn.Module,
    *,
    resolution: int | None = None,
    threads: int = 2,
    runs: int = 50,
    warmup: int = 10,
    peaks: MachinePeaks | None = None,
    name: str | None = None,
    runtime: str = "onnxruntime",
) -> CpuBreakdown:
    """Profile ``model``'s FP32 ONNX export per node on ``runtime`` (``onnxruntime`` or
    ``openvino``) and set each operator kind beside its roofline floor. The runtime runs in a
    fresh process (batch 1, static shape)."""

    if runtime not in PROFILERS:
        raise VitedgeError(f"the CPU breakdown profiles {' or '.join(PROFILERS)}, not {runtime!r}")
    ok, why = get_runtime(runtime).available()
    if not ok:
        raise VitedgeError(f"runtime {runtime} is not available here: {why}")

    if is_quantized(model):
        raise VitedgeError(
            "the CPU breakdown profiles the FP32 export; pass the float model, not a quantized one"
        )
    if runs < 1 or warmup < 0 or threads < 1:
        raise VitedgeError(f"runs and threads must be ≥ 1 and warmup ≥ 0 (got {runs}, {threads}, {warmup})")
    ops = extract_operators(model, resolution, fold_bn=True)
    res = ops.input_shape[-1]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export(model, Path(tmp) / "model.onnx", resolution=res, dynamic_batch=False)
        measured = _profile_in_subprocess(runtime, onnx_path, res, threads, runs, warmup)
    peaks = peaks or measure_peaks(threads)
    floors = kind_floors(ops, peaks)
    # ORT's profiler slows kernels beyond its per-node cost (thread-pool statistics on every
    # parallel section: +57 % on a 200k-element parallel Relu at 2 threads). When the corrected
    # node times still exceed the real latency, they are scaled down onto it: the profile gives
    # the shares, the un-profiled run the total. Below it, the rest is executor time between nodes.
    accounted = measured.get("accounted") or (measured["node_ms"] / measured["latency_ms"])
    scale = _scale(accounted)
    rows = []
    for kind in KINDS:
        n_ops, macs, moved, floor = floors.get(kind, (0, 0, 0, 0.0))
        ms = measured["kinds"].get(kind, 0.0)
        nodes = measured["nodes"].get(kind, 0)
        if n_ops or nodes:
            rows.append(KindRow(kind, n_ops, nodes, macs, moved, floor, ms * scale, ms))
    rows.sort(key=lambda r: -r.measured_ms)
    return CpuBreakdown(
        model=name or ops.model,
        resolution=res,
        runtime=runtime,
        threads=threads,
        peaks=peaks,
        rows=rows,
        latency_ms=measured["latency_ms"],
        run_ms=measured["run_ms"],
        node_ms=measured["node_ms"],
        node_ms_raw=measured["node_ms_raw"],
        overhead_us=measured["overhead_us"],
        accounted_paired=measured.get("accounted"),
        op_types=measured["op_types"],
    )


def _scale(accounted: float) -> float:
    """Profiled node time → the latency's scale: 1 unless the profile over-counts."""
    return min(1.0, 1.0 / accounted) if accounted > 0 else 1.0


def _profile_in_subprocess(
    runtime: str, onnx_path: Path, resolution: int, threads: int, runs: int, warmup: int
) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "vitedge.hardware.profile_worker",
        str(onnx_path),
        "--runtime",
        runtime,
        "--resolution",
        str(resolution),
        "--threads",
        str(threads),
        "--runs",
        str(runs),
        "--warmup",
        str(warmup),
    ]
    return run_json_worker(cmd, threads, f"the {runtime} profile")


def plot_breakdown(breakdowns: list[CpuBreakdown], path: str | os.PathLike) -> Path:
    """Measured time per kind beside its roofline floor, one panel per model (log-scale ms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(2, len(breakdowns))
    rows_n = -(-len(breakdowns) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.2 * cols, 4.2 * rows_n), squeeze=False)
    for ax in axes.flat[len(breakdowns) :]:
        ax.set_visible(False)
    for ax, bd in zip(axes.flat, breakdowns):
        rows = list(reversed(bd.rows))
        y = range(len(rows))
        ax.barh(
            [i + 0.2 for i in y],
            [r.measured_ms for r in rows],
            height=0.4,
            color="tab:orange",
            label=f"measured ({bd.runtime})",
        )
        ax.barh(
            [i - 0.2 for i in y],
            [max(r.floor_ms, 1e-4) for r in rows],
            height=0.4,
            color="tab:blue",
            label="roofline floor",
        )
        for i, r in zip(y, rows):
            ratio = "∞" if math.isinf(r.ratio) else f"{r.ratio:.0f}×"
            ax.annotate(
                ratio,
                (max(r.measured_ms, 1e-4), i + 0.2),
                textcoords="offset points",
                xytext=(3, -3),
                fontsize=8,
            )
        ax.set_yticks(list(y), [r.kind for r in rows])
        ax.set_xscale("log")
        ax.set_xlim(
            right=4 * max([r.measured_ms for r in rows] + [r.floor_ms for r in rows] + [1e-3])
        )  # labels
        ax.set_xlabel("time per inference (ms, log scale)")
        ax.set_title(
            f"{bd.model} {bd.resolution}² on {bd.runtime}, {bd.threads} threads: nodes = "
            f"{100 * bd.accounted:.0f} % of {bd.latency_ms:.2f} ms",
            fontsize=9,
        )
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()

    def write(tmp: str) -> None:
        fig.savefig(tmp, dpi=120, format="png")

    try:
        return atomic_write(path, write)
    finally:
        plt.close(fig)


def kinds_table(breakdown: dict[str, Any]) -> Table:
    """A breakdown (``CpuBreakdown.to_dict()``, or the study's cached copy of it) as a table: time
    per operator kind on the runtime beside its roofline floor."""
    attributed = breakdown["attributed_ms"] or 1.0
    rows = [[k["kind"], k["ops"], k["nodes"], f"{k['macs'] / 1e6:.1f}", f"{k['bytes'] / 1e6:.2f}",
             f"{k['floor_ms']:.4f}", f"{k['measured_ms']:.3f}", f"{100 * k['measured_ms'] / attributed:.1f}",
             "∞" if k["ratio"] is None else f"{k['ratio']:.1f}"] for k in breakdown["kinds"]]
    return Table(f"{breakdown['model']} {breakdown['resolution']}² on {breakdown['runtime']}, "
                 f"{breakdown['threads']} threads: nodes {breakdown['node_ms']:.2f} ms = "
                 f"{100 * breakdown['accounted']:.1f} % of {breakdown['latency_ms']:.2f} ms",
                 ["kind", "ops", "runtime nodes", "MMAC", "MB moved", "floor ms", "measured ms", "share %",
                  "× floor"], rows)
