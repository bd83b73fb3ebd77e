"""Static cost of a model: parameters, MACs, weight bytes and an activation-memory estimate.

MACs come from the operator list of :mod:`vitedge.hardware.operators` (recorded at the ATen level,
so every conv, linear and attention matmul is seen whatever module wrote it): the profiler, the
accelerator model and the CPU roofline count from the same list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from vitedge.bench.latency import torch_latency
from vitedge.bench.published import PUBLISHED_COST
from vitedge.errors import VitedgeError
from vitedge.hardware.operators import extract_operators
from vitedge.models.checkpoint import resolve_model
from vitedge.models.inputs import Resolution, input_size
from vitedge.tables import Table


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


def profile_models(specs: Sequence[str], *, resolution: int | None = None, num_classes: int | None = None,
                   latency: bool = True, threads: int | None = None, batch_size: int = 1,
                   runs: int = 10) -> list[dict[str, Any]]:
    """:func:`profile` of each model (a registered name or a checkpoint), with PyTorch eager's
    latency at ``batch_size`` when ``latency``; each result names its ``model``."""
    if batch_size < 1 or runs < 1:
        raise VitedgeError(f"batch size and runs must be at least 1 (got {batch_size} and {runs})")
    results = []
    for spec in specs:
        net = resolve_model(spec, num_classes=num_classes)
        stats = {"model": spec, "arch": net.arch["name"], **profile(net, resolution=resolution)}
        stats["default_resolution"] = stats["input_size"][1] == net.data_config["input_size"][1]
        if latency:
            stats["latency"] = torch_latency(net, resolution=resolution, threads=threads,
                                             batch_size=batch_size,
                                             warmup=2, runs=runs).to_dict()
        results.append(stats)
    return results


def profile_table(results: Sequence[dict[str, Any]], batch_size: int = 1) -> Table:
    """:func:`profile_models`' results beside the published params and MACs (at the model's own
    resolution). Short headers: the table must fit 80 columns (CI logs, pipes)."""
    table = Table("vitedge profile (paper = published figure)",
                  ["model", "res", "params M", "paper", "MACs M", "paper", "wts MB", "act MB",
                   f"ms b{batch_size}"])
    for s in results:
        ref_params, ref_macs = PUBLISHED_COST.get(s["arch"], (None, None))
        published = s["default_resolution"]
        table.add_row(s["model"], s["input_size"][1], f"{s['params'] / 1e6:.2f}",
                      f"{ref_params:.2f}" if ref_params and published else "", f"{s['macs'] / 1e6:.1f}",
                      f"{ref_macs:.0f}" if ref_macs and published else "", f"{s['weight_bytes'] / 2**20:.1f}",
                      f"{s['activation_bytes'] / 2**20:.1f}",
                      f"{s['latency']['median_ms']:.3g}" if "latency" in s else "")
    return table
