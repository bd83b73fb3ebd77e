"""Transforms: the evaluation transform matches timm's on real images; training augmentation is
reproducible from its seed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from vitedge.data import build_dataset
from vitedge.data.transforms import EvalTransform, TrainTransform, random_resized_crop_box
from vitedge.errors import VitedgeError

SETTINGS = [(64, 0.95, "bicubic"), (64, 0.875, "bilinear"), (96, 1.0, "bicubic"), (32, 0.9, "bicubic"),
            (224, 0.95, "bicubic")]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def timm_eval(size: int, crop_pct: float, interpolation: str):
    timm_data = pytest.importorskip("timm.data")
    return timm_data.create_transform(input_size=(3, size, size), is_training=False, crop_pct=crop_pct,
                                      interpolation=interpolation, mean=MEAN, std=STD)


def real_images(cifar_jpeg, fashion_test):
    cifar = build_dataset("cifar10", root=cifar_jpeg, split="test")
    images = [cifar.image(i) for i in range(0, 100, 10)] + [fashion_test.image(i) for i in range(10)]
    # Non-square versions exercise the shorter-side rule.
    return images + [images[0].resize((48, 32)), images[-1].resize((28, 45))]


@pytest.mark.parametrize("size,crop_pct,interpolation", SETTINGS)
def test_eval_transform_matches_timm(cifar_jpeg, fashion_test, size, crop_pct, interpolation):
    ours = EvalTransform(size, crop_pct=crop_pct, interpolation=interpolation, mean=MEAN, std=STD)
    theirs = timm_eval(size, crop_pct, interpolation)
    std = torch.tensor(STD).view(3, 1, 1)
    for img in real_images(cifar_jpeg, fashion_test):
        a, b = ours(img), theirs(img)
        assert a.shape == b.shape == (3, size, size)
        # Compare in pixel units: normalised difference times std.
        assert ((a - b).abs() * std).max() <= 1 / 255 + 1e-6


def test_train_transform_is_a_function_of_its_seed(cifar_jpeg):
    img = build_dataset("cifar10", root=cifar_jpeg, split="test").image(3)
    t = TrainTransform(48, scale=(0.3, 1.0), randaug_ops=2, randaug_magnitude=5)
    a, b = t(img, random.Random(7)), t(img, random.Random(7))
    assert a.shape == (3, 48, 48) and torch.equal(a, b)
    assert not torch.equal(a, t(img, random.Random(8)))


def test_train_transform_crop_stays_inside_the_image(cifar_jpeg):
    img = build_dataset("cifar10", root=cifar_jpeg, split="test").image(0)
    t = TrainTransform(32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    # Full-area crop at the image's own size, no flip: the image itself.
    expected = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255
    assert torch.equal(t(img, random.Random(0)), expected)


def test_train_transform_crops_the_sampled_box(cifar_jpeg):
    """A quarter-area square crop of a 32 px image, resized to its own 16 px: exactly the pixels of
    the box that ``random_resized_crop_box`` samples, and the box takes every position inside."""
    img = build_dataset("cifar10", root=cifar_jpeg, split="test").image(0)
    pixels = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255
    t = TrainTransform(16, scale=(0.25, 0.25), ratio=(1.0, 1.0), hflip=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    corners = set()
    for seed in range(300):
        left, top, width, height = random_resized_crop_box(img.size, t.scale, t.ratio, random.Random(seed))
        assert (width, height) == (16, 16) and 0 <= left <= 16 and 0 <= top <= 16
        corners.add((left, top))
        if seed < 5:
            crop = pixels[:, top:top + 16, left:left + 16]
            assert torch.allclose(t(img, random.Random(seed)), crop, atol=1 / 255), seed
    lefts, tops = {c[0] for c in corners}, {c[1] for c in corners}
    assert lefts == tops == set(range(17)), "every offset from 0 to 32 - 16 is reachable"


@pytest.mark.parametrize("kwargs,match", [({"interpolation": "cubic"}, "unknown interpolation"),
                                          ({"scale": (0.5, 0.1)}, "scale must"),
                                          ({"hflip": 2.0}, "probability")])
def test_bad_transform_settings(kwargs, match):
    with pytest.raises(VitedgeError, match=match):
        TrainTransform(32, **kwargs)
