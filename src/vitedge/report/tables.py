"""The study's numbers as rows and its three tables: pruning, quantization, pruning + quantization.

Every accuracy in the tables is measured on the deployment runtime (the exported ONNX file),
except the columns marked "PyTorch" (the float model before export, the fake-quant simulation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vitedge.hardware.roofline import kinds_table
from vitedge.study.pipeline import SEARCHED, Variant
from vitedge.tables import Table

__all__ = ["Row", "Table", "deployment_table", "pareto", "pick", "recommend", "study_rows", "study_tables"]


@dataclass(frozen=True)
class Row:
    """One deployable model: a variant at one precision, measured on the runtime."""

    variant: str
    ratio: float
    precision: str
    score: float                # the task's metric (top-1 or mIoU, %) on the runtime
    score_torch: float          # ... in PyTorch: float model, or the INT8 simulation
    params: int
    macs: int
    size_mib: float
    latency_ms: float           # median, batch as configured
    p90_ms: float
    fpga_fps: float | None = None  # INT8 rows: the accelerator cycle model's estimate (W8A8)
    latency_hi_ms: float | None = None  # segmentation: median latency at deploy.seg_latency_size
    runtime: str = ""           # where it was measured
    shown: str = ""             # how tables name the variant: its ratio, or "searched"

    @property
    def dense(self) -> bool:
        return self.variant == "dense"

    @property
    def label(self) -> str:
        where = f" on {self.runtime}" if self.runtime else ""
        name = "dense" if self.dense else self.shown if self.shown.startswith(SEARCHED) else f"{self.shown} pruned"
        return f"{name} {self.precision.upper()}{where}"

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "ratio": self.ratio, "runtime": self.runtime, "precision": self.precision,
                "score": self.score,
                "score_torch": self.score_torch, "params": self.params, "macs": self.macs,
                "size_mib": self.size_mib, "latency_ms": self.latency_ms, "p90_ms": self.p90_ms,
                "fpga_fps": self.fpga_fps, "latency_hi_ms": self.latency_hi_ms}


def study_rows(variants: Sequence[Variant], runtime: str | None = None) -> list[Row]:
    """One row per deployment of every variant (runtime × precision), or of ``runtime`` only."""
    rows = []
    for v in variants:
        for name, by_precision in v.deployments.items():
            if runtime is not None and name != runtime:
                continue
            for precision, rt in by_precision.items():
                torch_score = (v.quant_metrics[name]["score_sim"] if precision == "int8" else v.metrics["score_fp32"])
                hi = rt.get("latency_hi")
                rows.append(Row(v.name, v.ratio, precision, rt["score"], torch_score, int(v.metrics["params"]),
                                int(v.metrics["macs"]), rt["size_mib"], rt["latency"]["median_ms"],
                                rt["latency"]["p90_ms"],
                                v.metrics.get("fpga_fps") if precision == "int8" else None,
                                hi["median_ms"] if hi else None, name, v.shown))
    return rows


def _ref(rows: Sequence[Row]) -> Row:
    """The baseline every row is judged against: the dense FP32 model on its fastest runtime."""
    return min((r for r in rows if r.dense and r.precision == "fp32"), key=lambda r: r.latency_ms)


def deployment_table(rows: Sequence[Row], chosen: Row, metric: str = "top-1") -> Table:
    """Every variant on every runtime × precision, the recommended one marked."""
    ref = _ref(rows)
    order = sorted(rows, key=lambda r: (r.shown.startswith(SEARCHED), r.ratio, r.runtime, r.precision))
    body = [[r.shown, r.runtime, r.precision.upper() + (" ◀" if r == chosen else ""), f"{r.score:.2f}",
             f"{r.score - ref.score:+.2f}", f"{r.latency_ms:.2f}", f"{ref.latency_ms / r.latency_ms:.2f}×",
             f"{r.size_mib:.2f}"] for r in order]
    return Table("Deployment matrix — every variant on every runtime × precision",
                 ["ratio", "runtime", "precision", f"{metric} runtime", "Δ pt", "latency ms", "speed-up",
                  "size MiB"], body,
                 f"Each {metric} is measured on the runtime itself; each INT8 file was quantized for the runtime "
                 f"that runs it. Δ and speed-up against the dense FP32 model on its fastest runtime "
                 f"({ref.runtime}, {ref.latency_ms:.2f} ms). ◀: the recommendation.")


def study_tables(rows: Sequence[Row], variants: Sequence[Variant], runtime: str,
                 accelerator: str | None = None, metric: str = "top-1",
                 hi_size: Sequence[int] | None = None) -> list[Table]:
    """The three tables; ``metric`` names the accuracy (``mIoU`` for segmentation), ``hi_size`` the
    second latency column's (height, width) when the rows have one."""
    ref = _ref(rows)
    hi = hi_size is not None and all(r.latency_hi_ms for r in rows)
    by = {(r.variant, r.precision): r for r in rows}

    def x(value: float, base: float) -> str:
        return f"{value / base:.2f}×"

    def delta(score: float) -> str:
        return f"{score - ref.score:+.2f}"

    def latencies(r: Row) -> list[str]:
        shown = [f"{r.latency_ms:.2f} ({x(r.latency_ms, ref.latency_ms)})"]
        if hi:
            shown.append(f"{r.latency_hi_ms:.1f} ({x(r.latency_hi_ms, ref.latency_hi_ms)})")
        return shown

    pruning = []
    for v in variants:
        r = by[v.name, "fp32"]
        after, bn = v.metrics.get("score_pruned"), v.metrics.get("score_bn")
        shown = "–" if after is None else f"{after:.2f}" + (f" → {bn:.2f}" if bn is not None else "")
        pruning.append([v.shown, shown, f"{r.score:.2f}",
                        delta(r.score), f"{r.params / 1e6:.3f} ({x(r.params, ref.params)})",
                        f"{r.macs / 1e6:.1f} ({x(r.macs, ref.macs)})", *latencies(r), f"{r.size_mib:.2f}"])
    dense = variants[0]
    before = dense.metrics.get("score_baseline")  # set when the dense model got the fine-tuning budget too
    reference_note = ("" if before is None else
                      f" The 0 % row is the baseline fine-tuned with the pruned models' budget ({before:.2f} → "
                      f"{dense.metrics['score_fp32']:.2f} in PyTorch); every Δ is against it.")
    quant = []
    for precision in ("fp32", "bf16", "int8"):
        if (dense.name, precision) not in by:
            continue
        r = by[dense.name, precision]
        quant.append([precision.upper(), f"{r.score_torch:.2f}", f"{r.score:.2f}", delta(r.score), *latencies(r),
                      f"{r.size_mib:.2f} ({x(r.size_mib, ref.size_mib)})"])
    qm = dense.quant_metrics[runtime]
    qnote = f"INT8 after PTQ (PyTorch simulation): {qm['score_ptq']:.2f} %"
    if qm.get("score_qat") is not None:
        qnote += f"; after QAT: {qm['score_qat']:.2f} %"
    plans = [f"{v.shown}: {v.quant_metrics[runtime]['precision_plan']}" for v in variants
             if v.quant_metrics[runtime].get("float_points")]
    if qm.get("precision_plan"):
        for_accuracy = [p for p in qm.get("float_points", []) if p not in qm.get("latency_points", [])]
        qnote += (f". Precision plan (measured on held-out training images and, for speed, on {runtime}): "
                  f"{qm['precision_plan']}" if not for_accuracy else
                  f". Some of this model's points cannot take 8 bits, so the precision plan (measured on "
                  f"held-out training images) keeps them in float: {qm['precision_plan']}")
    plan_note = (" Points kept in float by the precision plan — " + "; ".join(plans) + ".") if plans else ""
    both = []
    fpga = accelerator is not None and all(by[v.name, "int8"].fpga_fps for v in variants)
    dense_fps = by[dense.name, "int8"].fpga_fps
    for v in variants:
        r = by[v.name, "int8"]
        both.append([v.shown, f"{r.score_torch:.2f}", f"{r.score:.2f}", delta(r.score),
                     f"{r.macs / 1e6:.1f} ({x(r.macs, ref.macs)})", *latencies(r),
                     f"{r.size_mib:.2f} ({x(r.size_mib, ref.size_mib)})"]
                    + ([f"{r.fpga_fps:.0f} ({r.fpga_fps / dense_fps:.2f}×)"] if fpga else []))
    lat = [f"latency ms on {runtime} (× dense FP32)"]
    if hi:
        lat = [f"latency ms at the test frames on {runtime} (×)",
               f"latency ms at {hi_size[0]}×{hi_size[1]} (×)"]
    m = metric
    return [
        Table("Table 1 — pruning (FP32)",
              ["ratio", f"{m} pruned", f"{m} fine-tuned", "Δ pt", "params M", "MACs M", *lat, "size MiB"],
              pruning,
              f"{m} pruned: PyTorch, right after pruning → after re-estimating BatchNorm statistics "
              "(no training); fine-tuned: on the runtime." + reference_note),
        Table("Table 2 — quantization (dense model)",
              ["precision", f"{m} PyTorch", f"{m} runtime", "Δ pt", *lat, "size MiB (×)"], quant,
              qnote + "."),
        Table("Table 3 — pruning + INT8",
              ["ratio", f"{m} simulated", f"{m} runtime", "Δ pt", "MACs M", *lat, "size MiB (×)"]
              + ([f"est. FPGA FPS ({accelerator})"] if fpga else []), both,
              "Δ and × against the dense FP32 model on the same runtime." + plan_note
              + (f" FPGA FPS: the W8A8 cycle model of `vitedge hw --accelerator {accelerator}` at this "
                 "resolution (classifier head on the host; × against the dense INT8 model)." if fpga else "")),
    ]


