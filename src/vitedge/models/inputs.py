"""The input a model takes: its size, and one forward pass that says what is wrong when it cannot
take a given size."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from vitedge.errors import VitedgeError

__all__ = ["Resolution", "forward_at", "input_size"]

# A square side, or (height, width) for a segmentation model's frames.
Resolution = int | tuple[int, int]


def input_size(model: nn.Module, resolution: Resolution | None = None) -> tuple[int, int, int]:
    """(channels, height, width) the model takes: its own ``data_config``, or ``resolution`` (a
    side, or (height, width))."""
    channels, height, width = getattr(model, "data_config", {}).get("input_size", (3, 224, 224))
    if resolution is not None:
        height, width = _height_width(resolution)
    return channels, height, width


def forward_at(model: nn.Module, x: torch.Tensor) -> Any:
    """``model(x)``, with a one-line error when the model cannot take that input size (the M
    family's attention biases and windows are built for one resolution)."""
    try:
        return model(x)
    except RuntimeError as err:
        name = getattr(model, "arch", {}).get("name", type(model).__name__)
        raise VitedgeError(f"{name} cannot run on a {x.shape[-2]}×{x.shape[-1]} input "
                           f"({str(err).splitlines()[0][:100]}); build it for that size: "
                           f"create_model(..., img_size={x.shape[-1]})") from err


def _height_width(resolution: Resolution) -> tuple[int, int]:
    if isinstance(resolution, int) and not isinstance(resolution, bool) and resolution > 0:
        return resolution, resolution
    if (isinstance(resolution, (tuple, list)) and len(resolution) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resolution)):
        return int(resolution[0]), int(resolution[1])
    raise VitedgeError(f"resolution must be a positive side (e.g. 224) or (height, width) "
                       f"(e.g. (512, 1024)), not {resolution!r}")
