"""Datasets and transforms: Fashion-MNIST, CIFAR-10 and image folders, on PIL and torch alone.

One entry point, :func:`build_dataset`, takes a registered name or a folder path. Every dataset
yields ``(image, label)`` with RGB images and carries its ``classes``.

Example::

    from vitedge.data import build_dataset, eval_transform
    test = build_dataset("cifar10", root="data/cifar10", split="test", transform=eval_transform(64))
    test.classes[test[0][1]]
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vitedge.data.base import ArrayDataset, ImageDataset, SubsetDataset, Transform, limit_dataset
from vitedge.data.cifar import CLASSES as CIFAR10_CLASSES
from vitedge.data.cifar import cifar10, cifar10_python, read_python_batch
from vitedge.data.fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from vitedge.data.fashion_mnist import fashion_mnist, read_idx
from vitedge.data.folder import DataWarning, ImageFolder, image_folder
from vitedge.data.transforms import EvalTransform, TrainTransform, eval_transform
from vitedge.errors import VitedgeError


@dataclass(frozen=True)
class DatasetSpec:
    """One row of the dataset table: how to build a split, and its class names."""

    build: Callable[..., ImageDataset]
    classes: tuple[str, ...]


def _fashion(root: str | os.PathLike | None, split: str, transform: Transform | None,
             strict: bool) -> ImageDataset:
    return fashion_mnist(root, split, transform=transform)  # in-memory arrays: nothing to skip


def _cifar(root: str | os.PathLike | None, split: str, transform: Transform | None,
           strict: bool) -> ImageDataset:
    return cifar10(root, split, transform=transform, strict=strict)


# The registered datasets; any other name is taken as a folder path.
DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(_fashion, FASHION_MNIST_CLASSES),  # root: IDX files (has a default)
    "cifar10": DatasetSpec(_cifar, CIFAR10_CLASSES),  # root: python batches or train/, test/ folders
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10",
            "cifar_10": "cifar10"}


def build_dataset(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None,
                  split: str = "train", transform: Transform | None = None, strict: bool = False, *,
                  classes: Sequence[str] | None = None) -> ImageDataset:
    """A dataset split by registered name ("fashion-mnist", "cifar10") or folder path.

    ``root`` is where a registered dataset lives (Fashion-MNIST has a default); a folder path
    may hold ``train/`` and ``test/`` (or ``val/``) split folders or be one split itself.
    ``strict`` turns skipped unreadable images into an error. ``classes`` fixes the label order
    of a folder (e.g. a checkpoint's classes) and makes unknown class folders an error.
    """
    if split not in ("train", "test"):
        raise VitedgeError(f"split must be 'train' or 'test', not {split!r}")
    key = str(name_or_path).lower()
    key = _ALIASES.get(key, key)
    if key in DATASETS:
        spec = DATASETS[key]
        data = spec.build(root, split, transform, strict)
        if classes is not None and list(classes) != list(data.classes):
            shown = ", ".join(list(classes)[:3])
            raise VitedgeError(f"the model's {len(classes)} classes ({shown}, …) are not {key}'s "
                               f"classes; use a model trained on {key}")
        return data
    path = Path(name_or_path)
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    if not path.exists():
        close = difflib.get_close_matches(key, list(DATASETS) + list(_ALIASES), n=1)
        hint = f"did you mean {_ALIASES.get(close[0], close[0])!r}? " if close else ""
        raise VitedgeError(f"no dataset {str(name_or_path)!r}: it is neither a registered dataset "
                           f"({', '.join(DATASETS)}) nor an existing folder; {hint}pass a name or a "
                           "folder path")
    return image_folder(path, split, classes=classes, transform=transform, strict=strict)


__all__ = ["CIFAR10_CLASSES", "DATASETS", "FASHION_MNIST_CLASSES", "ArrayDataset", "DataWarning",
           "EvalTransform", "ImageDataset", "ImageFolder", "TrainTransform", "build_dataset", "cifar10",
           "cifar10_python", "eval_transform", "fashion_mnist", "image_folder", "limit_dataset", "read_idx",
           "read_python_batch", "SubsetDataset"]
