"""Fashion-MNIST read straight from its IDX files (gzipped or not): no download, no torchvision.

The default location is where the Debian package ``dataset-fashion-mnist`` installs the files,
so the embedded default dataset works out of the box on a machine set up by ``make setup``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from vitedge.data.base import ArrayDataset, Transform
from vitedge.errors import VitedgeError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_PREFIX = {"train": "train", "test": "t10k"}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def fashion_mnist(root: str | os.PathLike | None = None, split: str = "train", *,
                  transform: Transform | None = None) -> ArrayDataset:
    """The Fashion-MNIST ``split`` ("train": 60,000 images, "test": 10,000), 28×28, 10 classes.

    ``root`` is a folder holding ``train-images-idx3-ubyte.gz`` and friends (``.gz`` optional);
    it defaults to the Debian package's ``/usr/share/datasets/fashion-mnist``.
    """
    if split not in _PREFIX:
        raise VitedgeError(f"Fashion-MNIST has splits 'train' and 'test', not {split!r}")
    root = Path(root) if root is not None else DEFAULT_ROOT
    prefix = _PREFIX[split]
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1:
        raise VitedgeError(f"{root}: the Fashion-MNIST files have shapes {images.shape} and "
                           f"{labels.shape}, expected (N, 28, 28) images and (N,) labels")
    return ArrayDataset(images, labels, CLASSES, transform=transform,
                        source=f"Fashion-MNIST {split} ({root})")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST family's format), gzipped or plain, into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise VitedgeError(f"cannot read {path}: {err}; the file is truncated or not gzip — "
                           "reinstall the dataset") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise VitedgeError(f"{path} is not an IDX file (bad magic number); reinstall the dataset")
    dtype, ndim = np.dtype(_IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise VitedgeError(f"{path}: IDX header announces shape {shape} ({expected} bytes) but the "
                           f"file holds {len(data)} bytes; the file is truncated — reinstall the dataset")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    if not root.is_dir():
        hint = ("install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
                if root == DEFAULT_ROOT else "check --data-dir")
        raise VitedgeError(f"Fashion-MNIST folder {root} does not exist; {hint}, or pass --data-dir "
                           "pointing to a folder with the IDX files")
    raise VitedgeError(f"Fashion-MNIST file {stem}.gz is missing from {root}; expected "
                       "train-/t10k-images-idx3-ubyte.gz and train-/t10k-labels-idx1-ubyte.gz there")