def breakdown_table(breakdown: dict[str, Any]) -> Table:
    """The CPU breakdown (``CpuBreakdown.to_dict()``) as a report table: time per operator kind on
    the runtime beside its roofline floor."""
    peaks = breakdown["peaks"]
    table = kinds_table(breakdown)
    table.title = f"CPU breakdown — dense FP32 on {breakdown['runtime']}, {breakdown['threads']} threads"
    table.note = (
        f"The nodes' times sum to {breakdown['node_ms']:.3f} ms = {100 * breakdown['accounted']:.1f} % of "
        f"the {breakdown['latency_ms']:.3f} ms latency (median, no profiler"
        + (", idle pool threads sleeping)" if breakdown["runtime"] == "onnxruntime" else ")")
        + (f"; the profile over-counts, so the times are its shares scaled by {breakdown['scale']:.3f}"
           if breakdown["scale"] < 1 else "") + ". Floor = max(MACs / "
        f"{peaks['macs_per_s'] / 1e9:.1f} GMAC/s, bytes / {peaks['bytes_per_s'] / 1e9:.1f} GB/s) "
        f"({peaks['source']}). "
        f"Furthest from their floor: {', '.join(breakdown['furthest_from_floor'])}.")
    return table


def pareto(rows: Sequence[Row]) -> list[Row]:
    """Rows no other row beats on both latency and accuracy, fastest first."""
    front = [r for r in rows if not any(o.latency_ms <= r.latency_ms and o.score >= r.score and
                                        (o.latency_ms < r.latency_ms or o.score > r.score) for o in rows)]
    return sorted(front, key=lambda r: r.latency_ms)


