"""The report's part on the searched model (``pruning.mode: search``): what the search chose and
why, its latency model against the study's own measurement, and where each variant keeps its
channels (the parameter-reallocation view of the Microsoft EfficientViT paper)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vitedge.bench.latency_model import LatencyTable
from vitedge.io import atomic_write, read_metadata
from vitedge.models.checkpoint import load
from vitedge.pruning.pruner import stage_channels
from vitedge.study.pipeline import Variant
from vitedge.tables import Table

__all__ = ["kept_channels", "plot_kept_channels", "search_latency_table", "search_record", "search_summary"]


def search_summary(searched: Variant, metric: str) -> str:
    """One paragraph: the budget, where it was measured, what was chosen and what it predicted."""
    s = searched.search or {}
    chosen = ", ".join(f"`{stage}` {r:.0%}" for stage, r in s["stage_ratios"].items()) or "no stage's widths"
    drops = s.get("stage_drops") or {}
    if drops:
        chosen += " and removes blocks " + ", ".join(f"{blocks} of `{stage}`" for stage, blocks in drops.items())
    budget = s["budget"]
    if budget.startswith("uniform:"):
        ratio, slash, faster = budget.split(":")[1].partition("/")
        budget = (f"{faster}× faster than " if slash else "") + \
            f"the latency the table predicts for uniform {float(ratio):.0%} pruning"
    name = "The searched model" if searched.shown == "searched" else f"The model `{searched.shown}`"
    return (f"{name} prunes {chosen} (everything else dense), the configuration of least summed "
            f"divergence (KL of its predictions from the dense model's on held-out training images, each stage "
            f"pruned alone) among {s['candidates']} whose predicted latency on {s['runtime']} {s['precision']} "
            f"meets the budget: {budget}, {s['budget_ms']:.3f} ms. Predicted {s['predicted_ms']:.3f} ms and "
            f"{metric} {s['predicted_score']:.2f} % before fine-tuning (the single-stage drops summed); it was "
            f"then fine-tuned like the uniform variants.")


def search_latency_table(variants: Sequence[Variant], searched: Variant) -> Table | None:
    """Each variant's latency on the search's runtime and precision, predicted by the latency table of
    ``searched`` (every searched model shares it) and measured by the study, both as a share of the
    dense model's (the table and the study time at different moments, so shares compare,
    milliseconds do not); None when the study did not deploy there."""
    s = searched.search or {}
    table = LatencyTable.from_dict(s["table"])
    runtime, precision = s["runtime"], s["precision"]
    dense = variants[0]
    try:
        dense_ms = dense.deployments[runtime][precision]["latency"]["median_ms"]
    except KeyError:
        return None
    stages = list(table.deltas)
    rows = []
    for v in variants:
        drops: dict[str, int] = {}
        if v is dense:
            config: dict[str, float] | None = {}
        elif v.search is not None:
            config = v.search["stage_ratios"]
            drops = {stage: len(blocks) for stage, blocks in (v.search.get("stage_drops") or {}).items()}
        else:  # uniform: every stage at its ratio, within the table's grid
            config = {stage: v.ratio for stage in stages} if v.ratio <= table.ratios[-1] else None
        measured = v.deployments[runtime][precision]["latency"]["median_ms"] / dense_ms
        predicted = None if config is None else table.predict(config, drops) / table.predict({})
        rows.append([v.shown, "–" if predicted is None else f"{predicted:.3f}", f"{measured:.3f}",
                     "–" if predicted is None else f"{predicted / measured - 1:+.1%}"])
    fitted = (f"fitted fixed cost {table.fit_ms:.3f} ms (dense measured {table.dense_ms:.3f} ms), "
              + ", ".join(f"`{stage}` {rate * 1e3:.2f} µs" for stage, rate in table.ms_per_mmac.items())
              + " per MMAC removed" if table.ms_per_mmac else f"dense {table.dense_ms:.3f} ms")
    note = (f"The search's latency table ({runtime} {precision}, {table.resolution} px, batch {table.batch}, "
            f"{table.threads} thread(s); {fitted}) against the study's latency of each variant on {runtime} "
            f"{precision} ({dense_ms:.3f} ms dense).")
    if precision == "int8":
        note += " The table times L2-pruned variants with every point INT8; the study's INT8 files follow their plan."
    microsoft = read_metadata(dense.checkpoint)["arch"]["name"].startswith("efficientvit_m")
    if microsoft and table.stage_widths and any(v.search is None and v.ratio > 0 for v in variants):
        note += (" Uniform rows: predicted with the residual stage widths pruned too (the table's), which the "
                 "uniform variants prune only with pruning.stage_widths.")
    return Table(f"Latency model — predicted vs measured (× dense, {runtime} {precision})",
                 ["variant", "predicted × dense", "measured × dense", "error"], rows, note)


def kept_channels(variants: Sequence[Variant]) -> dict[str, dict[str, int]]:
    """Variant (as tables name it) → stage → prunable channels kept."""
    return {("dense" if i == 0 else v.shown): stage_channels(load(v.checkpoint)) for i, v in enumerate(variants)}


def plot_kept_channels(kept: dict[str, dict[str, int]], path: str | os.PathLike) -> Path:
    """Grouped bars: per stage, the share of the dense model's prunable channels each variant keeps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = next(iter(kept.values()))
    stages = list(dense)
    names = list(kept)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    for i, name in enumerate(names):
        shares = [100 * kept[name].get(stage, 0) / dense[stage] for stage in stages]
        ax.bar([x + (i - (len(names) - 1) / 2) * width for x in range(len(stages))], shares, width,
               label=name, color="tab:red" if name == "searched" else None, zorder=3)  # the main one
    ax.set_xticks(range(len(stages)), [s.replace("stages.", "stage ") for s in stages])
    ax.set_ylabel("channels kept (% of dense)")
    ax.set_title("where each variant keeps its channels")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(len(names), 5), loc="lower left")
    fig.tight_layout()
    result = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return result


def search_record(variants: Sequence[Variant], kept: dict[str, dict[str, int]]) -> dict[str, Any]:
    """What results.json keeps of the search: the main budget's model, the models of the compared
    budgets under ``compared`` (by their variant names), and the kept channels of every variant."""
    searched = [v for v in variants if v.search is not None]

    def record(v: Variant) -> dict[str, Any]:
        return {k: value for k, value in (v.search or {}).items() if k != "table"}

    compared = {v.name: record(v) for v in searched[1:]}
    return {**record(searched[0]), "kept_channels": kept, **({"compared": compared} if compared else {})}
