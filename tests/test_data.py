"""Datasets: real Fashion-MNIST and CIFAR-10 subsets, the safe CIFAR pickle reader, bad data."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct

import numpy as np
import pytest
from PIL import Image

from vitedge.data import DataWarning, ImageFolder, build_dataset, read_python_batch
from vitedge.data.cifar import CLASSES as CIFAR_CLASSES
from vitedge.errors import VitedgeError


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fake_fashion(root, labels) -> None:
    root.mkdir(parents=True, exist_ok=True)
    images = np.arange(len(labels) * 28 * 28, dtype=np.int64).reshape(len(labels), 28, 28) % 256
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.array(labels))


# --- Fashion-MNIST -----------------------------------------------------------------------------

def test_fashion_mnist_from_idx_files(fashion_test):
    assert len(fashion_test) == 10_000
    assert fashion_test.classes[0] == "T-shirt/top" and fashion_test.classes[9] == "Ankle boot"
    assert np.bincount(fashion_test.targets).tolist() == [1000] * 10
    img, label = fashion_test[0]
    assert img.mode == "RGB" and img.size == (28, 28)
    r, g, b = (np.asarray(c) for c in img.split())
    assert (r == g).all() and (g == b).all() and r.max() > 0  # grayscale widened to 3 channels
    assert label == int(fashion_test.targets[0])


def test_fashion_mnist_missing_folder(tmp_path):
    with pytest.raises(VitedgeError, match="does not exist.*--data-dir"):
        build_dataset("fashion-mnist", root=tmp_path / "nowhere")


def test_fashion_mnist_missing_file(tmp_path):
    with pytest.raises(VitedgeError, match="train-images-idx3-ubyte.gz is missing"):
        build_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_label_out_of_range(tmp_path):
    write_fake_fashion(tmp_path, [0, 12, 3])
    with pytest.raises(VitedgeError, match="label 12 of sample 1 is out of range for 10 classes"):
        build_dataset("fashion-mnist", root=tmp_path, split="test")


def test_fashion_mnist_truncated_file(tmp_path):
    write_fake_fashion(tmp_path, [0, 1, 3])
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(VitedgeError, match="truncated"):
        build_dataset("fashion-mnist", root=tmp_path, split="test")


# --- CIFAR-10 python batches -------------------------------------------------------------------

def write_fake_cifar_batches(root, protocol: int) -> dict:
    """A tiny CIFAR-10 python-batch dataset, keyed with bytes like the original Python 2 files."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name, n in [*((f"data_batch_{i}", 3) for i in range(1, 6)), ("test_batch", 4)]:
        batch = {b"batch_label": name.encode(), b"labels": [int(x) for x in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        batches[name] = batch
    meta = {b"num_cases_per_batch": 3, b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_python_batches(tmp_path, protocol):
    batches = write_fake_cifar_batches(tmp_path, protocol)
    train = build_dataset("cifar10", root=tmp_path, split="train")
    test = build_dataset("cifar10", root=tmp_path, split="test")
    assert len(train) == 15 and len(test) == 4
    assert train.classes == list(CIFAR_CLASSES)
    row = batches["test_batch"][b"data"][2]
    img, label = test[2]
    pixels = np.asarray(img)
    assert img.size == (32, 32) and label == batches["test_batch"][b"labels"][2]
    # Each row is three 1024-byte planes (R, G, B), row-major.
    assert pixels[0, 0].tolist() == [row[0], row[1024], row[2048]]
    assert pixels[1, 5].tolist() == [row[37], row[1024 + 37], row[2048 + 37]]
    assert train.targets.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])


def test_cifar_python_reader_refuses_code(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(VitedgeError, match="refusing to load .*system"):
        read_python_batch(path)
    assert not marker.exists()


def test_cifar_python_missing_batch(tmp_path):
    write_fake_cifar_batches(tmp_path, 2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(VitedgeError, match="data_batch_4 is missing"):
        build_dataset("cifar10", root=tmp_path, split="train")


def test_cifar_python_label_out_of_range(tmp_path):
    write_fake_cifar_batches(tmp_path, 2)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(path.read_bytes())
    batch[b"labels"][1] = 10
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(VitedgeError, match="label 10 of sample 1 is out of range"):
        build_dataset("cifar10", root=tmp_path, split="test")


def test_cifar_needs_a_root():
    with pytest.raises(VitedgeError, match="needs --data-dir"):
        build_dataset("cifar10")


def test_cifar_root_with_neither_layout(tmp_path):
    with pytest.raises(VitedgeError, match="neither CIFAR-10 python batches"):
        build_dataset("cifar10", root=tmp_path)


# --- CIFAR-10 JPEG folders (the real images) ---------------------------------------------------

def test_cifar_image_folders(cifar_jpeg):
    train = build_dataset("cifar10", root=cifar_jpeg, split="train")
    test = build_dataset("cifar10", root=cifar_jpeg, split="test")
    assert (len(train), len(test)) == (200, 100)
    assert train.classes == test.classes == list(CIFAR_CLASSES)
    assert np.bincount(test.targets).tolist() == [10] * 10
    img, label = test[0]
    assert img.mode == "RGB" and img.size == (32, 32) and test.classes[label] == "airplane"
    # The same folders through the generic path: same classes, same labels.
    generic = build_dataset(cifar_jpeg, split="test")
    assert generic.classes == test.classes and generic.targets.tolist() == test.targets.tolist()


@pytest.fixture
def cifar_copy(cifar_jpeg, tmp_path):
    """A writable copy of the real test subset (100 JPEGs), to damage."""
    return shutil.copytree(cifar_jpeg / "test", tmp_path / "test")


def test_corrupt_images_skipped_with_a_count(cifar_copy):
    cat = cifar_copy / "cat"
    good = sorted(cat.iterdir())[0].read_bytes()
    (cat / "zzz_garbage.jpg").write_bytes(b"not an image at all" * 10)
    (cat / "zzz_empty.jpg").write_bytes(b"")
    (cat / "zzz_truncated.jpg").write_bytes(good[: len(good) // 2])
    with pytest.warns(DataWarning, match="skipped 3 of 103 images .* strict=True"):
        data = ImageFolder(cifar_copy)
    assert len(data) == 100 and len(data.skipped) == 3
    assert {os.path.basename(p) for p, _ in data.skipped} == {"zzz_garbage.jpg", "zzz_empty.jpg",
                                                              "zzz_truncated.jpg"}
    with pytest.raises(VitedgeError, match="cannot read image .*zzz_.*drop --strict"):
        ImageFolder(cifar_copy, strict=True)


def test_unreadable_image_found_at_load_time(cifar_copy):
    bird = sorted((cifar_copy / "bird").iterdir())
    bird[0].write_bytes(bird[0].read_bytes()[:200])
    data = ImageFolder(cifar_copy, verify=False)  # e.g. ImageNet: no up-front decode
    index = data.paths.index(str(bird[0]))
    with pytest.warns(DataWarning, match="skipped unreadable image"):
        img, label = data[index]
    assert img.size == (32, 32) and data.classes[label] == "bird"  # the next readable image
    with pytest.raises(VitedgeError, match="cannot read image"):
        ImageFolder(cifar_copy, verify=False, strict=True)[index]


def test_grayscale_and_palette_images_become_rgb(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("L", (9, 7), 100).save(tmp_path / "a" / "gray.png")
    Image.new("P", (9, 7)).save(tmp_path / "a" / "palette.png")
    Image.new("RGBA", (9, 7)).save(tmp_path / "a" / "alpha.png")
    data = ImageFolder(tmp_path)
    assert [data[i][0].mode for i in range(3)] == ["RGB"] * 3


def test_empty_folder(tmp_path):
    with pytest.raises(VitedgeError, match="is empty"):
        build_dataset(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(VitedgeError, match="no images found"):
        build_dataset(tmp_path)


def test_images_without_class_folders(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    with pytest.raises(VitedgeError, match="no class folders"):
        build_dataset(tmp_path)


def test_missing_dataset_and_unknown_name(tmp_path):
    with pytest.raises(VitedgeError, match="neither a registered dataset .*did you mean 'cifar10'"):
        build_dataset("cifar")
    with pytest.raises(VitedgeError, match="neither a registered dataset"):
        build_dataset(str(tmp_path / "missing"))


def test_class_folder_out_of_range(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / "x.png")
    with pytest.raises(VitedgeError, match="class folder 'dog' is out of range of the 1 expected"):
        build_dataset(tmp_path, classes=["cat"])


def test_split_folders_share_one_class_list(tmp_path):
    for split, names in (("train", ("a", "b", "c")), ("val", ("a", "c"))):
        for name in names:
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(tmp_path / split / name / "x.png")
    test = build_dataset(tmp_path, split="test")  # "val" serves as the test split
    assert test.classes == ["a", "b", "c"] and test.targets.tolist() == [0, 2]
