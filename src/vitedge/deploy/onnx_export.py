"""ONNX export: BN folded, named input/output, dynamic batch, metadata, checker-clean.

The exported graph carries what a deployment needs to run it without vitedge: the model name
and config, the class names and the preprocessing (input size, mean, std, crop_pct), as ONNX
``metadata_props``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from vitedge.errors import VitedgeError
from vitedge.models.checkpoint import atomic_write
from vitedge.models.layers import fuse_bn

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    resolution: int | None = None,
    classes: Sequence[str] | None = None,
    opset: int = OPSET,
) -> Path:
    """Export ``model`` (dense or pruned) as FP32 ONNX at ``path``; returns the path.

    The model is copied and BN-folded first, so the caller's model is untouched. The batch
    dimension is dynamic; height and width are fixed to ``resolution`` (default: the model's).
    """
    import onnx

    net = fuse_bn(copy.deepcopy(model).float().eval())
    channels, height, width = getattr(model, "data_config", {}).get("input_size", (3, 224, 224))
    if resolution is not None:
        height = width = resolution
    example = torch.zeros(1, channels, height, width)
    metadata = _metadata(model, (channels, height, width), classes)

    def write(tmp: str) -> None:
        with torch.no_grad():
            torch.onnx.export(
                net, (example,), tmp, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        proto = onnx.load(tmp)
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "vitedge"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, tmp)

    try:
        return atomic_write(path, write)
    except onnx.checker.ValidationError as err:
        raise VitedgeError(f"the exported ONNX graph failed onnx.checker: {err}") from err


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata :func:`export_onnx` stored, JSON values decoded."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: json.loads(p.value) for p in proto.metadata_props if p.key.startswith("vitedge.")}


def _metadata(model: nn.Module, input_size: tuple[int, int, int],
              classes: Sequence[str] | None) -> dict[str, str]:
    data_config: Mapping[str, Any] = getattr(model, "data_config", {})
    preprocessing = {**data_config, "input_size": list(input_size)}
    values = {
        "vitedge.arch": getattr(model, "arch", None),
        "vitedge.classes": list(classes) if classes is not None else None,
        "vitedge.preprocessing": preprocessing,
    }
    return {k: json.dumps(v) for k, v in values.items()}
