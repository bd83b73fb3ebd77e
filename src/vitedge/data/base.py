"""What every vitedge dataset is: indexable (image, label) pairs whose class names travel along.

Datasets return PIL RGB images (grayscale is widened to three channels, so every model sees the
same input format) run through an optional ``transform``; ``classes`` names the label indices and
``targets`` holds the labels, so a sampler or a report never has to decode an image to know one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitedge.errors import VitedgeError

Transform = Callable[[Image.Image], Any]


class ImageDataset(torch.utils.data.Dataset):
    """Base class: subclasses fill ``classes`` and ``targets`` and implement :meth:`image`."""

    classes: list[str]
    targets: np.ndarray
    transform: Transform | None

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, index: int) -> Image.Image:
        """The ``index``-th image as an RGB PIL image, before any transform."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = self.image(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class ArrayDataset(ImageDataset):
    """Images held in memory as one uint8 array, ``(N, H, W)`` grayscale or ``(N, H, W, 3)`` RGB.

    Small datasets (Fashion-MNIST, CIFAR) are decoded once into this form, which is both the
    fastest to sample from and cheap to pass to data-loader workers.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, classes: Sequence[str], *,
                 transform: Transform | None = None, source: str = "dataset") -> None:
        rgb_or_gray = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)
        if images.dtype != np.uint8 or not rgb_or_gray:
            raise VitedgeError(f"{source}: expected uint8 images shaped (N, H, W) or (N, H, W, 3), "
                               f"got {images.dtype} {images.shape}; the files are not in the expected format")
        if len(images) != len(targets):
            raise VitedgeError(f"{source}: {len(images)} images but {len(targets)} labels; the image "
                               "and label files do not belong together — re-extract the dataset")
        self.images = images
        self.targets = check_targets(np.asarray(targets, dtype=np.int64), len(classes), source)
        self.classes = list(classes)
        self.transform = transform
        self.source = source

    def image(self, index: int) -> Image.Image:
        array = self.images[index]
        if array.ndim == 2:
            return Image.fromarray(array).convert("RGB")
        return Image.fromarray(array)


def check_targets(targets: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    """Raise a clear error if any label is outside ``0 .. num_classes-1``; return ``targets``."""
    if num_classes <= 0:
        raise VitedgeError(f"{source}: no class names; the dataset metadata is missing or empty")
    if len(targets) == 0:
        raise VitedgeError(f"{source}: the dataset is empty; check the path and the split")
    bad = np.flatnonzero((targets < 0) | (targets >= num_classes))
    if bad.size:
        first = int(bad[0])
        raise VitedgeError(f"{source}: label {int(targets[first])} of sample {first} is out of range for "
                           f"{num_classes} classes ({bad.size} such labels); the labels do not match "
                           "the class list — check that the files are not corrupt or mixed up")
    return targets


def to_rgb(img: Image.Image) -> Image.Image:
    """Three-channel RGB: grayscale is replicated, palette/alpha/CMYK images are converted."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale would clip when converted directly; scale to 8 bit first.
        array = np.asarray(img, dtype=np.float64)
        peak = array.max() if array.size and array.max() > 255 else 255.0
        img = Image.fromarray((array * (255.0 / peak)).round().astype(np.uint8))
    return img.convert("RGB")


class SubsetDataset(ImageDataset):
    """A fixed selection of another dataset's samples, keeping its classes and transform."""

    def __init__(self, base: ImageDataset, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.classes = list(base.classes)
        self.targets = np.asarray(base.targets)[self.indices]

    @property
    def transform(self) -> Transform | None:  # type: ignore[override]
        return self.base.transform

    def image(self, index: int) -> Image.Image:
        return self.base.image(int(self.indices[index]))


def limit_dataset(dataset: ImageDataset, limit: int | None, seed: int = 0) -> ImageDataset:
    """At most ``limit`` samples of ``dataset``, balanced across classes and chosen by ``seed``
    (the same every run), in index order; the dataset itself when it is no larger."""
    if limit is None or limit >= len(dataset):
        return dataset
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise VitedgeError(f"a dataset limit must be a positive number of samples, got {limit!r}")
    rng = np.random.default_rng(seed)
    targets = np.asarray(dataset.targets)
    per_class = [rng.permutation(np.flatnonzero(targets == c)) for c in range(len(dataset.classes))]
    # round-robin over the classes, so a small limit still sees every class equally often
    order = [idx for rank in range(max(map(len, per_class), default=0))
             for idx in (p[rank] for p in per_class if rank < len(p))]
    return SubsetDataset(dataset, np.sort(np.asarray(order[:limit], dtype=np.int64)))
