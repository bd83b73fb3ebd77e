"""Image folders: ``root/<class>/<image>``, the layout of ImageNet train/val and most custom sets.

Class names are the sub-folder names, sorted, unless the caller fixes the list (a checkpoint's
classes, CIFAR-10's canonical order) — then a folder outside the list is an error rather than a
silently shifted label. Unreadable images are skipped with one counted warning, or raise under
``strict=True``, so one bad file neither kills a long run nor passes unnoticed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vitedge.data.base import ImageDataset, Transform, check_targets, to_rgb
from vitedge.errors import VitedgeError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm",
                              ".tif", ".tiff", ".webp", ".gif"})
# The folder names a split goes by, first match wins: ImageNet calls its test split "val".
SPLIT_DIRS = {"train": ("train", "training"), "test": ("test", "val", "validation")}
_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


class DataWarning(UserWarning):
    """Something in the data was skipped; the message says what and how many."""


class ImageFolder(ImageDataset):
    """Images under ``root/<class>/`` (any depth below the class folder), labelled by folder.

    ``verify=True`` decodes every image once up front, so unreadable files are known (skipped or,
    with ``strict``, an error) before training starts; that costs a few seconds per 100k small
    images — pass ``verify=False`` for very large folders such as ImageNet, where an image that
    fails to decode later is skipped the same way (the next readable image takes its place, so
    batches keep their size) or raises under ``strict``. ``cache=True`` (implies ``verify``) keeps
    the decoded images in memory — right for small-image sets such as CIFAR (150 MB for 50k
    images), where decoding JPEGs every epoch would cost as much as a small model's step.

    Example::

        data = ImageFolder("cifar10/train", transform=eval_transform(64))
        img, label = data[0]; data.classes[label]
    """

    def __init__(self, root: str | os.PathLike, *, classes: Sequence[str] | None = None,
                 transform: Transform | None = None, strict: bool = False, verify: bool = True,
                 cache: bool = False) -> None:
        self.root = Path(root)
        self.transform = transform
        self.strict = strict
        self.skipped: list[tuple[str, str]] = []  # (path, reason) of every unreadable image
        found = class_dirs(self.root)
        self.classes = list(classes) if classes is not None else found
        index = {name: i for i, name in enumerate(self.classes)}
        outside = [name for name in found if name not in index]
        if outside:
            raise VitedgeError(f"{self.root}: class folder {outside[0]!r} is out of range of the "
                               f"{len(self.classes)} expected classes ({_few(self.classes)}); remove it or "
                               "use a model trained on these classes")
        samples = [(path, index[name]) for name in found for path in _images_in(self.root / name)]
        if not samples:
            raise VitedgeError(f"no images found in {self.root}: expected {self.root}/<class>/<image> "
                               f"with extensions {', '.join(sorted(IMAGE_EXTENSIONS))}")
        self._cache: list[np.ndarray] | None = [] if cache else None
        if verify or cache:
            samples = [(p, y) for p, y in samples if self._readable(p)]
            self._report_skipped(len(samples) + len(self.skipped))
            if not samples:
                raise VitedgeError(f"none of the images in {self.root} can be read; the files are corrupt")
        self.paths = [p for p, _ in samples]
        self.targets = check_targets(np.array([y for _, y in samples], dtype=np.int64),
                                     len(self.classes), str(self.root))

    def image(self, index: int) -> Image.Image:
        return self._load(index)[0]

    def __getitem__(self, index: int) -> tuple[object, int]:
        img, found = self._load(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[found])  # the label of the image actually returned

    def _load(self, index: int) -> tuple[Image.Image, int]:
        """The image at ``index`` or, if it cannot be read, the next readable one and its index."""
        for offset in range(len(self.paths)):
            found = (index + offset) % len(self.paths)
            if self._cache is not None:
                return Image.fromarray(self._cache[found]), found
            try:
                return _decode(self.paths[found]), found
            except _READ_ERRORS as err:
                self._fail(self.paths[found], err)
                warnings.warn(f"skipped unreadable image {self.paths[found]} ({_reason(err)}); the next "
                              "readable image is used in its place", DataWarning, stacklevel=3)
        raise VitedgeError(f"none of the images in {self.root} can be read; the files are corrupt")

    def _readable(self, path: str) -> bool:
        try:
            img = _decode(path)
            if self._cache is not None:
                self._cache.append(np.asarray(img))
            return True
        except _READ_ERRORS as err:
            self._fail(path, err)
            return False

    def _fail(self, path: str, err: BaseException) -> None:
        if self.strict:
            raise VitedgeError(f"cannot read image {path}: {_reason(err)}; remove or replace the file, "
                               "or drop --strict to skip unreadable images") from err
        self.skipped.append((path, _reason(err)))

    def _report_skipped(self, total: int) -> None:
        if self.skipped:
            first, reason = self.skipped[0]
            warnings.warn(f"skipped {len(self.skipped)} of {total} images in {self.root} that cannot be "
                          f"read (first: {first}: {reason}); pass strict=True (--strict) to make this "
                          "an error", DataWarning, stacklevel=3)


def class_dirs(root: Path) -> list[str]:
    """Sorted names of the class sub-folders of ``root``; a clear error if there are none."""
    if not root.is_dir():
        raise VitedgeError(f"dataset folder {root} does not exist; check the path (--data-dir / --data)")
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not names:
        loose = any(Path(e.name).suffix.lower() in IMAGE_EXTENSIONS for e in os.scandir(root))
        if loose:
            raise VitedgeError(f"{root} holds images but no class folders; put each class's images in "
                               f"its own sub-folder: {root}/<class>/<image>")
        raise VitedgeError(f"dataset folder {root} is empty; expected {root}/<class>/<image>")
    return names


def find_split_dir(root: Path, split: str) -> Path | None:
    """``root/train`` (or ``training``) for "train", ``root/test`` (or ``val``, ``validation``) for "test"."""
    if split not in SPLIT_DIRS:
        raise VitedgeError(f"split must be 'train' or 'test', not {split!r}")
    for name in SPLIT_DIRS[split]:
        if (root / name).is_dir():
            return root / name
    return None


def image_folder(root: str | os.PathLike, split: str = "train", *, classes: Sequence[str] | None = None,
                 transform: Transform | None = None, strict: bool = False, verify: bool = True,
                 cache: bool = False) -> ImageFolder:
    """The ``split`` of a folder dataset.

    ``root`` may hold split folders (``train/``, ``test/`` or ``val/``, each ``<class>/<image>``):
    the split's folder is used and the class list is the union over all split folders, so a class
    missing from one split cannot shift the labels of the others. Otherwise ``root`` itself is
    the dataset, whatever the split (point it at ``imagenet/val`` to evaluate on it).
    """
    root = Path(root)
    if not root.is_dir():
        raise VitedgeError(f"dataset folder {root} does not exist; check the path (--data / --data-dir)")
    folder = find_split_dir(root, split)
    if folder is None:
        return ImageFolder(root, classes=classes, transform=transform, strict=strict, verify=verify,
                           cache=cache)
    if classes is None:
        splits = {find_split_dir(root, s) for s in SPLIT_DIRS} - {None}
        classes = sorted({name for d in splits for name in class_dirs(d)})
    return ImageFolder(folder, classes=classes, transform=transform, strict=strict, verify=verify,
                           cache=cache)


def load_image(path: str | os.PathLike) -> Image.Image:
    """One image file as RGB, decoded now; an unreadable file is a clear error."""
    if not Path(path).is_file():
        raise VitedgeError(f"image {path} does not exist; check the path")
    try:
        return _decode(str(path))
    except _READ_ERRORS as err:
        raise VitedgeError(f"cannot read image {path}: {_reason(err)}; is it a valid image file?") from err


def _decode(path: str) -> Image.Image:
    with Image.open(path) as img:
        img.load()  # decode now: a truncated file fails here, not deep inside a transform
        return to_rgb(img)


def _images_in(folder: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return found


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text[:120]}" if text else type(err).__name__


def _few(items: Sequence[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (", …" if len(items) > n else "")
