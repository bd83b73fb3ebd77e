"""The data side of a compression recipe (prune, quantize): one dataset, built once, serving
evaluation, calibration / importance batches and fine-tuning alike.

Example::

    data = TaskData(DataConfig(dataset="cifar10", root="data/cifar10"), model.data_config)
    data.score(model)                    # top-1 on the test split, with the evaluation transform
    batches = data.sample(1024, seed=0)  # training images, evaluation transform, no labels

A segmentation set (``camvid``, ``cityscapes``) gives the same interface over image/mask pairs:
``score`` is the mIoU (whole frames, sides rounded to 32), ``sample`` frames at that size, with
their masks when asked, and ``loss_fn`` the per-pixel loss the Taylor criterion needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from vitedge.data import build_dataset, eval_transform, limit_dataset
from vitedge.data.segmentation import SegEvalTransform
from vitedge.errors import VitedgeError
from vitedge.train.config import DataConfig
from vitedge.train.evaluate import evaluate
from vitedge.train.seg_evaluate import evaluate_seg, seg_loss
from vitedge.train.tasks import Task, task_of

__all__ = ["TaskData"]


class TaskData:
    """``train_set`` (PIL images, for the trainer's augmentation), ``eval_set`` (test split,
    evaluation transform) and the ``classes`` they share (the checkpoint's, when it names them).
    ``metric`` names what :meth:`score` returns: ``"top1"``, or ``"miou"`` on a segmentation set."""

    loss_fn = None  # the classifier's cross-entropy (the importance criteria's default)
    frame = None    # a segmentation set's test-frame size

    def __new__(cls, data: DataConfig, *args: Any, **kwargs: Any) -> TaskData:
        if cls is TaskData:  # the data class of the dataset's task
            cls = _DATA_CLASSES[task_of(data.dataset).name]
        return super().__new__(cls)

    @property
    def task(self) -> Task:
        return task_of(self.data.dataset)

    @property
    def metric(self) -> str:
        return self.task.metric

    def __init__(self, data: DataConfig, data_config: dict[str, Any],
                 classes: Sequence[str] | None = None) -> None:
        self.data = data
        size = int(data.img_size or data_config["input_size"][-1])
        self.data_config = {**data_config, "input_size": (3, size, size)}
        self.transform = eval_transform(size, self.data_config)
        train_set = build_dataset(data.dataset, data.root, "train", strict=data.strict,
                                  classes=list(classes) if classes else None)
        self.train_set = limit_dataset(train_set, data.train_limit)
        self.classes = list(self.train_set.classes)
        eval_set = build_dataset(data.dataset, data.root, "test", strict=data.strict,
                                 classes=self.classes, transform=self.transform)
        self.eval_set = limit_dataset(eval_set, data.eval_limit)

    def loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.eval_set, batch_size=2 * self.data.batch_size,
                                           num_workers=self.data.workers)

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        return evaluate(model, self.loader(), classes=self.classes)

    def score(self, model: nn.Module) -> float:
        """The headline metric (percent): top-1, or mIoU on a segmentation set."""
        return float(self.evaluate(model)[self.metric])

    def sample(self, n: int, *, seed: int = 0, batch_size: int = 64,
               labels: bool = False, skip: int = 0) -> list[Any]:
        """``n`` seeded random training images with the evaluation transform (no augmentation:
        calibration ranges and importance scores should reflect the data, not augmentation
        noise), as batches of ``batch_size``; ``(images, labels)`` pairs with ``labels``.
        ``skip`` passes over the first images of the same seeded order: ``sample(m, skip=n)``
        is disjoint from ``sample(n)`` (held-out images beside a calibration set); it may be
        empty when the split is smaller than ``skip``. A segmentation set samples whole frames,
        with their masks as the labels."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise VitedgeError(f"the number of sample images must be a positive int, got {n!r}")
        g = torch.Generator().manual_seed(seed)
        picked = torch.randperm(len(self.train_set), generator=g)[skip:skip + n].tolist()
        batches = []
        for start in range(0, len(picked), batch_size):
            images, targets = self._batch(picked[start:start + batch_size])
            batches.append((images, targets) if labels else images)
        return batches

    def _batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training items ``indices`` through the evaluation transform: (images, labels)."""
        items = [self.train_set[i] for i in indices]
        return torch.stack([self.transform(img) for img, _ in items]), torch.tensor([label for _, label in items])


class SegTaskData(TaskData):
    """:class:`TaskData` over image/mask pairs (built by ``TaskData(...)`` for a segmentation set)."""

    def __init__(self, data: DataConfig, data_config: dict[str, Any],
                 classes: Sequence[str] | None = None) -> None:

        self.data = data
        self.data_config = dict(data_config)
        if data.img_size:  # the training crop; evaluation and samples use whole frames
            self.data_config["input_size"] = (3, data.img_size, data.img_size)
        self.transform = SegEvalTransform(mean=tuple(self.data_config["mean"]),
                                          std=tuple(self.data_config["std"]))
        self.train_set = self.task.train_split(data)
        self.classes = list(self.train_set.classes)
        if classes is not None and list(classes) != self.classes:
            shown = ", ".join(list(classes)[:3])
            raise VitedgeError(f"the model's {len(classes)} classes ({shown}, …) are not {data.dataset}'s; "
                               f"use a model trained on {data.dataset}")
        self.eval_set = self.task.eval_split(data, self.data_config, self.classes)
        self.loss_fn = seg_loss

    @property
    def frame(self) -> tuple[int, int]:
        """(height, width) the test frames run at (their size rounded to the backbone's stride)."""
        return tuple(self.eval_set[0][0].shape[-2:])  # type: ignore[return-value]

    def loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.eval_set, batch_size=min(8, self.data.batch_size),
                                           num_workers=self.data.workers)

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        return evaluate_seg(model, self.loader(), classes=self.classes)

    def _batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole training frames ``indices`` through the evaluation transform: (images, masks)."""
        pairs = [self.transform(*self.train_set[i]) for i in indices]
        return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


_DATA_CLASSES: dict[str, type[TaskData]] = {"classification": TaskData, "segmentation": SegTaskData}
