"""What differs between training a classifier and a segmenter, behind one small interface.

The trainer's loop (schedule, resume, DDP, EMA, checkpoints) is the same for both tasks; a
:class:`Task` supplies the augmentation, the loss, the running training accuracy, the evaluation
and the metric names. :func:`task_for` picks it from the training set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.data.segmentation import SegmentationDataset, SegTrainTransform
from vitedge.data.transforms import TrainTransform
from vitedge.train.config import TrainConfig
from vitedge.train.distill import distillation_loss
from vitedge.train.distributed import DistInfo
from vitedge.train.evaluate import evaluate
from vitedge.train.seg_evaluate import evaluate_seg, seg_loss
from vitedge.train.seg_metrics import IGNORE_INDEX, predict


class Task:
    """Image classification: random-resized crops, (distilled) cross-entropy, top-1/top-5."""

    name = "classification"
    record_keys = ("top1", "top5")    # per-epoch history fields
    final_keys = ("top1", "top5", "loss", "num_samples", "per_class")
    joint = False                     # the transform sees the label too

    def train_transform(self, data_config: dict[str, Any], cfg: TrainConfig) -> Callable[..., Any]:
        d = cfg.data
        return TrainTransform(int(data_config["input_size"][-1]), scale=tuple(d.scale), ratio=tuple(d.ratio),
                              hflip=d.hflip, interpolation=data_config["interpolation"],
                              mean=tuple(data_config["mean"]), std=tuple(data_config["std"]),
                              randaug_ops=d.randaug_ops, randaug_magnitude=d.randaug_magnitude)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None,
             cfg: TrainConfig) -> torch.Tensor:
        if teacher_logits is None:
            return F.cross_entropy(logits, targets, label_smoothing=cfg.optim.label_smoothing)
        return distillation_loss(logits, teacher_logits, targets, alpha=cfg.distill.alpha,
                                 temperature=cfg.distill.temperature,
                                 label_smoothing=cfg.optim.label_smoothing)

    def hits(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        """(correct, counted) of a training batch, for the running accuracy."""
        return int((logits.detach().argmax(1) == targets).sum()), len(targets)

    def evaluate(self, model: nn.Module, loader: torch.utils.data.DataLoader, classes: Sequence[str],
                 info: DistInfo | None) -> dict[str, Any]:
        return evaluate(model, loader, classes=classes, dist_info=info)

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"test top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%"


class SegmentationTask(Task):
    """Semantic segmentation: joint rescale/crop/flip, per-pixel CE with ignore (distillation on
    labelled pixels), mIoU. ``DataConfig.seg_scale`` is the rescale range, ``img_size`` the crop."""

    name = "segmentation"
    record_keys = ("miou", "pixel_acc")
    final_keys = ("miou", "pixel_acc", "mean_acc", "loss", "num_pixels", "per_class_iou")
    joint = True

    def train_transform(self, data_config: dict[str, Any], cfg: TrainConfig) -> Callable[..., Any]:
        height, width = (int(v) for v in data_config["input_size"][-2:])
        return SegTrainTransform((height, width), scale=tuple(cfg.data.seg_scale), hflip=cfg.data.hflip,
                                 mean=tuple(data_config["mean"]), std=tuple(data_config["std"]))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None,
             cfg: TrainConfig) -> torch.Tensor:
        return seg_loss(logits, targets, teacher_logits, alpha=cfg.distill.alpha,
                        temperature=cfg.distill.temperature)

    def hits(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        valid = targets != IGNORE_INDEX
        pred = predict(logits.detach(), targets.shape[-2:])
        return int((pred == targets)[valid].sum()), int(valid.sum())

    def evaluate(self, model: nn.Module, loader: torch.utils.data.DataLoader, classes: Sequence[str],
                 info: DistInfo | None) -> dict[str, Any]:
        return evaluate_seg(model, loader, classes=classes, dist_info=info)

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"test mIoU {metrics['miou']:.2f}%  pixel acc {metrics['pixel_acc']:.2f}%"


def task_for(dataset: torch.utils.data.Dataset) -> Task:
    """The task a training set calls for (segmentation for image/mask pairs)."""
    while not isinstance(dataset, SegmentationDataset) and hasattr(dataset, "dataset"):  # Subset & co.
        dataset = dataset.dataset
    return SegmentationTask() if isinstance(dataset, SegmentationDataset) else Task()


def describe(metrics: dict[str, Any]) -> str:
    """The headline metrics of either task, as the trainer logs them."""
    return (SegmentationTask() if "miou" in metrics else Task()).describe(metrics)
