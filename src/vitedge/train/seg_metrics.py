"""Segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel and mean accuracy.

Logits at the model's output stride are resized to the label's size before the argmax (as the
official EfficientViT evaluation does); pixels labelled ``ignore_index`` are not counted. Counts add
up across batches and DDP ranks, so the result does not depend on how the data was split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from vitedge.data.segmentation import IGNORE_INDEX
from vitedge.train.metrics import confusion_matrix

__all__ = ["IGNORE_INDEX", "SegMetricCounts", "predict", "resize_logits"]


@dataclass
class SegMetricCounts:
    """Running pixel confusion matrix (rows true, columns predicted) and loss sum."""

    num_classes: int
    ignore_index: int = IGNORE_INDEX
    confusion: torch.Tensor = field(init=False)
    loss_sum: float = 0.0
    images: int = 0

    def __post_init__(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor, masks: torch.Tensor, loss_sum: float = 0.0) -> None:
        """Add a batch: ``logits`` ``(N, C, h, w)`` at any resolution, ``masks`` ``(N, H, W)``."""
        preds = predict(logits.detach(), masks.shape[-2:]).cpu()
        masks = masks.detach().cpu().long()
        valid = masks != self.ignore_index
        self.confusion += confusion_matrix(preds[valid], masks[valid], self.num_classes)
        self.loss_sum += float(loss_sum)
        self.images += len(masks)

    def summary(self, classes: Sequence[str] | None = None) -> dict[str, Any]:
        """Percentages: ``miou``, ``per_class_iou``, ``pixel_acc``, ``mean_acc``; ``loss`` per image.

        A class absent from both labels and predictions has no IoU (NaN) and is left out of the mean.
        """
        c = self.confusion.double()
        tp, gt, pred = c.diagonal(), c.sum(1), c.sum(0)
        union = gt + pred - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan")))
        names = list(classes) if classes is not None else [str(i) for i in range(self.num_classes)]
        return {
            "miou": 100.0 * float(iou.nanmean()) if (union > 0).any() else float("nan"),
            "pixel_acc": 100.0 * float(tp.sum() / c.sum().clamp(min=1)),
            "mean_acc": 100.0 * float(acc.nanmean()) if (gt > 0).any() else float("nan"),
            "per_class_iou": {n: 100.0 * float(v) for n, v in zip(names, iou)},
            "loss": self.loss_sum / max(self.images, 1),
            "num_pixels": int(c.sum()),
            "num_images": self.images,
            "classes": names,
        }


def predict(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Class indices ``(N, H, W)``: logits resized to ``size``, then argmax."""
    return resize_logits(logits, size).argmax(1)


def resize_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(N, C, h, w)`` logits resized (bilinear, align_corners=False, in FP32) to ``size`` (H, W)."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
