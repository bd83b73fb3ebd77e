"""Image transforms on PIL and torch alone: training augmentation and evaluation preprocessing.

The evaluation transform is timm's (resize the shorter side to ``floor(size / crop_pct)`` with
the model's interpolation, centre-crop ``size``, scale to [0, 1], normalize), written with the
same PIL calls, so accuracy measured here is the accuracy timm would measure. The training
transform draws all its randomness from an explicit ``random.Random``, which lets the trainer make
every augmentation a pure function of (seed, epoch, sample) — the basis of bit-identical resume.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from vitedge.errors import VitedgeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                  "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}


def to_tensor(img: Image.Image) -> torch.Tensor:
    """``(C, H, W)`` float32 in [0, 1], exactly as torchvision's ``ToTensor`` computes it."""
    array = np.array(img, dtype=np.uint8, copy=True)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().to(torch.float32).div(255)


def normalize(tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(tensor - mean) / std`` per channel, in place, as torchvision's ``Normalize`` does."""
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=tensor.dtype).view(-1, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to ``floor(size / crop_pct)``, centre-crop ``size``, normalize.

    Example::

        t = EvalTransform(64, crop_pct=0.95, interpolation="bicubic")
        x = t(Image.open("cat.jpg").convert("RGB"))  # (3, 64, 64) float tensor
    """

    size: int
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        _check_size(self.size)
        _interpolation(self.interpolation)
        if not 0 < self.crop_pct <= 4:
            raise VitedgeError(f"crop_pct must be in (0, 4], got {self.crop_pct}")

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = resize_shorter(img, math.floor(self.size / self.crop_pct), self.interpolation)
        return normalize(to_tensor(center_crop(img, self.size)), self.mean, self.std)


@dataclass(frozen=True)
class TrainTransform:
    """Random resized crop, horizontal flip and optional RandAugment-lite, then normalize.

    ``scale`` bounds the crop's share of the image area and ``ratio`` its aspect ratio (timm and
    torchvision semantics). ``randaug_ops`` > 0 applies that many photometric/geometric ops per
    image at ``randaug_magnitude`` (0–10). Call with ``rng`` to make the result reproducible;
    without one, Python's global ``random`` is used.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    randaug_ops: int = 0
    randaug_magnitude: float = 9.0

    def __post_init__(self) -> None:
        _check_size(self.size)
        _interpolation(self.interpolation)
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise VitedgeError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise VitedgeError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        if not 0 <= self.hflip <= 1:
            raise VitedgeError(f"hflip is a probability in [0, 1], got {self.hflip}")
        if self.randaug_ops < 0 or not 0 <= self.randaug_magnitude <= 10:
            raise VitedgeError("randaug_ops must be >= 0 and randaug_magnitude in [0, 10], got "
                               f"{self.randaug_ops} and {self.randaug_magnitude}")

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        rng = rng if rng is not None else random  # the module offers the same methods
        left, top, width, height = random_resized_crop_box(img.size, self.scale, self.ratio, rng)
        img = img.resize((self.size, self.size), _interpolation(self.interpolation),
                         box=(left, top, left + width, top + height))
        if rng.random() < self.hflip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        for _ in range(self.randaug_ops):
            img = _randaug_op(img, rng.choice(_RANDAUG_OPS), self.randaug_magnitude / 10, rng)
        return normalize(to_tensor(img), self.mean, self.std)


def eval_transform(size: int, data_config: Mapping[str, Any] | None = None, *,
                   crop_pct: float | None = None, interpolation: str | None = None) -> EvalTransform:
    """The evaluation transform for a model's ``data_config`` (mean, std, crop_pct, interpolation)
    at ``size``; explicit ``crop_pct`` / ``interpolation`` override the config."""
    cfg = dict(data_config or {})
    return EvalTransform(size, crop_pct=crop_pct or cfg.get("crop_pct", 0.875),
                         interpolation=interpolation or cfg.get("interpolation", "bicubic"),
                         mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)))


def resize_shorter(img: Image.Image, size: int, interpolation: str) -> Image.Image:
    """Scale so the shorter side is ``size`` (the longer side rounds down, as torchvision's)."""
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new = (new_short, new_long) if width <= height else (new_long, new_short)
    return img if new == img.size else img.resize(new, _interpolation(interpolation))


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The centred ``size``×``size`` crop; a smaller image is zero-padded first (torchvision's rule)."""
    width, height = img.size
    if width < size or height < size:
        canvas = Image.new(img.mode, (max(width, size), max(height, size)))
        canvas.paste(img, ((max(width, size) - width) // 2, (max(height, size) - height) // 2))
        img, (width, height) = canvas, canvas.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def random_resized_crop_box(image_size: tuple[int, int], scale: tuple[float, float],
                            ratio: tuple[float, float], rng: random.Random) -> tuple[int, int, int, int]:
    """``(left, top, width, height)`` of a random crop, sampled as torchvision's RandomResizedCrop."""
    width, height = image_size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    # Fallback: the largest centred crop within the ratio bounds.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


# RandAugment-lite: the usual ops at one shared magnitude m in [0, 1]; geometric ops pick a sign.
_RANDAUG_OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize",
                "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")


def _randaug_op(img: Image.Image, op: str, m: float, rng: random.Random) -> Image.Image:
    sign = 1 if rng.random() < 0.5 else -1
    fill = (128, 128, 128)
    if op == "identity":
        return img
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "rotate":
        return img.rotate(sign * 30 * m, resample=Image.BILINEAR, fillcolor=fill)
    if op == "solarize":
        return ImageOps.solarize(img, int(256 - 256 * m))
    if op == "posterize":
        return ImageOps.posterize(img, max(1, int(8 - 4 * m)))
    if op in ("color", "contrast", "brightness", "sharpness"):
        enhancer = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
                    "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}[op]
        return enhancer(img).enhance(1 + sign * 0.9 * m)
    if op in ("shear_x", "shear_y"):
        s = sign * 0.3 * m
        matrix = (1, s, 0, 0, 1, 0) if op == "shear_x" else (1, 0, 0, s, 1, 0)
        return img.transform(img.size, Image.AFFINE, matrix, resample=Image.BILINEAR, fillcolor=fill)
    dx = sign * 0.45 * m * img.size[0] if op == "translate_x" else 0
    dy = sign * 0.45 * m * img.size[1] if op == "translate_y" else 0
    return img.transform(img.size, Image.AFFINE, (1, 0, dx, 0, 1, dy), resample=Image.BILINEAR,
                         fillcolor=fill)


def _interpolation(name: str) -> int:
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise VitedgeError(f"unknown interpolation {name!r}; choose one of "
                           f"{', '.join(INTERPOLATIONS)}") from None


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise VitedgeError(f"image size must be a positive integer, got {size!r}")
