"""The study's trade-off plots as PNG: accuracy vs latency (Pareto front marked) and accuracy vs MACs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vitedge.io import atomic_write
from vitedge.report.tables import Row, pareto

__all__ = ["plot_accuracy_vs_latency", "plot_accuracy_vs_macs"]

_STYLE = {"fp32": ("o", "tab:blue", "FP32"), "bf16": ("^", "tab:green", "BF16"), "int8": ("s", "tab:orange", "INT8")}


def _scatter(ax, rows: Sequence[Row], x_of, metric: str) -> None:
    for precision, (marker, color, label) in _STYLE.items():
        mine = [r for r in rows if r.precision == precision]
        ax.scatter([x_of(r) for r in mine], [r.score for r in mine], marker=marker, s=46, color=color,
                   label=label, zorder=3)
        for r in mine:
            ax.annotate(r.shown or f"{r.ratio:.0%}", (x_of(r), r.score), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.set_ylabel(f"{metric} (%)")


def plot_accuracy_vs_latency(rows: Sequence[Row], path: str | os.PathLike, *, runtime: str, threads: int,
                             batch: int, metric: str = "top-1") -> Path:
    """Every variant at both precisions; the Pareto front (no model faster *and* more accurate) is
    drawn as a step line. Point labels give the pruning ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    _scatter(ax, rows, lambda r: r.latency_ms, metric)
    front = pareto(rows)
    ax.step([r.latency_ms for r in front], [r.score for r in front], where="post", color="tab:green",
            linewidth=1.4, label="Pareto front", zorder=2)
    ax.scatter([r.latency_ms for r in front], [r.score for r in front], s=140, facecolors="none",
               edgecolors="tab:green", linewidths=1.4, zorder=4)
    ax.set_xlabel(f"latency (ms, median, batch {batch}, {runtime}, {threads} threads)")
    ax.set_title("accuracy vs latency (labels: pruning ratio)")
    return _save(fig, path)


def plot_accuracy_vs_macs(rows: Sequence[Row], path: str | os.PathLike, metric: str = "top-1") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    _scatter(ax, rows, lambda r: r.macs / 1e6, metric)
    ax.set_xlabel("MACs per image (M)")
    ax.set_title("accuracy vs compute (labels: pruning ratio)")
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    fig.axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    result = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return result
