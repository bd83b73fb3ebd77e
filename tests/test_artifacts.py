"""Artifacts are plain files: written atomically, with the permissions a plain ``open()`` gives
(``0666 & ~umask``), so a checkpoint or report can be shared like any file the user writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import vitedge
from vitedge.io import atomic_write


@pytest.fixture(params=[0o022, 0o027, 0o002], ids=lambda m: f"umask{m:03o}")
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_gets_the_umask_permissions(tmp_path, umask):
    path = atomic_write(tmp_path / "out.json", lambda tmp: Path(tmp).write_text("{}"))
    assert path.read_text() == "{}"
    assert mode(path) == 0o666 & ~umask
    # What a plain open() gives under the same umask, for comparison.
    (tmp_path / "plain.json").write_text("{}")
    assert mode(path) == mode(tmp_path / "plain.json")


def test_overwrite_keeps_the_file_mode(tmp_path, umask):
    """Like ``open(path, "w")`` on an existing file: its mode (chosen by the user) survives."""
    path = tmp_path / "report.md"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write(path, lambda tmp: Path(tmp).write_text("new"))
    assert path.read_text() == "new" and mode(path) == 0o640


def test_checkpoint_gets_the_umask_permissions(tmp_path, umask):
    path = vitedge.save(vitedge.create_model("efficientvit_m0", num_classes=3), tmp_path / "m0.safetensors")
    assert mode(path) == 0o666 & ~umask
    assert vitedge.load(path).arch["kwargs"]["num_classes"] == 3


def test_failed_write_leaves_nothing(tmp_path):
    def broken(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "x.onnx", broken)
    assert list(tmp_path.iterdir()) == []
