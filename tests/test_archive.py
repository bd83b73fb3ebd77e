"""Dataset archives extract once, and never into the repository."""

from __future__ import annotations

import io
import tarfile

import pytest

from vitedge.data.archive import extract_once
from vitedge.errors import VitedgeError


def _archive(path):
    with tarfile.open(path, "w:gz") as tar:
        data = b"pixels"
        info = tarfile.TarInfo("train/cat/0001.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_extracts_when_missing_and_skips_when_present(tmp_path):
    tarball = _archive(tmp_path / "data.tar.gz")
    root = tmp_path / "data"
    extract_once(tarball, root, what="toy", present=False)
    assert (root / "train" / "cat" / "0001.jpg").read_bytes() == b"pixels"
    extract_once(None, root, what="toy", present=True)  # nothing to do, no archive needed


def test_refusals(tmp_path):
    tarball = _archive(tmp_path / "data.tar.gz")
    with pytest.raises(VitedgeError, match="holds no toy; pass the archive"):
        extract_once(None, tmp_path / "x", what="toy", present=False)
    with pytest.raises(VitedgeError, match="refusing to extract toy into the repository"):
        extract_once(tarball, tmp_path / "repo" / "data", what="toy", present=False,
                     repository=tmp_path / "repo")
    extract_once(tarball, tmp_path / "repo" / "runs" / "data", what="toy", present=False,
                 repository=tmp_path / "repo")  # runs/ is git-ignored scratch space
    with pytest.raises(VitedgeError, match="does not exist"):
        extract_once(tmp_path / "missing.tar.gz", tmp_path / "y", what="toy", present=False)
