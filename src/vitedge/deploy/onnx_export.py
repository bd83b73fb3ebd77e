"""ONNX export in three precisions: BN folded, named input/output, dynamic batch, metadata,
checker-clean.

- ``fp32``: any float model, dense or pruned.
- ``fp16``: weights and activations in half precision, except where FP16 is known to break
  EfficientViT engines: the linear-attention products and division (already FP32 inside
  :class:`~vitedge.models.efficientvit_mit.LiteMLA`, whatever the input dtype) and LayerNorm
  (wrapped to run in FP32). The graph still takes and returns float32, so a caller feeds it
  like the FP32 file.
- ``int8``: a fake-quantized model from :func:`vitedge.quantize`, exported as QDQ
  (QuantizeLinear/DequantizeLinear pairs carrying our calibrated scales and zero points), which
  ONNX Runtime fuses into integer kernels. The log2 divisor of the Trio-ViT engine has no ONNX
  quantized form; it exports as plain float ops (Log2 → Round → Clip → Pow(2, ·)) computing the
  same power of two.

The exported graph carries what a deployment needs to run it without vitedge: the model name
and config, the precision, the class names and the preprocessing (input size, mean, std,
crop_pct), as ONNX ``metadata_props``.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.errors import VitedgeError
from vitedge.io import atomic_write
from vitedge.models.layers import fuse_bn
from vitedge.quantization.points import is_quantized

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
PRECISIONS = ("fp32", "fp16", "int8")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    precision: str = "fp32",
    resolution: int | tuple[int, int] | None = None,
    classes: Sequence[str] | None = None,
    opset: int = OPSET,
    dynamic_batch: bool = True,
    data_config: Mapping[str, Any] | None = None,
) -> Path:
    """Export ``model`` as ONNX at ``path`` in ``precision`` (see the module doc); returns the path.

    The model is copied (and BN-folded) first, so the caller's model is untouched. The batch
    dimension is dynamic unless ``dynamic_batch=False`` (batch 1 fixed: ORT then folds every
    shape computation away, ≈ 10 % faster at batch 1); height and width are fixed to
    ``resolution`` (an int, or (height, width) for a segmentation model's frames; default: the
    input size of the preprocessing).

    ``data_config`` is the preprocessing the model was trained with (a checkpoint's
    ``extra["data_config"]``); its keys override the architecture's ``model.data_config`` in the
    metadata, so a predictor resizes and normalises the file's input as the checkpoint's own.
    """
    import onnx

    net = _prepare(model, precision)
    preprocessing = {**getattr(model, "data_config", {}), **(data_config or {})}
    channels, height, width = preprocessing.get("input_size", (3, 224, 224))
    if resolution is not None:
        height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    example = torch.zeros(1, channels, height, width)
    preprocessing["input_size"] = [channels, height, width]  # what the graph takes
    metadata = _metadata(model, preprocessing, classes, precision)

    def write(tmp: str) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer notes int() of quantizer buffers (constants by design) and the legacy exporter
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
            torch.onnx.export(
                net, (example,), tmp, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None,
            )
        proto = onnx.load(tmp)
        if precision == "int8":
            _store_weights_as_integers(proto)
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


def _store_weights_as_integers(proto: Any) -> int:
    """Replace each ``QuantizeLinear`` of a constant (a weight) by its integer result, stored as
    an int8 initializer feeding the ``DequantizeLinear``: the file holds int8 weights (4× smaller)
    in the layout ONNX Runtime's own quantizer writes. Values as the simulation computes them
    (``round(w · (1/s)) + z``, half to even). Returns how many weights were converted."""
    import numpy as np
    from onnx import numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, int] = {o.name: 1 for o in graph.output}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    producers = {o: n for n in graph.node for o in n.output}
    clip_ops = {"Max": np.maximum, "Min": np.minimum}

    def constant(name: str) -> Any:
        """The value of ``name`` if it is an initializer, the Identity of one (the exporter
        dedups shared zero points that way), or the range clip of a weight the exporter leaves
        unfolded, ``Max(weight, qmin·s)`` (narrow grid) and ``Min(·, qmax·s)`` (below 8 bits),
        on constants; else None."""
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = producers.get(name)
        if node is not None and node.op_type == "Identity":
            return constant(node.input[0])
        if node is not None and node.op_type in clip_ops:
            values = [constant(i) for i in node.input]
            if all(v is not None for v in values):
                return clip_ops[node.op_type](*values)
        return None

    def release(name: str) -> None:
        """One reader of ``name`` is gone: drop it when nothing reads it any more, the
        initializer or the clip / Identity node computing it (and so on up its inputs)."""
        consumers[name] -= 1
        if consumers[name] > 0:
            return
        if name in inits:
            graph.initializer.remove(inits.pop(name))
            return
        node = producers.get(name)
        if node is not None and (node.op_type == "Identity" or node.op_type in clip_ops):
            graph.node.remove(node)
            for i in node.input:
                release(i)

    converted = 0
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        w, scale, zero = (constant(i) for i in node.input)
        if w is None or scale is None or zero is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.ndim == 1:
            shape[axis] = -1
        inv = (np.float32(1.0) / scale.astype(np.float32)).reshape(shape)
        info = np.iinfo(zero.dtype)
        q = np.clip(np.rint(w.astype(np.float32) * inv) + zero.reshape(shape).astype(np.float32), info.min, info.max)
        graph.initializer.append(numpy_helper.from_array(q.astype(zero.dtype), node.output[0]))
        graph.node.remove(node)
        converted += 1
        for name in node.input:  # float weights, clip bounds and clip nodes nothing else reads
            release(name)
    return converted


def _prepare(model: nn.Module, precision: str) -> nn.Module:
    """The module to trace for ``precision``: a folded copy, converted as the precision needs."""
    if precision not in PRECISIONS:
        raise VitedgeError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    quantized = is_quantized(model)
    if precision == "int8":
        if not quantized:
            raise VitedgeError("precision int8 exports a quantized model: quantize it first "
                               "(vitedge.quantize, or `vitedge quantize CKPT`) and export the result")
        net = copy.deepcopy(model).float().eval()  # already folded; every point exports as QDQ
        for module in net.modules():
            if hasattr(module, "prepare_export"):
                module.prepare_export()
        return net
    if quantized:
        raise VitedgeError(f"this model is fake-quantized; export it with precision int8, or export the "
                           f"float model it came from as {precision}")
    net = fuse_bn(copy.deepcopy(model).float().eval())
    return _Float16(net) if precision == "fp16" else net


class _Fp32LayerNorm(nn.Module):
    """LayerNorm computed in FP32 inside an FP16 graph (its variance overflows half precision)."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm
        return F.layer_norm(x.float(), n.normalized_shape, n.weight, n.bias, n.eps).to(x.dtype)


class _Float16(nn.Module):
    """``model`` in half precision between a float32 input and float32 logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.LayerNorm):
                    setattr(module, name, _Fp32LayerNorm(child))
        self.model = model.half()
        for module in self.model.modules():
            if isinstance(module, _Fp32LayerNorm):
                module.norm.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata :func:`export_onnx` stored, JSON values decoded."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: json.loads(p.value) for p in proto.metadata_props if p.key.startswith("vitedge.")}


def _metadata(model: nn.Module, preprocessing: Mapping[str, Any], classes: Sequence[str] | None,
              precision: str) -> dict[str, str]:
    quant_config = getattr(model, "quant_config", None)
    values = {
        "vitedge.arch": getattr(model, "arch", None),
        "vitedge.precision": precision,
        "vitedge.quant_target": quant_config.target if precision == "int8" and quant_config else None,
        "vitedge.float_glue": quant_config.float_glue if precision == "int8" and quant_config else None,
        "vitedge.classes": list(classes) if classes is not None else None,
        "vitedge.preprocessing": preprocessing,
    }
    return {k: json.dumps(v) for k, v in values.items()}
