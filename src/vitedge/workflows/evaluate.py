"""Evaluate a checkpoint on a dataset as ``vitedge eval`` shows it: the metrics, a per-class
table, a one-line summary and the figure asked for (a confusion matrix, or segmentation
overlays). A segmentation dataset (camvid, cityscapes) is scored by mIoU, any other by top-1.

Example::

    result = evaluate_on_dataset("runs/b0/model.safetensors", "cifar10", root="data/cifar10")
    print(result.table().markdown(), result.summary)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitedge.data.segmentation import SegEvalTransform, build_seg_dataset
from vitedge.models.checkpoint import load
from vitedge.tables import Table
from vitedge.train import evaluate_checkpoint, save_confusion_png
from vitedge.train.seg_evaluate import evaluate_seg_checkpoint, save_overlays
from vitedge.train.tasks import task_of

__all__ = ["DatasetEvaluation", "evaluate_on_dataset"]

# Segmentation is scored on whole frames, at most this many per batch whatever the batch size asked.
SEG_MAX_BATCH = 16


@dataclass
class DatasetEvaluation:
    """The metrics of one evaluation, what to show of them, and the files written."""

    metrics: dict[str, Any]
    title: str
    column: str
    per_class: dict[str, float]
    summary: str
    written: list[Path] = field(default_factory=list)

    def table(self) -> Table:
        """The per-class scores (accuracy or IoU, in %)."""
        return Table.of_mapping(self.title, ("class", self.column), self.per_class)


def evaluate_on_dataset(checkpoint: str | os.PathLike, data: str, *, root: str | os.PathLike | None = None,
                        split: str = "test", batch_size: int = 256, workers: int = 0, strict: bool = False,
                        confusion: str | os.PathLike | None = None, overlays: str | os.PathLike | None = None,
                        overlay_count: int = 4) -> DatasetEvaluation:
    """Score ``checkpoint`` on the ``split`` of ``data``, as the dataset's task scores it. A
    classifier writes its confusion matrix PNG to ``confusion``; a segmentation model its first
    ``overlay_count`` frames (image, label, prediction) to ``overlays``; each ignores the other's
    figure."""
    evaluate = _EVALUATORS[task_of(data).name]
    return evaluate(Path(checkpoint), data, root=None if root is None else Path(root), split=split,
                    batch_size=batch_size, workers=workers, strict=strict, confusion=confusion,
                    overlays=overlays, overlay_count=overlay_count)


def _evaluate_classification(checkpoint: Path, data: str, *, root: Path | None, split: str, batch_size: int,
                             workers: int, strict: bool, confusion: str | os.PathLike | None,
                             **_: Any) -> DatasetEvaluation:
    metrics = evaluate_checkpoint(checkpoint, data, root=str(root) if root else None, split=split,
                                  batch_size=batch_size, workers=workers, strict=strict)
    result = DatasetEvaluation(
        metrics, f"{checkpoint.name} on {data} ({split}, {metrics['num_samples']} images)", "accuracy (%)",
        metrics["per_class"],
        f"top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  loss {metrics['loss']:.4f}")
    if confusion is not None:
        save_confusion_png(metrics["confusion"], metrics["classes"], confusion,
                           title=f"{checkpoint.parent.name}/{checkpoint.name}: top-1 {metrics['top1']:.1f}%")
        result.written.append(Path(confusion))
    return result


def _evaluate_segmentation(checkpoint: Path, data: str, *, root: Path | None, split: str, batch_size: int,
                           workers: int, overlays: str | os.PathLike | None, overlay_count: int,
                           **_: Any) -> DatasetEvaluation:
    metrics = evaluate_seg_checkpoint(checkpoint, data, root=root, split=split,
                                      batch_size=min(batch_size, SEG_MAX_BATCH), workers=workers)
    result = DatasetEvaluation(
        metrics, f"{checkpoint.name} on {data} ({split}, {metrics['num_images']} images)", "IoU (%)",
        metrics["per_class_iou"],
        f"mIoU {metrics['miou']:.2f}%  pixel accuracy {metrics['pixel_acc']:.2f}%  "
        f"mean accuracy {metrics['mean_acc']:.2f}%")
    if overlays is not None:
        model = load(checkpoint)
        dataset = build_seg_dataset(data, root, split, transform=SegEvalTransform(
            mean=tuple(model.data_config["mean"]), std=tuple(model.data_config["std"])))
        save_overlays(model, dataset, overlays, count=overlay_count,
                      title=f"{checkpoint.parent.name}: mIoU {metrics['miou']:.1f}% on {data} {split}")
        result.written.append(Path(overlays))
    return result


_EVALUATORS = {"classification": _evaluate_classification, "segmentation": _evaluate_segmentation}
