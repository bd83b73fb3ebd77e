"""The overrides a ``vitedge study`` command line makes to a study config, and the two choices
they imply: a study on another dataset runs in its own folder, and a segmentation study needs a
segmentation model when the preset's model is a classifier."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vitedge.errors import VitedgeError
from vitedge.train.tasks import get_task

__all__ = ["study_overrides"]


def study_overrides(base_name: str, base_dataset: str, base_model: str, *, name: str | None = None,
                    task: str | None = None, data: str | None = None, root: str | os.PathLike | None = None,
                    checkpoint: str | os.PathLike | None = None, model: str | None = None,
                    out: str | os.PathLike | None = None, threads: int | None = None) -> dict[str, Any]:
    """Dotted overrides (``None``: keep the config's value) of the study named ``base_name`` on
    ``base_dataset`` with ``base_model``, for the options a user gave."""
    overrides: dict[str, Any] = {
        "name": name, "task": task, "data.dataset": data, "data.root": str(root) if root else None,
        "checkpoint": str(checkpoint) if checkpoint else None, "model": model,
        "out": str(out) if out else None, "deploy.threads": threads}
    if data is not None and data != base_dataset and name is None:
        overrides["name"] = f"{base_name}-{Path(data).name}"
    if task is not None and model is None:  # the preset's model may not do the task
        try:
            get_task(task).check_model(base_model)
        except VitedgeError:
            overrides["model"] = get_task(task).default_model
    return overrides
