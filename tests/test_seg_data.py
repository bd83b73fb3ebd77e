"""Segmentation data: CamVid and Cityscapes layouts, pairing/size/label checks, joint transforms."""

from __future__ import annotations

import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATASETS
from PIL import Image

from vitedge.data.segmentation import (
    CAMVID_CLASSES,
    IGNORE_INDEX,
    SegEvalTransform,
    SegTrainTransform,
    build_seg_dataset,
)
from vitedge.errors import VitedgeError


def _write_pair(image_path: Path, mask_path: Path, mask: np.ndarray,
                image_size: tuple[int, int] | None = None) -> None:
    h, w = mask.shape
    width, height = image_size or (w, h)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = 40 * (np.arange(width) % 7)[None, :]  # a horizontal pattern to follow through flips
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(image_path)
    Image.fromarray(mask.astype(np.uint8), mode="L").save(mask_path)


def _camvid(root: Path, n: int = 2, split: str = "train", value: int = 3) -> Path:
    base = root / "CamVid"
    for i in range(n):
        mask = np.full((12, 16), value, np.uint8)
        mask[:, :4] = 11  # unlabelled
        _write_pair(base / split / f"f{i}.png", base / f"{split}annot" / f"f{i}.png", mask)
    return root


def test_camvid_pairs_and_ignore_mapping(tmp_path):
    _camvid(tmp_path, n=3)
    _camvid(tmp_path, n=1, split="val")
    data = build_seg_dataset("camvid", tmp_path, "train")
    assert len(data) == 3 and data.classes == list(CAMVID_CLASSES) and data.num_classes == 11
    image, mask = data[0]
    assert image.size == (16, 12) and mask.dtype == np.int64 and mask.shape == (12, 16)
    assert (mask[:, :4] == IGNORE_INDEX).all() and (mask[:, 4:] == 3).all()
    assert len(build_seg_dataset("camvid", tmp_path / "CamVid", "trainval")) == 4  # CamVid/ itself also works


def test_missing_mask_is_a_clear_error(tmp_path):
    _camvid(tmp_path, n=2)
    (tmp_path / "CamVid" / "trainannot" / "f1.png").unlink()
    with pytest.raises(VitedgeError, match=r"1 image\(s\) have no mask \(f1.png\)"):
        build_seg_dataset("camvid", tmp_path, "train")


def test_mask_size_differing_from_image_is_a_clear_error(tmp_path):
    base = tmp_path / "CamVid"
    _write_pair(base / "train" / "a.png", base / "trainannot" / "a.png", np.zeros((12, 16)),
                image_size=(20, 12))
    with pytest.raises(VitedgeError, match=r"is 20×12 but its mask .* is 16×12"):
        build_seg_dataset("camvid", tmp_path, "train")


def test_label_outside_range_is_a_clear_error(tmp_path):
    _camvid(tmp_path, n=1, value=12)  # 12 is neither a CamVid class (0-10) nor its unlabelled value (11)
    data = build_seg_dataset("camvid", tmp_path, "train")
    with pytest.raises(VitedgeError, match=r"label value\(s\) \[12\] outside 0..10"):
        data[0]


def test_colour_mask_is_refused(tmp_path):
    _camvid(tmp_path, n=1)
    Image.new("RGB", (16, 12)).save(tmp_path / "CamVid" / "trainannot" / "f0.png")
    with pytest.raises(VitedgeError, match="mode L or P"):
        build_seg_dataset("camvid", tmp_path, "train")[0]


def test_bad_names_and_folders(tmp_path):
    with pytest.raises(VitedgeError, match="unknown segmentation dataset 'kitti'"):
        build_seg_dataset("kitti", tmp_path)
    with pytest.raises(VitedgeError, match="is not a CamVid folder"):
        build_seg_dataset("camvid", tmp_path, "train")
    with pytest.raises(VitedgeError, match="split must be one of"):
        build_seg_dataset("camvid", tmp_path, "validation")
    with pytest.raises(VitedgeError, match="does not exist"):
        build_seg_dataset("camvid", tmp_path / "nowhere")


@pytest.mark.parametrize("train_ids", [True, False])
def test_cityscapes_layout(tmp_path, train_ids):
    stem = "aachen_000000_000019"
    image = tmp_path / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png"
    suffix = "labelTrainIds" if train_ids else "labelIds"
    mask_file = tmp_path / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_{suffix}.png"
    stored = np.array([[7, 26, 33, 0]] * 4) if not train_ids else np.array([[0, 13, 18, 255]] * 4)
    _write_pair(image, mask_file, stored)
    data = build_seg_dataset("cityscapes", tmp_path, "val")
    assert data.num_classes == 19
    # label ids 7 road, 26 car, 33 bicycle, 0 unlabelled -> train ids 0, 13, 18, ignore
    assert data.mask(0)[0].tolist() == [0, 13, 18, IGNORE_INDEX]


