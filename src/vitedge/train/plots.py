"""Confusion-matrix figure: matplotlib's Figure API, which renders with Agg and never touches
pyplot's global backend, so it works headless and inside notebooks alike."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vitedge.io import atomic_write


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


def save_seg_overlays(images: Sequence, masks: Sequence, preds: Sequence, classes: Sequence[str],
                      path: str | os.PathLike, *, ignore_index: int = 255,
                      title: str = "Segmentation") -> Path:
    """One row per image: the frame, the label and the prediction blended over the frame, with a
    class legend. ``images`` are ``(H, W, 3)`` uint8 arrays, ``masks``/``preds`` ``(H, W)`` indices."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colours = [colormaps["tab20"](i % 20)[:3] for i in range(len(classes))]
    palette = (np.asarray(colours) * 255).astype(np.uint8)

    def blend(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = image.astype(np.float32)
        valid = labels != ignore_index
        out[valid] = 0.4 * out[valid] + 0.6 * palette[labels[valid]]
        return out.round().astype(np.uint8)

    rows = len(images)
    height, width = np.asarray(images[0]).shape[:2]
    fig = Figure(figsize=(3 * 3.2, rows * (3.2 * height / width + 0.4) + 1.2), dpi=100)
    axes = fig.subplots(rows, 3, squeeze=False)
    for row, (image, mask, pred) in enumerate(zip(images, masks, preds)):
        image, mask, pred = np.asarray(image), np.asarray(mask), np.asarray(pred)
        for ax, picture, name in zip(axes[row], (image, blend(image, mask), blend(image, pred)),
                                     ("image", "label", "prediction")):
            ax.imshow(picture)
            ax.set_axis_off()
            ax.set_title(f"{name} {row + 1}", fontsize=9)  # on every row: keeps the rows apart
    handles = [Patch(color=palette[i] / 255, label=name) for i, name in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(classes), 6), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
