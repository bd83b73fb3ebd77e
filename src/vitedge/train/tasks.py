"""What differs between training a classifier and a segmenter, behind one small interface.

The trainer's loop (schedule, resume, DDP, EMA, checkpoints) is the same for both tasks, and so are
the recipes and the study; a :class:`Task` supplies what differs: the datasets it reads, the
augmentation, the loss, the running training accuracy, the evaluation, its headline metric (the
``score`` of every result, with ``metric`` naming it), the models it accepts and the sizes it is
timed at. :func:`get_task` finds one by name, :func:`task_of` by dataset, :func:`task_for` by a
training set.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.data import build_dataset, eval_transform, limit_dataset
from vitedge.data.segmentation import (
    SEG_DATASETS,
    SegEvalTransform,
    SegmentationDataset,
    SegTrainTransform,
    build_seg_dataset,
    first_frames,
)
from vitedge.data.transforms import TrainTransform
from vitedge.errors import VitedgeError
from vitedge.train.config import DataConfig, TrainConfig
from vitedge.train.distill import distillation_loss
from vitedge.train.distributed import DistInfo
from vitedge.train.evaluate import evaluate
from vitedge.train.seg_evaluate import evaluate_seg, seg_loss
from vitedge.train.seg_metrics import IGNORE_INDEX, SegMetricCounts, predict


class Task:
    """Image classification: random-resized crops, (distilled) cross-entropy, top-1/top-5."""

    name = "classification"
    metric = "top1"                   # the headline metric: what every result's score is
    label = "top-1"                   # ... as tables and logs name it
    record_keys = ("top1", "top5")    # per-epoch history fields
    final_keys = ("top1", "top5", "loss", "num_samples", "per_class")
    joint = False                     # the transform sees the label too
    hardware_note: str | None = None  # why the FPGA estimate and CPU breakdown do not apply; None: they do
    default_model = "efficientvit_b0"  # what a recipe trains when given none
    eval_batch = 64                   # images per batch when a runtime scores the test split
    evaluator = evaluate              # (model, loader, classes=, dist_info=) → the metrics
    headline = (("top-1", "top1"), ("top-5", "top5"))  # what the trainer logs per epoch

    def scorer(self, classes: Sequence[str]) -> Scorer:
        """An accumulator of this task's metric over (output logits, targets) batches."""
        return _Top1()

    def owns(self, dataset: str) -> bool:
        """Whether ``dataset`` (a registered name or a folder) is data of this task."""
        return str(dataset).lower() not in SEG_DATASETS

    def check_model(self, model: str) -> None:
        """Raise when ``model`` (a name or checkpoint path) cannot do this task."""
        if "_seg_" in Path(model).name:
            raise VitedgeError(f"{model} is a segmentation model; use it with a segmentation dataset "
                               f"({', '.join(SEG_DATASETS)}) and task segmentation")

    def train_split(self, data: DataConfig) -> torch.utils.data.Dataset:
        """The training split of ``data`` (untransformed: the trainer augments)."""
        train = build_dataset(data.dataset, data.root, "train", strict=data.strict)
        return limit_dataset(train, data.train_limit)

    def eval_split(self, data: DataConfig, data_config: dict[str, Any],
                   classes: Sequence[str]) -> torch.utils.data.Dataset:
        """The test split of ``data`` through the evaluation transform of ``data_config``."""
        size = int(data_config["input_size"][-1])
        test = build_dataset(data.dataset, data.root, "test", strict=data.strict, classes=list(classes),
                             transform=eval_transform(size, data_config))
        return limit_dataset(test, data.eval_limit)

    def split_classes(self, data: DataConfig, split: str, classes: Sequence[str] | None = None) -> list[str]:
        """The classes of ``split`` (opening it: a missing dataset fails here)."""
        return list(build_dataset(data.dataset, data.root, split, classes=classes).classes)

    def latency_sizes(self, frame: tuple[int, int] | None,
                      large: tuple[int, int]) -> dict[str, tuple[int, int] | None]:
        """Suffix → input size of the files a model is exported and timed at ("": the main one;
        None: the model's own input size)."""
        return {"": None}

    def measured_at(self, img_size: int, large: tuple[int, int]) -> str:
        """How the study's numbers were measured, for the report."""
        return f"at {img_size} px"

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
        return type(self).evaluator(model, loader, classes=classes, dist_info=info)

    def describe(self, metrics: dict[str, Any]) -> str:
        """The headline metrics, as the trainer logs them."""
        return "test " + "  ".join(f"{label} {metrics[key]:.2f}%" for label, key in self.headline)


