"""Classification metrics from counts: top-1, top-k, per-class accuracy, confusion matrix.

Everything derives from two additive quantities — the confusion matrix and the top-k hit count —
so results from data shards (DDP ranks, batches) combine by summation, exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class MetricCounts:
    """Running sums over batches: confusion matrix (rows true, columns predicted), top-k hits, loss."""

    num_classes: int
    topk: int = 5
    confusion: torch.Tensor = field(init=False)
    topk_hits: int = 0
    loss_sum: float = 0.0

    def __post_init__(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss_sum: float = 0.0) -> None:
        """Add a batch: ``logits`` ``(N, C)``, ``targets`` ``(N,)``; ``loss_sum`` is summed, not averaged."""
        logits, targets = logits.detach().float().cpu(), targets.detach().cpu().long()
        preds = logits.argmax(dim=1)
        self.confusion += confusion_matrix(preds, targets, self.num_classes)
        k = min(self.topk, logits.shape[1])
        self.topk_hits += int((logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1).sum())
        self.loss_sum += float(loss_sum)

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    def summary(self, classes: Sequence[str] | None = None) -> dict[str, Any]:
        """Percentages: ``top1``, ``top5`` (top-``k``), ``per_class``; plus ``loss``, ``confusion``."""
        n = max(self.count, 1)
        per_class_total = self.confusion.sum(dim=1)
        correct = self.confusion.diagonal()
        per_class = [100.0 * int(c) / int(t) if t else float("nan") for c, t in zip(correct, per_class_total)]
        names = list(classes) if classes is not None else [str(i) for i in range(self.num_classes)]
        return {
            "top1": 100.0 * int(correct.sum()) / n,
            f"top{self.topk}": 100.0 * self.topk_hits / n,
            "loss": self.loss_sum / n,
            "num_samples": self.count,
            "classes": names,
            "per_class": dict(zip(names, per_class)),
            "confusion": self.confusion.tolist(),
        }


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts; entry ``[t, p]`` is how often true class ``t`` was predicted ``p``."""
    flat = targets.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def metrics_from_logits(logits: torch.Tensor, targets: torch.Tensor, classes: Sequence[str] | None = None,
                        topk: int = 5) -> dict[str, Any]:
    """All metrics for one set of logits and labels (a convenience over :class:`MetricCounts`)."""
    counts = MetricCounts(logits.shape[1], topk)
    counts.update(logits, targets)
    return counts.summary(classes)