def test_train_transform_moves_image_and_mask_together(tmp_path):
    _camvid(tmp_path, n=1)
    img, mask = build_seg_dataset("camvid", tmp_path, "train").sample(0)
    mask = (np.arange(16)[None, :] % 7 == 3).astype(np.int64).repeat(12, 0)  # class 1 where red = 120
    transform = SegTrainTransform(crop=(20, 24), scale=(1.0, 1.0), hflip=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    x, y = transform(img, mask, random.Random(0))
    assert x.shape == (3, 20, 24) and y.shape == (20, 24) and y.dtype == torch.int64
    valid = y != IGNORE_INDEX
    assert valid.sum() == 12 * 16  # padding to the crop is ignored, the image itself is kept whole
    red = (x[0] * 255).round().to(torch.int64)
    assert torch.equal(red[valid] == 120, y[valid] == 1)  # the flip moved both alike
    assert (x[:, ~valid] == 0).all()


def test_train_transform_is_a_function_of_its_rng(tmp_path):
    _camvid(tmp_path, n=1)
    img, mask = build_seg_dataset("camvid", tmp_path, "train").sample(0)
    transform = SegTrainTransform(crop=(8, 8), scale=(0.5, 2.0))
    a = transform(img, mask, random.Random(3))
    b = transform(img, mask, random.Random(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert set(a[1].unique().tolist()) <= {3, IGNORE_INDEX}  # nearest resampling invents no labels
    # Another seed, another draw. Every pixel and label of this pair is unique to its position, so
    # any other scale, crop offset or flip changes the result: 10 seeds give 10 distinct pairs
    # (a transform ignoring its rng gives 1; one drawing only the flip, 2).
    rows, cols = np.mgrid[0:12, 0:16]
    unique = Image.fromarray(np.stack([rows * 16 + cols, 255 - rows * 16 - cols, cols * 8], -1).astype(np.uint8))
    labels = (rows * 16 + cols).astype(np.int64)
    results = [transform(unique, labels, random.Random(seed)) for seed in range(10)]
    assert len({x.numpy().tobytes() for x, _ in results}) == 10
    assert len({y.numpy().tobytes() for _, y in results}) == 10  # the mask follows the draw too


def test_eval_transform_keeps_the_label_resolution(tmp_path):
    _camvid(tmp_path, n=1)
    data = build_seg_dataset("camvid", tmp_path, "train", transform=SegEvalTransform((32, 64)))
    x, y = data[0]
    assert x.shape == (3, 32, 64) and y.shape == (12, 16)


@pytest.mark.parametrize("bad", [(0, 8), (8,), (8.0, 8), None])
def test_bad_crop_sizes(bad):
    with pytest.raises(VitedgeError, match=r"\(height, width\)"):
        SegTrainTransform(crop=bad)


# The real archive (SegNet's 11-class CamVid): a few pairs streamed out of it, never extracted whole.
CAMVID_TARBALL = SHARED_DATASETS / "camvid-segnet.tar.gz"
CAMVID_PAIRS = 3
# The archive's class list (its README: 0 Sky ... 10 Bicyclist; 11 Unlabelled = ignore).
CAMVID_NAMES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                "pedestrian", "bicyclist"]


@pytest.fixture(scope="module")
def camvid_real(tmp_path_factory) -> Path:
    """``CamVid/train/`` and ``CamVid/trainannot/`` with the first few real pairs of the archive."""
    if not CAMVID_TARBALL.is_file():
        pytest.skip(f"{CAMVID_TARBALL} is absent (the shared CamVid archive is needed)")
    root = tmp_path_factory.mktemp("camvid")
    names: dict[str, set[str]] = {"train": set(), "trainannot": set()}
    with tarfile.open(CAMVID_TARBALL, "r:gz") as tar:
        for member in tar:  # sequential: stops as soon as both halves of the pairs are out
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[1] not in names:
                continue
            side, other = names[parts[1]], names["train" if parts[1] == "trainannot" else "trainannot"]
            # The first pairs found: a name is taken while there is room, or when the other half has it.
            if parts[2] in other or (len(side) < CAMVID_PAIRS and len(other) < CAMVID_PAIRS):
                side.add(parts[2])
                tar.extract(member, root, filter="data")
            if len(names["train"]) == len(names["trainannot"]) == CAMVID_PAIRS and \
                    names["train"] == names["trainannot"]:
                break
    assert names["train"] == names["trainannot"] and len(names["train"]) == CAMVID_PAIRS, names
    return root


def test_real_camvid_pairs(camvid_real):
    data = build_seg_dataset("camvid", camvid_real, "train")
    assert len(data) == CAMVID_PAIRS
    assert data.classes == CAMVID_NAMES and data.num_classes == 11
    seen = set()
    for i in range(len(data)):
        image, mask = data.sample(i)
        assert image.mode == "RGB" and image.size == (480, 360)
        assert mask.dtype == np.int64 and mask.shape == (360, 480)
        raw = np.asarray(Image.open(data.pairs[i][1]))
        assert raw.shape == (360, 480) and set(np.unique(raw).tolist()) <= set(range(12))
        # 0-10 are kept, 11 (Unlabelled) becomes the ignore index, and nothing else appears.
        np.testing.assert_array_equal(mask, np.where(raw == 11, IGNORE_INDEX, raw))
        seen |= set(np.unique(mask).tolist())
    assert seen <= set(range(11)) | {IGNORE_INDEX}
    assert {0, 1, 3} <= seen  # these street frames show sky, building and road