class SegmentationTask(Task):
    """Semantic segmentation: joint rescale/crop/flip, per-pixel CE with ignore (distillation on
    labelled pixels), mIoU. ``DataConfig.seg_scale`` is the rescale range, ``img_size`` the crop."""

    name = "segmentation"
    metric = "miou"
    label = "mIoU"
    record_keys = ("miou", "pixel_acc")
    final_keys = ("miou", "pixel_acc", "mean_acc", "loss", "num_pixels", "per_class_iou")
    joint = True
    hardware_note = "no accelerator model for segmentation heads"
    default_model = "efficientvit_seg_b0"
    eval_batch = 4                    # whole frames
    evaluator = evaluate_seg
    headline = (("mIoU", "miou"), ("pixel acc", "pixel_acc"))

    def scorer(self, classes: Sequence[str]) -> Scorer:
        return _MeanIoU(len(classes))

    def owns(self, dataset: str) -> bool:
        return str(dataset).lower() in SEG_DATASETS

    def check_model(self, model: str) -> None:
        if "_seg_" not in Path(model).name:
            raise VitedgeError(f"task segmentation needs a segmentation model (e.g. efficientvit_seg_b0), "
                               f"not {model!r}; pass --model")

    def train_split(self, data: DataConfig) -> torch.utils.data.Dataset:
        train = build_seg_dataset(data.dataset, data.root, data.seg_train_split)
        return first_frames(train, data.train_limit)

    def eval_split(self, data: DataConfig, data_config: dict[str, Any],
                   classes: Sequence[str]) -> torch.utils.data.Dataset:
        """Whole test frames (sides rounded to the backbone's stride), scored at label size."""
        transform = SegEvalTransform(mean=tuple(data_config["mean"]), std=tuple(data_config["std"]))
        test = build_seg_dataset(data.dataset, data.root, "test", transform=transform)
        return first_frames(test, data.eval_limit)

    def split_classes(self, data: DataConfig, split: str, classes: Sequence[str] | None = None) -> list[str]:
        found = build_seg_dataset(data.dataset, data.root, split).classes
        if classes is not None and list(classes) != list(found):
            raise VitedgeError(f"the model was trained on other classes than {data.dataset}'s; pass a model "
                               f"trained on {data.dataset}")
        return list(found)

    def latency_sizes(self, frame: tuple[int, int] | None,
                      large: tuple[int, int]) -> dict[str, tuple[int, int] | None]:
        """The test frames, and ``large`` (a Cityscapes-like 512×1024) for the second column."""
        return {"": frame, "_hi": tuple(large)}

    def measured_at(self, img_size: int, large: tuple[int, int]) -> str:
        return (f"trained on {img_size} px crops, evaluated and timed on whole test frames (sides rounded "
                f"to 32) and timed at {large[0]}×{large[1]}")

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



class Scorer(Protocol):
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None: ...
    def score(self) -> float: ...


class _Top1:
    def __init__(self) -> None:
        self.correct = self.total = 0

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.correct += int((logits.argmax(dim=1) == targets).sum())
        self.total += len(targets)

    def score(self) -> float:
        return 100.0 * self.correct / self.total


class _MeanIoU:
    def __init__(self, num_classes: int) -> None:
        self.counts = SegMetricCounts(num_classes)

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.counts.update(logits, targets)

    def score(self) -> float:
        return float(self.counts.summary()["miou"])


TASKS: dict[str, Task] = {task.name: task for task in (Task(), SegmentationTask())}
ALIASES = {"seg": "segmentation", "cls": "classification"}


def get_task(name: str) -> Task:
    """The task called ``name`` (``classification``, ``segmentation``; ``seg`` for short)."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in TASKS:
        close = difflib.get_close_matches(key, [*TASKS, *ALIASES], n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(TASKS)}"
        raise VitedgeError(f"unknown task {name!r}; {hint}")
    return TASKS[key]


def task_of(dataset: str) -> Task:
    """The task whose data ``dataset`` is (segmentation for camvid/cityscapes, else classification)."""
    return next(task for task in reversed(TASKS.values()) if task.owns(dataset))  # the specific ones first


def task_scored_by(metric: str) -> Task:
    """The task whose headline metric is ``metric`` (``top1``, ``miou``)."""
    return next((task for task in TASKS.values() if task.metric == metric), TASKS["classification"])


def task_for(dataset: torch.utils.data.Dataset) -> Task:
    """The task a training set calls for (segmentation for image/mask pairs)."""
    while not isinstance(dataset, SegmentationDataset) and hasattr(dataset, "dataset"):  # Subset & co.
        dataset = dataset.dataset
    return TASKS["segmentation"] if isinstance(dataset, SegmentationDataset) else TASKS["classification"]


def describe(metrics: dict[str, Any]) -> str:
    """The headline metrics of either task, as the trainer logs them."""
    return next(t for t in reversed(TASKS.values()) if t.metric in metrics).describe(metrics)