def pick(rows: Sequence[Row], max_drop: float) -> Row:
    """The fastest deployment within ``max_drop`` points of the dense FP32 model (on its fastest
    runtime); that model itself when none is."""
    ref = _ref(rows)
    return min((r for r in rows if r.score >= ref.score - max_drop), key=lambda r: r.latency_ms)


def recommend(rows: Sequence[Row], max_drop: float, metric: str = "top-1",
              reference: str = "the dense FP32 model") -> str:
    """The fastest deployment (variant, runtime, precision) within ``max_drop`` points of the dense
    FP32 model, in one paragraph that says which runtime and why; ``reference`` names that model."""
    ref = _ref(rows)
    best = pick(rows, max_drop)
    fastest = min(rows, key=lambda r: r.latency_ms)
    if best is ref:
        text = (f"No compressed variant stays within {max_drop:g} pt of {reference} "
                f"({ref.score:.2f} %): keep it, or give fine-tuning a larger budget.")
    else:
        text = (f"**Pick {best.label}** (`{best.variant}`, {best.precision}): {ref.latency_ms / best.latency_ms:.2f}× "
                f"faster than {reference} ({best.latency_ms:.2f} vs {ref.latency_ms:.2f} ms), "
                f"{best.size_mib:.2f} MiB instead of {ref.size_mib:.2f}, "
                f"at {best.score - ref.score:+.2f} pt {metric} "
                f"({best.score:.2f} %) — the fastest variant within {max_drop:g} pt of it.")
    runtimes = sorted({r.runtime for r in rows if r.runtime})
    if len(runtimes) > 1:
        others = [min((r for r in rows if r.runtime == name and r.variant == best.variant
                       and r.precision == best.precision), key=lambda r: r.latency_ms, default=None)
                  for name in runtimes if name != best.runtime]
        shown = [f"{o.latency_ms:.2f} ms on {o.runtime}" for o in others if o is not None]
        text += (f" Runtime: {best.runtime}, the fastest of {', '.join(runtimes)} for this model"
                 + (f" (the same model: {', '.join(shown)})" if shown else "") + ".")
    if fastest is not best:
        text += (f" The fastest overall, {fastest.label}, runs {ref.latency_ms / fastest.latency_ms:.2f}× faster "
                 f"but loses {ref.score - fastest.score:.2f} pt.")
    front = ", ".join(r.label for r in pareto(rows))
    return text + f" Pareto front (latency vs accuracy): {front}."
