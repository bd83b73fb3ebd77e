"""Confusion-matrix figure: matplotlib's Figure API, which renders with Agg and never touches
pyplot's global backend, so it works headless and inside notebooks alike."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vitedge.models.checkpoint import atomic_write


def save_confusion_png(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike,
                       *, title: str = "Confusion matrix") -> Path:
    """Write a row-normalised confusion matrix (rows: true class) with counts in each cell."""
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(confusion, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    n = len(classes)
    size = max(4.0, 0.55 * n + 2)
    fig = Figure(figsize=(size, size), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels=classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels=classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:  # beyond that the numbers are unreadable anyway
        for t in range(n):
            for p in range(n):
                ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize=6,
                        color="white" if share[t, p] > 0.5 else "black")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
