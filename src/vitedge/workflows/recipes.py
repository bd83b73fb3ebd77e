"""What the compression recipes show when they finish: the score table of a pruning or a
quantization run (the task's metric: top-1, or mIoU for a segmentation model), the lines under it, and the
latency refinement of a quantization plan for the runtime it targets."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import nn

from vitedge.bench.latency_plan import latency_plan
from vitedge.io import read_metadata
from vitedge.quantization import QuantConfig
from vitedge.tables import Table
from vitedge.train.tasks import task_scored_by
from vitedge.workflows.prune import PruneResult
from vitedge.workflows.quantize import QuantizeResult

__all__ = ["LATENCY_PLAN_TARGETS", "latency_refiner", "metrics_table", "prune_summary", "prune_table",
           "quantize_notes", "quantize_table"]

# Targets whose runtimes run here, so the plan can time float against INT8 on them.
LATENCY_PLAN_TARGETS = ("openvino", "onnxruntime")


def metrics_table(metrics: dict[str, Any], rows: tuple[tuple[str, str], ...]) -> Table:
    """The ``(key, label)`` rows of ``metrics`` that it holds, in %, each label after the name of
    the task's metric (``metrics["metric"]``: top-1, or mIoU for a segmentation model)."""
    name = task_scored_by(metrics.get("metric", "top1")).label
    values = {f"{name} {label}": float(metrics[key]) for key, label in rows if key in metrics}
    return Table.of_mapping("", ("metric", "%"), values)


def prune_table(result: PruneResult) -> Table:
    """Dense, pruned, BN re-estimated and fine-tuned scores (those the run measured)."""
    return metrics_table(result.metrics, (("score_dense", "dense"), ("score_pruned", "pruned"),
                                          ("score_bn_recalibrated", "BN re-estimated"),
                                          ("score_finetuned", "fine-tuned")))


def prune_summary(result: PruneResult) -> str:
    """Params and MACs before → after, and where the pruned model is."""
    m = result.metrics
    return (f"params {m['params_dense'] / 1e6:.3f}M → {m['params_pruned'] / 1e6:.3f}M, MACs "
            f"{m['macs_dense'] / 1e6:.1f}M → {m['macs_pruned'] / 1e6:.1f}M  → {result.path}")


def quantize_table(result: QuantizeResult, config: QuantConfig) -> Table:
    """Float, post-training and QAT scores (those the run measured)."""
    return metrics_table(result.metrics, (("score_fp32", "FP32"),
                                          ("score_int8", f"W{config.w_bits}A{config.a_bits} PTQ"),
                                          ("score_qat", "after QAT")))


def quantize_notes(result: QuantizeResult, config: QuantConfig) -> list[str]:
    """The precision plan, why the weights are on 7 bits where they are, and where the model is."""
    notes = [f"precision plan: {result.metrics['precision_plan']}"]
    if config.overflow_fix:
        notes.append(f"target {config.target}: this CPU has no VNNI, so weights and signed matmul operands are "
                     "on 7 bits (its int8 kernels saturate 8-bit pair sums; the file then computes what was "
                     "scored)")
    glue = result.metrics.get("float_glue")
    if glue:
        notes.append(f"float glue on openvino: {glue['float_glue']} (bf16 against f32 on the held-out images: KL "
                     f"{glue['kl']:.2e}, {glue['agreement']:.2f} % of the predictions unchanged)")
    notes.append(f"→ {result.path}")
    return notes


def latency_refiner(checkpoint: str | os.PathLike, target: str) -> Callable[[nn.Module], Any] | None:
    """For a runtime target that runs here, the ``refine`` step of
    :func:`~vitedge.workflows.quantize.quantize_checkpoint` that keeps in float the attention and
    depthwise points running faster so, timed at the resolution the model was trained for;
    ``None`` for any other target."""
    if target not in LATENCY_PLAN_TARGETS:
        return None
    trained_at = read_metadata(checkpoint)["extra"].get("data_config", {}).get("input_size")

    def refine(qmodel: nn.Module) -> None:
        latency_plan(qmodel, resolution=int((trained_at or qmodel.data_config["input_size"])[-1]))

    return refine
