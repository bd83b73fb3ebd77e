"""Shared test helpers: timm as the oracle, with BatchNorm statistics made non-trivial."""

from __future__ import annotations

import os
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from parity import input_dependent, spread_predictions

# Under pytest-xdist (make test: one worker per core) every worker computes on one thread, and so
# do the processes it starts unless a test sets their threads: two workers each spinning two
# OpenMP threads on two cores cost far more than they gain.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running stats, so folding is tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def timm_oracle(name: str, **kwargs) -> nn.Module:
    """timm's model of the same name with input-dependent weights (``parity.input_dependent``),
    in eval mode. timm is a declared test dependency: without it the parity tests fail rather
    than skip, so a venv missing the test extra cannot pass the suite."""
    try:
        import timm
    except ImportError as err:
        pytest.fail(f"timm, the parity oracle, is not importable ({err}); install the test extra: "
                    "pip install -e '.[test]' (make test does)")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs)
    return input_dependent(model.eval())


def is_mit(name: str) -> bool:
    return not name.startswith("efficientvit_m")


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    small convs gain nothing from a second thread, and on a shared 2-core machine OpenMP spinning
    against another process costs up to 100× (2 s instead of 20 ms per B0 forward)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


# Real data for the data/train/eval tests: tiny subsets, never copied into the repository.
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared/datasets"
CIFAR_TARBALL = SHARED_DATASETS / "cifar10-jpeg.tar.gz"
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
CIFAR_SUBSET = {"train": 20, "test": 10}  # images per class


@pytest.fixture(scope="session")
def cifar_jpeg(tmp_path_factory) -> Path:
    """``train/<class>/`` (20 per class) and ``test/<class>/`` (10 per class) real CIFAR-10 JPEGs,
    streamed out of the shared tarball into a temporary folder."""
    if not CIFAR_TARBALL.is_file():
        pytest.skip(f"{CIFAR_TARBALL} is absent (the shared CIFAR-10 JPEG tarball is needed)")
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    taken: Counter = Counter()
    wanted = 10 * sum(CIFAR_SUBSET.values())
    with tarfile.open(CIFAR_TARBALL, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in CIFAR_SUBSET:
                continue
            if taken[parts[0], parts[1]] < CIFAR_SUBSET[parts[0]]:
                taken[parts[0], parts[1]] += 1
                tar.extract(member, root, filter="data")
                if sum(taken.values()) == wanted:
                    break
    return root


@pytest.fixture(scope="session")
def fashion_test():
    """The real Fashion-MNIST test split (10,000 images, read from the Debian package's IDX files)."""
    if not (FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    from vitedge.data import build_dataset

    return build_dataset("fashion-mnist", split="test")


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A 2-class image folder (ant/bee, 32 px PNGs) and an untrained B0 checkpoint at 32 px for it:
    the cheapest real inputs for the recipe, export and benchmark commands. Its weights are
    input-dependent and its classifier centred on the training images, so it predicts both
    classes (a default-initialised B0 predicts one class for everything: every top-1 is 50 %)."""
    from test_pruning import _tiny_folder

    import vitedge
    from vitedge.data import build_dataset
    from vitedge.data.transforms import EvalTransform

    root = tmp_path_factory.mktemp("tiny")
    data = _tiny_folder(root / "data")
    model = input_dependent(vitedge.create_model("efficientvit_b0", num_classes=2, img_size=32))
    train = build_dataset(str(data), split="train")
    transform = EvalTransform(32, mean=model.data_config["mean"], std=model.data_config["std"])
    spread_predictions(model, torch.stack([transform(train.image(i)) for i in range(len(train))]))
    return data, vitedge.save(model, root / "dense.safetensors", extra={"classes": ["ant", "bee"]})


def cpu_has_vnni() -> bool:
    """AVX-512 VNNI or AVX-VNNI (Linux CPU flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def exact_w_bits() -> int:
    """Weight bits with which ONNX Runtime's INT8 kernels compute exact integer sums on this CPU.

    On x86 CPUs without VNNI (AVX2 only, e.g. AMD Zen 1-3), ORT's u8s8 convolutions add pairs of
    products in saturating int16 (vpmaddubsw): with 8-bit weights the outputs drift from exact
    integer math, which the simulation computes (seen: 70 % per-pixel agreement on a random
    segmentation head). 7-bit weights keep every pair sum below 2^15 (255·63·2), exact again.
    ORT's ``session.x64quantprecision`` option, meant for this, fails to load our QDQ graphs at
    ORT_ENABLE_EXTENDED and above (ORT 1.32: "Attempt to replace the existing tensor").
    """
    return 8 if cpu_has_vnni() else 7
