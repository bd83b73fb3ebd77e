"""CIFAR-10 in either standard layout: the canonical python batches or an image folder.

The python-batch files (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``,
``batches.meta``) are pickles. Unpickling can run arbitrary code, so they are read with a
restricted unpickler that only rebuilds dicts, lists, strings, bytes, numbers and numpy arrays
(the only things CIFAR holds); any other object in the file is refused with an error rather than
constructed. The image-folder layout (``train/<class>/*.jpg``, ``test/<class>/*.jpg``, e.g. the
JPEG copy ``cifar10-jpeg.tar.gz`` extracted somewhere) is read by :class:`ImageFolder` with the
canonical class order, so labels mean the same in both layouts.
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

from vitedge.data.base import ArrayDataset, ImageDataset, Transform
from vitedge.data.folder import ImageFolder, find_split_dir
from vitedge.errors import VitedgeError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCH_DIR = "cifar-10-batches-py"
_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 pickles of bytes (protocol < 3) go through codecs.encode(text, "latin1").
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return codecs.encode(text, encoding, errors)


# Everything a CIFAR pickle needs, written by Python 2 or 3, numpy 1 or 2; nothing else resolves.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def read_python_batch(path: str | os.PathLike) -> dict[str, Any]:
    """One CIFAR python-batch pickle as a dict with ``str`` keys, read without running code.

    Only dicts, lists, str, bytes, numbers and numpy arrays can be rebuilt; a file that asks for
    anything else (a class, a function) raises :class:`VitedgeError` instead of being executed.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            # encoding="bytes" keeps Python 2 strings (the original files) as bytes.
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise VitedgeError(f"{path} was not loaded: {err}; a CIFAR batch holds only dicts, lists and "
                           "numpy arrays, so this file is not a genuine CIFAR batch") from err
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
        raise VitedgeError(f"cannot read {path}: the file is truncated or not a CIFAR python batch "
                           f"({type(err).__name__}: {str(err)[:100]}); re-extract the dataset") from err
    if not isinstance(obj, dict):
        raise VitedgeError(f"{path} holds a {type(obj).__name__}, not the dict of a CIFAR batch")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def cifar10_python(root: str | os.PathLike, split: str = "train", *,
                   transform: Transform | None = None) -> ArrayDataset:
    """CIFAR-10 from the canonical python batches under ``root`` (or ``root/cifar-10-batches-py``)."""
    folder = _batch_dir(Path(root))
    if folder is None:
        raise VitedgeError(f"{root} holds no CIFAR-10 python batches; expected {BATCH_DIR}/data_batch_1")
    classes = CLASSES
    if (folder / "batches.meta").is_file():
        names = read_python_batch(folder / "batches.meta").get("label_names")
        if not isinstance(names, list) or not names:
            raise VitedgeError(f"{folder / 'batches.meta'} has no label_names list; re-extract the dataset")
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    images, labels = [], []
    for name in _BATCHES[split]:
        if not (folder / name).is_file():
            raise VitedgeError(f"CIFAR-10 batch {folder / name} is missing; re-extract "
                               "cifar-10-python.tar.gz (all of data_batch_1..5, test_batch)")
        batch = read_python_batch(folder / name)
        data, batch_labels = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3072,):
            raise VitedgeError(f"{folder / name}: 'data' must be a uint8 array of shape (N, 3072)")
        if batch_labels is None:
            raise VitedgeError(f"{folder / name}: no 'labels' entry; is this a CIFAR-100 file?")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # rows are CHW planes
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return ArrayDataset(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), classes,
                        transform=transform, source=f"CIFAR-10 {split} ({folder})")


def cifar10(root: str | os.PathLike | None, split: str = "train", *, transform: Transform | None = None,
            strict: bool = False) -> ImageDataset:
    """CIFAR-10 ``split`` from ``root``, whichever standard layout it is in.

    ``root`` holds either the python batches (directly or in ``cifar-10-batches-py/``) or the
    image folders ``train/<class>/`` and ``test/<class>/`` (the extracted ``cifar10-jpeg.tar.gz``).
    """
    if split not in _BATCHES:
        raise VitedgeError(f"CIFAR-10 has splits 'train' and 'test', not {split!r}")
    if root is None:
        raise VitedgeError("CIFAR-10 needs --data-dir: a folder with cifar-10-batches-py/ (the python "
                           "version) or train/<class>/ and test/<class>/ images (e.g. cifar10-jpeg.tar.gz "
                           "extracted there)")
    root = Path(root)
    if not root.is_dir():
        raise VitedgeError(f"CIFAR-10 folder {root} does not exist; check --data-dir")
    if _batch_dir(root) is not None:
        return cifar10_python(root, split, transform=transform)
    if find_split_dir(root, split) is not None:
        # 32x32 images: decode once into memory rather than every epoch.
        return ImageFolder(find_split_dir(root, split), classes=CLASSES, transform=transform, strict=strict,
                           cache=True)
    raise VitedgeError(f"{root} holds neither CIFAR-10 python batches ({BATCH_DIR}/data_batch_1) nor "
                       f"image folders ({split}/<class>/*.jpg); point --data-dir at the extracted dataset")


def _batch_dir(root: Path) -> Path | None:
    for folder in (root / BATCH_DIR, root):
        if (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file():
            return folder
    return None
