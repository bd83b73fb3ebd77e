"""Checkpoints into other files: a timm or official checkpoint into a self-describing vitedge
one (``vitedge convert``), and a model name or vitedge checkpoint into a deployment file with the
class names and preprocessing it was trained with (``vitedge export``)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from vitedge.deploy import export
from vitedge.errors import VitedgeError
from vitedge.io import read_metadata
from vitedge.models.checkpoint import load, resolve_model, save

__all__ = ["convert_checkpoint", "export_checkpoint"]


def convert_checkpoint(checkpoint: str | os.PathLike, model: str, output: str | os.PathLike) -> nn.Module:
    """Load the ``model`` weights in ``checkpoint`` (timm, official or vitedge) and save them to
    ``output``, a vitedge ``.safetensors`` file; returns the model."""
    output = Path(output)
    if output.suffix != ".safetensors":
        raise VitedgeError(f"--output must end in .safetensors (got {output.name})")
    net = load(checkpoint, model)
    save(net, output)
    return net


def export_checkpoint(model: str | os.PathLike, output: str | os.PathLike, precision: str = "fp32", *,
                      format: str = "onnx", resolution: int | None = None, dynamic_batch: bool = True) -> Path:
    """:func:`~vitedge.deploy.export` the model a name or checkpoint path names; a checkpoint's
    class names and training preprocessing go into the file."""
    extra = read_metadata(model)["extra"] if Path(model).is_file() else {}
    return export(resolve_model(model), output, precision, format=format, resolution=resolution,
                  classes=extra.get("classes"), dynamic_batch=dynamic_batch, data_config=extra.get("data_config"))
