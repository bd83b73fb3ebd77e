"""Segmentation loss and evaluation: cross-entropy with an ignore index, pixel-wise distillation,
mIoU over a loader (summed over DDP ranks when the loader is sharded)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.data.segmentation import SegEvalTransform, build_seg_dataset
from vitedge.errors import VitedgeError
from vitedge.io import load_bundle
from vitedge.train.distributed import DistInfo, all_reduce_sum
from vitedge.train.plots import save_seg_overlays
from vitedge.train.seg_metrics import IGNORE_INDEX, SegMetricCounts, predict, resize_logits


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



def evaluate_seg_checkpoint(checkpoint: str | os.PathLike, data: str, *, root: str | os.PathLike | None,
                            split: str = "test", batch_size: int = 4, workers: int = 0,
                            size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Load a vitedge segmentation checkpoint and score it on a CamVid/Cityscapes split: whole
    frames (sides rounded to 32, or ``size``), logits resized to the label size."""
    bundle = load_bundle(checkpoint)
    model, extra, data_config = bundle.model, bundle.extra, bundle.data_config
    transform = SegEvalTransform(size, mean=tuple(data_config["mean"]), std=tuple(data_config["std"]))
    dataset = build_seg_dataset(data, root, split, transform=transform)
    trained_on = extra.get("classes")
    if trained_on is not None and list(trained_on) != dataset.classes:
        raise VitedgeError(f"{checkpoint} was trained on other classes ({', '.join(trained_on[:3])}, …) than "
                           f"{data}'s; evaluate it on the data it was trained for")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    metrics = evaluate_seg(model, loader)
    metrics.update(checkpoint=str(checkpoint), data=str(data), split=split)
    return metrics


@torch.no_grad()
def save_overlays(model: nn.Module, dataset: Any, path: str | os.PathLike, *, count: int = 4,
                  title: str = "Segmentation") -> Path:
    """Predict the first ``count`` frames of a segmentation dataset (with its eval transform) and
    write image / label / prediction overlays as one PNG."""

    was_training = model.training
    model.eval()
    frames, masks, preds = [], [], []
    try:
        for index in range(min(count, len(dataset))):
            image, mask = dataset.sample(index)
            x, _ = dataset.transform(image, mask)
            logits = model(x[None].to(next(model.parameters()).device))
            frames.append(np.asarray(image))
            masks.append(mask)
            preds.append(predict(logits, mask.shape)[0].cpu().numpy())
    finally:
        model.train(was_training)
    return save_seg_overlays(frames, masks, preds, dataset.classes, path, title=title)
