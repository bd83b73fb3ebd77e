"""``vitedge.export``: one call from a model to a deployable file, driven by the format table."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from vitedge.deploy.formats import check_precision, get_format
from vitedge.deploy.onnx_export import export_onnx
from vitedge.errors import VitedgeError
from vitedge.models.checkpoint import save
from vitedge.quantization.checkpoint import save_quantized
from vitedge.quantization.points import is_quantized

__all__ = ["export"]


def _export_torch(model: nn.Module, path: Path, *, precision: str, resolution: int | tuple[int, int] | None,
                  classes: Sequence[str] | None, dynamic_batch: bool = True,
                  data_config: Mapping[str, Any] | None = None) -> Path:
    del resolution, dynamic_batch  # a torch checkpoint runs at any input size and batch

    if (precision == "int8") != is_quantized(model):
        raise VitedgeError("precision int8 saves a quantized model (vitedge.quantize) and fp32 a float one; "
                           "pass the model that matches the precision")
    extra: dict[str, Any] = {"classes": list(classes)} if classes is not None else {}
    if data_config is not None:  # as `vitedge train` records it: what predict reads back
        extra["data_config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}
    return (save_quantized if precision == "int8" else save)(model, path, extra=extra)


# format name → exporter; a new format is one row in FORMATS plus one function here.
EXPORTERS: dict[str, Callable[..., Path]] = {"torch": _export_torch, "onnx": export_onnx}


def export(model: nn.Module, path: str | os.PathLike, precision: str = "fp32", *, format: str = "onnx",
           resolution: int | tuple[int, int] | None = None, classes: Sequence[str] | None = None,
           dynamic_batch: bool = True, data_config: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` as ``format`` (a row of :data:`~vitedge.deploy.FORMATS`) in
    ``precision``; ``int8`` takes a model returned by :func:`vitedge.quantize`. ``dynamic_batch=False``
    fixes the batch at 1 (ONNX: no run-time shape arithmetic, faster at batch 1). ``data_config``:
    the preprocessing the model was trained with, if not the architecture's (a checkpoint's
    ``extra["data_config"]``); the file carries it, and its input size is the default
    ``resolution``.

    Example::

        vitedge.export(model, "b0.onnx")                                  # FP32 ONNX
        vitedge.export(model, "b0_fp16.onnx", precision="fp16")
        vitedge.export(vitedge.quantize(model, calib), "b0_int8.onnx", precision="int8")
    """
    fmt = get_format(format)
    check_precision(fmt, precision)
    ok, why = fmt.available()
    if not ok:
        raise VitedgeError(f"format {fmt.name} is not available here: {why}")
    path = Path(path)
    if path.suffix != fmt.suffix:
        raise VitedgeError(f"a {fmt.name} file ends in {fmt.suffix}, not {path.suffix or 'nothing'} ({path.name})")
    return EXPORTERS[fmt.name](model, path, precision=precision, resolution=resolution,
                               classes=classes, dynamic_batch=dynamic_batch, data_config=data_config)
