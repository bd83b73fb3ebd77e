"""Static cost of a model: parameters, MACs, weight bytes and an activation-memory estimate.

MACs come from the operator list of :mod:`vitedge.hardware.operators` (recorded at the ATen level,
so every conv, linear and attention matmul is seen whatever module wrote it): the profiler, the
accelerator model and the CPU roofline count from the same list.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from vitedge.hardware.operators import extract_operators
from vitedge.models.inputs import Resolution, input_size


def profile(model: nn.Module, resolution: Resolution | None = None, batch_size: int = 1) -> dict[str, Any]:
    """Params, MACs, weight bytes and activation bytes of ``model`` at ``resolution``.

    ``resolution`` (a side, or (height, width)) defaults to the model's own input size
    (``model.data_config``). MACs are per
    forward pass of ``batch_size`` images. ``activation_bytes`` sums the outputs of every leaf
    module (what a training step keeps alive, roughly); ``peak_layer_bytes`` is the largest
    input + output of one leaf (the working set an inference engine must hold at once).

    Example::

        >>> stats = profile(create_model("efficientvit_b0"))
        >>> round(stats["macs"] / 1e9, 3)
        0.1
    """
    channels, height, width = input_size(model, resolution)
    leaf_out, peak = [], [0]

    def record(module: nn.Module, inputs: tuple, output: Any) -> None:
        out_bytes = sum(_nbytes(t) for t in _tensors(output))
        leaf_out.append(out_bytes)
        peak[0] = max(peak[0], out_bytes + sum(_nbytes(t) for t in _tensors(inputs)))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:  # one forward pass: the operator list's, with the leaf hooks listening
        ops = extract_operators(model, resolution, batch_size)
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    return {
        "params": params,
        "macs": ops.macs,
        "weight_bytes": sum(_nbytes(p) for p in model.parameters())
        + sum(_nbytes(b) for b in model.buffers()),
        "activation_bytes": sum(leaf_out),
        "peak_layer_bytes": peak[0],
        "input_size": [channels, height, width],
        "batch_size": batch_size,
    }


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    return []


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
