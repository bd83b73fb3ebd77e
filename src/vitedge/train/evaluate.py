"""Evaluation: top-1, top-5, per-class accuracy and the confusion matrix of a model on a loader.

Counts are summed over DDP ranks when the loader is sharded (``dist_info``), so every rank gets
the metrics of the whole set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.data import build_dataset, eval_transform
from vitedge.errors import VitedgeError
from vitedge.io import load_bundle
from vitedge.train.distributed import DistInfo, all_reduce_sum
from vitedge.train.metrics import MetricCounts


@torch.no_grad()
def evaluate(model: nn.Module, loader: torch.utils.data.DataLoader, *, classes: Sequence[str] | None = None,
             device: torch.device | str | None = None, topk: int = 5,
             dist_info: DistInfo | None = None) -> dict[str, Any]:
    """Metrics of ``model`` over every batch of ``loader`` (percentages; ``loss`` is mean CE).

    Returns ``top1``, ``top5``, ``loss``, ``num_samples``, ``classes``, ``per_class`` (class →
    accuracy) and ``confusion`` (rows: true class, columns: predicted). ``classes`` defaults to
    the loader's dataset's ``classes``.

    Example::

        metrics = evaluate(model, DataLoader(test_set, batch_size=256))
        print(metrics["top1"], metrics["per_class"]["cat"])
    """
    if classes is None:
        classes = getattr(loader.dataset, "classes", None)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    counts: MetricCounts | None = None
    try:
        for images, targets in loader:
            if images.dim() == 4:  # the layout the trainer uses; oneDNN's convs are faster on it
                images = images.contiguous(memory_format=torch.channels_last)
            logits = model(images.to(device, non_blocking=True))
            targets = targets.to(device)
            if counts is None:
                counts = MetricCounts(logits.shape[1], topk)
                if classes is not None and len(classes) != logits.shape[1]:
                    raise VitedgeError(f"the model has {logits.shape[1]} outputs but the data has "
                                       f"{len(classes)} classes; evaluate on the data it was trained for")
            if int(targets.max()) >= logits.shape[1] or int(targets.min()) < 0:
                raise VitedgeError(f"label {int(targets.max())} is out of range for the model's "
                                   f"{logits.shape[1]} outputs; evaluate on the data it was trained for")
            counts.update(logits, targets, float(F.cross_entropy(logits.float(), targets, reduction="sum")))
    finally:
        model.train(was_training)
    if counts is None:
        if classes is None or dist_info is None or not dist_info.distributed:
            raise VitedgeError("the evaluation loader yielded no batches; the dataset is empty")
        counts = MetricCounts(len(classes), topk)  # a rank with an empty shard still joins the sums
    if dist_info is not None and dist_info.distributed:
        totals = torch.tensor([counts.topk_hits, counts.loss_sum], dtype=torch.float64)
        counts.confusion = all_reduce_sum(counts.confusion, dist_info)
        totals = all_reduce_sum(totals, dist_info)
        counts.topk_hits, counts.loss_sum = int(totals[0]), float(totals[1])
    return counts.summary(classes)


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: str, *, root: str | None = None,
                        split: str = "test", batch_size: int = 256, workers: int = 0,
                        strict: bool = False) -> dict[str, Any]:
    """Load a vitedge checkpoint and evaluate it on ``data`` with the preprocessing it was trained with.

    Class names and the evaluation transform (size, crop_pct, interpolation, mean, std) come
    from the checkpoint's ``extra`` when the trainer wrote it, otherwise from the model.
    """
    bundle = load_bundle(checkpoint)
    model, extra, data_config = bundle.model, bundle.extra, bundle.data_config
    size = int(data_config["input_size"][-1])
    dataset = build_dataset(data, root=root, split=split, strict=strict, classes=extra.get("classes"),
                            transform=eval_transform(size, data_config))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    metrics = evaluate(model, loader)
    metrics.update(checkpoint=str(checkpoint), data=str(data), split=split, input_size=size)
    return metrics
