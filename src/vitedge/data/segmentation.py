"""Semantic segmentation data: (image, class-index mask) pairs, CamVid and Cityscapes layouts.

Every mask is an ``int64`` array with values in ``0 .. len(classes)-1`` or :data:`IGNORE_INDEX`
(255, the value the loss and the metrics skip). Each dataset's own "unlabelled" value is mapped to
it on load (CamVid's 11, Cityscapes' non-evaluated label ids). Pairing, sizes and label values are
checked, so a broken dataset fails with the file to look at instead of a shape error mid-epoch.

Example::

    from vitedge.data.segmentation import SegEvalTransform, build_seg_dataset
    test = build_seg_dataset("camvid", "data/camvid", "test", transform=SegEvalTransform((352, 480)))
    image, mask = test[0]          # (3, 352, 480) float tensor, (360, 480) int64 tensor
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vitedge.data.folder import load_image
from vitedge.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize, to_tensor
from vitedge.errors import VitedgeError

IGNORE_INDEX = 255

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                  "pedestrian", "bicyclist")
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light",
                      "traffic_sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                      "bus", "train", "motorcycle", "bicycle")
# Cityscapes label id -> train id (cityscapesScripts' labels.py); every other id is ignored.
CITYSCAPES_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}

JointTransform = Callable[..., tuple[Any, Any]]


class SegmentationDataset(torch.utils.data.Dataset):
    """Image/mask file pairs. ``label_map`` translates stored mask values (e.g. ``{11: 255}``);
    ``transform(image, mask[, rng])`` receives a PIL RGB image and an ``int64`` mask array."""

    def __init__(self, pairs: Sequence[tuple[str, str]], classes: Sequence[str], *,
                 transform: JointTransform | None = None, label_map: Mapping[int, int] | None = None,
                 source: str = "dataset") -> None:
        if not pairs:
            raise VitedgeError(f"{source}: no image/mask pairs found; check the path and the split")
        self.pairs = [(str(image), str(mask)) for image, mask in pairs]
        self.classes = list(classes)
        self.transform = transform
        self.source = source
        self.ignore_index = IGNORE_INDEX
        self._lut = _lookup_table(label_map or {})
        self._check_sizes()

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image(self, index: int) -> Image.Image:
        return load_image(self.pairs[index][0])

    def mask(self, index: int) -> np.ndarray:
        """The ``index``-th mask as ``int64`` class indices (ignore = 255), values checked."""
        path = self.pairs[index][1]
        raw = np.asarray(load_mask(path))
        mask = self._lut[raw].astype(np.int64)
        bad = (mask >= self.num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            values = sorted({int(v) for v in raw[bad][:1000]})
            raise VitedgeError(f"mask {path} holds label value(s) {values[:5]} outside "
                               f"0..{self.num_classes - 1} (and the ignore value); it does not belong to "
                               f"this {self.num_classes}-class dataset — check the annotation folder")
        return mask

    def sample(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """The untransformed pair: RGB image and class-index mask."""
        return self.image(index), self.mask(index)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, mask = self.sample(index)
        if self.transform is not None:
            return self.transform(image, mask)
        return image, mask

    def _check_sizes(self) -> None:
        # PIL reads only the header here: cheap enough for every pair of a dataset.
        for image, mask in self.pairs:
            sizes = (_size(image), _size(mask))
            if sizes[0] != sizes[1]:
                raise VitedgeError(f"{self.source}: image {image} is {sizes[0][0]}×{sizes[0][1]} but its "
                                   f"mask {mask} is {sizes[1][0]}×{sizes[1][1]}; a mask must have its "
                                   "image's size — re-export the annotation")


def load_mask(path: str | os.PathLike) -> Image.Image:
    """A single-channel mask file (``L`` or ``P`` mode, palette indices kept), decoded now."""
    if not Path(path).is_file():
        raise VitedgeError(f"mask {path} does not exist; check the annotation folder")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "P", "I;16"):
                raise VitedgeError(f"mask {path} is a {img.mode} image; a mask holds one class index "
                                   "per pixel (mode L or P) — pass the label-index PNGs, not colour ones")
            return img.copy()
    except VitedgeError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise VitedgeError(f"cannot read mask {path}: {type(err).__name__}; is it a valid PNG?") from err


def _size(path: str) -> tuple[int, int]:
    if not Path(path).is_file():
        raise VitedgeError(f"{path} does not exist; check the dataset folder")
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError, SyntaxError) as err:
        raise VitedgeError(f"cannot read {path}: {type(err).__name__}; is it a valid image file?") from err


def _lookup_table(label_map: Mapping[int, int]) -> np.ndarray:
    table = np.arange(1 << 16, dtype=np.int64)
    for stored, label in label_map.items():
        table[stored] = label
    return table


# ---- layouts -----------------------------------------------------------------------------------

CAMVID_SPLITS = ("train", "val", "test", "trainval")


def camvid(root: str | os.PathLike, split: str = "train", *,
           transform: JointTransform | None = None) -> SegmentationDataset:
    """CamVid, SegNet's 11-class version: ``[CamVid/]{train,val,test}/*.png`` with masks of the same
    name under ``{split}annot/`` (0-10 classes, 11 unlabelled). ``split`` may be ``"trainval"``."""
    if split not in CAMVID_SPLITS:
        raise VitedgeError(f"CamVid split must be one of {', '.join(CAMVID_SPLITS)}, not {split!r}")
    base = Path(root)
    if not (base / "train").is_dir() and (base / "CamVid").is_dir():
        base = base / "CamVid"
    pairs: list[tuple[str, str]] = []
    for part in (("train", "val") if split == "trainval" else (split,)):
        images, masks = base / part, base / f"{part}annot"
        if not images.is_dir() or not masks.is_dir():
            raise VitedgeError(f"{root} is not a CamVid folder: {images} or {masks} is missing; extract "
                               "camvid-segnet.tar.gz and pass the folder that holds CamVid/")
        pairs += _pair_by_name(sorted(images.glob("*.png")), lambda p, m=masks: m / p.name, str(images))
    return SegmentationDataset(pairs, CAMVID_CLASSES, transform=transform, label_map={11: IGNORE_INDEX},
                               source=f"CamVid {split}")


def cityscapes(root: str | os.PathLike, split: str = "train", *,
               transform: JointTransform | None = None) -> SegmentationDataset:
    """Cityscapes: ``leftImg8bit/{split}/<city>/*_leftImg8bit.png`` with
    ``gtFine/{split}/<city>/*_gtFine_labelTrainIds.png`` (19 classes, 255 ignored); where only the
    ``*_labelIds.png`` files exist they are mapped to train ids here, as cityscapesScripts would."""
    if split not in ("train", "val", "test"):
        raise VitedgeError(f"Cityscapes split must be train, val or test, not {split!r}")
    images, labels = Path(root) / "leftImg8bit" / split, Path(root) / "gtFine" / split
    if not images.is_dir() or not labels.is_dir():
        raise VitedgeError(f"{root} is not a Cityscapes folder: {images} or {labels} is missing")
    files = sorted(images.rglob("*_leftImg8bit.png"))
    train_ids = any(labels.rglob("*_gtFine_labelTrainIds.png"))
    suffix = "_gtFine_labelTrainIds.png" if train_ids else "_gtFine_labelIds.png"

    def mask_of(path: Path) -> Path:
        return labels / path.parent.name / path.name.replace("_leftImg8bit.png", suffix)

    pairs = _pair_by_name(files, mask_of, str(images))
    label_map = None if train_ids else {i: CITYSCAPES_ID_TO_TRAIN_ID.get(i, IGNORE_INDEX) for i in range(256)}
    return SegmentationDataset(pairs, CITYSCAPES_CLASSES, transform=transform, label_map=label_map,
                               source=f"Cityscapes {split}")


def _pair_by_name(images: Sequence[Path], mask_of: Callable[[Path], Path],
                  where: str) -> list[tuple[str, str]]:
    pairs = [(str(p), str(mask_of(p))) for p in images]
    missing = [Path(image).name for image, mask in pairs if not Path(mask).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (", …" if len(missing) > 3 else "")
        raise VitedgeError(f"{where}: {len(missing)} image(s) have no mask ({shown}); every image needs "
                           f"its annotation, e.g. {pairs[0][1]}")
    return pairs


def first_frames(dataset: SegmentationDataset, limit: int | None) -> torch.utils.data.Dataset:
    """The first ``limit`` pairs (a quick run), keeping ``classes``; the dataset itself if smaller."""
    if limit is None or limit >= len(dataset):
        return dataset
    subset = torch.utils.data.Subset(dataset, range(limit))
    subset.classes = dataset.classes
    return subset


SEG_DATASETS: dict[str, Callable[..., SegmentationDataset]] = {"camvid": camvid, "cityscapes": cityscapes}


def build_seg_dataset(name: str, root: str | os.PathLike, split: str = "train", *,
                      transform: JointTransform | None = None) -> SegmentationDataset:
    """A segmentation split by layout name (``camvid``, ``cityscapes``) and folder."""
    key = str(name).lower()
    if key not in SEG_DATASETS:
        raise VitedgeError(f"unknown segmentation dataset {name!r}; choose one of {', '.join(SEG_DATASETS)}")
    if root is None or not Path(root).is_dir():
        raise VitedgeError(f"the {key} folder {root} does not exist; pass --data-dir")
    return SEG_DATASETS[key](root, split, transform=transform)


# ---- joint transforms ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SegTrainTransform:
    """Random rescale (image bilinear, mask nearest), pad, random ``crop`` (h, w) and horizontal flip.

    ``scale`` multiplies the image's size (official EfficientViT-seg trains with 0.5-2.0 of its base
    size). Padding is 0 in the normalized image and ignore in the mask, so it costs no false labels.
    Returns ``(image tensor (3, h, w), mask tensor (h, w) int64)``.
    """

    crop: tuple[int, int]
    scale: tuple[float, float] = (0.5, 2.0)
    hflip: float = 0.5
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        _check_hw(self.crop, "crop")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise VitedgeError(f"scale must satisfy 0 < min <= max, got {self.scale}")
        if not 0 <= self.hflip <= 1:
            raise VitedgeError(f"hflip is a probability in [0, 1], got {self.hflip}")

    def __call__(self, image: Image.Image, mask: np.ndarray,
                 rng: random.Random | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        rng = rng if rng is not None else random
        factor = rng.uniform(*self.scale)
        size = (max(1, round(image.size[0] * factor)), max(1, round(image.size[1] * factor)))
        image = image.resize(size, Image.BILINEAR)
        label = Image.fromarray(mask.astype(np.uint8)).resize(size, Image.NEAREST)
        x = normalize(to_tensor(image), self.mean, self.std)
        y = torch.from_numpy(np.asarray(label, dtype=np.int64).copy())
        h, w = self.crop
        pad_h, pad_w = max(0, h - y.shape[0]), max(0, w - y.shape[1])
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)
            y = F.pad(y, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top, left = rng.randint(0, y.shape[0] - h), rng.randint(0, y.shape[1] - w)
        x, y = x[:, top:top + h, left:left + w], y[top:top + h, left:left + w]
        if rng.random() < self.hflip:
            x, y = x.flip(-1), y.flip(-1)
        return x.contiguous(), y.contiguous()


@dataclass(frozen=True)
class SegEvalTransform:
    """Resize the image to ``size`` (h, w) — by default its own size with each side rounded to the
    nearest multiple of ``multiple`` (the backbone's stride; CamVid's 360×480 runs at 352×480) —
    and keep the mask at full resolution: predictions are resized to the label size before
    scoring, as the official evaluation does."""

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    multiple: int = 32

    def __post_init__(self) -> None:
        if self.size is not None:
            _check_hw(self.size, "size")
        _check_hw((self.multiple, self.multiple), "multiple")

    def __call__(self, image: Image.Image, mask: np.ndarray,
                 rng: random.Random | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.multiple
        height, width = self.size or tuple(max(m, m * round(side / m)) for side in image.size[::-1])
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        return normalize(to_tensor(image), self.mean, self.std), torch.from_numpy(mask)


def _check_hw(value: Any, what: str) -> None:
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))
    if not ok:
        raise VitedgeError(f"{what} must be (height, width) in positive pixels, got {value!r}")
