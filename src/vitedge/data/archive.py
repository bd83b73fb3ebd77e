"""Extract a dataset archive once, outside the repository (datasets are never committed)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from vitedge.errors import VitedgeError


def extract_once(tarball: Path | None, root: Path, *, what: str, present: bool,
                 repository: Path | None = None) -> None:
    """Unpack ``tarball`` into ``root`` unless ``present`` (the data is already there).

    ``repository``: a checkout ``root`` must not lie in (its ``runs/`` excepted), so a dataset
    can never end up committed by accident.
    """
    if present:
        return
    if tarball is None:
        raise VitedgeError(f"{root} holds no {what}; pass the archive ({what} .tar.gz) to extract it there")
    if repository is not None:
        inside = root.resolve().is_relative_to(repository.resolve())
        if inside and not root.resolve().is_relative_to(repository.resolve() / "runs"):
            raise VitedgeError(f"refusing to extract {what} into the repository ({root}); choose a folder "
                               "outside it")
    if not Path(tarball).is_file():
        raise VitedgeError(f"archive {tarball} does not exist; check the path")
    print(f"extracting {tarball} into {root} …", flush=True)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        tar.extractall(root, filter="data")  # "data": no absolute paths, links out or devices
