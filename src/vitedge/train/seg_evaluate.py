"""Segmentation loss and evaluation: cross-entropy with an ignore index, pixel-wise distillation,
mIoU over a loader (summed over DDP ranks when the loader is sharded)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.errors import VitedgeError
from vitedge.train.distributed import DistInfo, all_reduce_sum
from vitedge.train.seg_metrics import IGNORE_INDEX, SegMetricCounts, resize_logits


def seg_loss(logits: torch.Tensor, masks: torch.Tensor, teacher_logits: torch.Tensor | None = None, *,
             alpha: float = 0.5, temperature: float = 1.0, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-pixel cross-entropy against ``masks`` (logits upsampled to the mask size first), plus
    ``alpha``-weighted KL to the teacher's per-pixel distribution on labelled pixels when given.

    Logits come at output stride 8; upsampling them (bilinear, FP32) rather than shrinking the
    masks keeps thin classes (poles, signs) in the loss.
    """
    logits = resize_logits(logits, masks.shape[-2:])
    ce = F.cross_entropy(logits, masks, ignore_index=ignore_index)
    if teacher_logits is None or alpha == 0:
        return ce
    t = temperature
    teacher = resize_logits(teacher_logits.detach(), masks.shape[-2:])
    valid = (masks != ignore_index).unsqueeze(1)
    kl = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher / t, 1), reduction="none",
                  log_target=True)
    kd = (kl * valid).sum() / valid.sum().clamp(min=1) * (t * t)
    return (1 - alpha) * ce + alpha * kd


@torch.no_grad()
def evaluate_seg(model: nn.Module, loader: torch.utils.data.DataLoader, *,
                 classes: Sequence[str] | None = None, device: torch.device | str | None = None,
                 dist_info: DistInfo | None = None) -> dict[str, Any]:
    """``miou``, ``per_class_iou``, ``pixel_acc``, ``mean_acc`` (percent) and mean ``loss`` of
    ``model`` over ``loader``'s ``(images, masks)`` batches, logits scored at the masks' size."""
    if classes is None:
        classes = getattr(loader.dataset, "classes", None)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    counts: SegMetricCounts | None = None
    try:
        for images, masks in loader:
            logits = model(images.to(device).contiguous(memory_format=torch.channels_last))
            masks = masks.to(device)
            if counts is None:
                counts = SegMetricCounts(logits.shape[1])
                if classes is not None and len(classes) != logits.shape[1]:
                    raise VitedgeError(f"the model has {logits.shape[1]} outputs but the data has "
                                       f"{len(classes)} classes; evaluate on the data it was trained for")
            counts.update(logits, masks, float(seg_loss(logits, masks)) * len(masks))
    finally:
        model.train(was_training)
    if counts is None:
        raise VitedgeError("the evaluation loader yielded no batches; the dataset is empty")
    if dist_info is not None and dist_info.distributed:
        counts.confusion = all_reduce_sum(counts.confusion, dist_info)
        totals = all_reduce_sum(torch.tensor([counts.loss_sum, counts.images], dtype=torch.float64),
                                dist_info)
        counts.loss_sum, counts.images = float(totals[0]), int(totals[1])
    return counts.summary(classes)

