"""The picture that shows why per-tensor INT8 fails on EfficientViT's MBConv activations: the
per-channel min/max of a conv input, before and after Trio-ViT's migration / shifting, against
the range one per-tensor grid has to cover.

Each panel also gives the median number of grid levels a channel spans under one per-tensor
``a_bits`` grid over the whole tensor: a few levels mean that channel is all but erased.

Example::

    summary = plot_channel_ranges(qmodel, images, "runs/b0/channel_ranges.png")
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from vitedge.errors import VitedgeError
from vitedge.io import atomic_write
from vitedge.quantization.points import quantizers
from vitedge.quantization.qmodules import QuantConv2d

__all__ = ["RangeSummary", "plot_channel_ranges"]


@dataclass(frozen=True)
class RangeSummary:
    """One plotted layer: its transform and the median grid levels a channel spans."""

    layer: str
    transform: str
    levels_before: float
    levels_after: float


def _default_layers(qmodel: nn.Module, max_layers: int) -> list[str]:
    convs = {n: m for n, m in qmodel.named_modules() if isinstance(m, QuantConv2d)}
    migrated = [n for n, m in convs.items() if m.migration is not None]
    shifted = [n for n, m in convs.items() if m.shift is not None]
    picked = []
    for pair in zip(migrated, shifted):  # alternate, so both transforms show
        picked.extend(pair)
    picked += [n for n in migrated + shifted if n not in picked]
    if not picked:  # a model without transforms: its depthwise convs
        picked = [n for n, m in convs.items() if m.groups == m.in_channels and m.groups > 1]
    return picked[:max_layers]


def _levels(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> float:
    step = (float(hi.max()) - min(float(lo.min()), 0.0)) / ((1 << bits) - 1)
    return float(((hi - lo) / max(step, 1e-12)).median())


@torch.no_grad()
def plot_channel_ranges(qmodel: nn.Module, images: torch.Tensor, path: str | os.PathLike,
                        layers: list[str] | None = None, max_layers: int = 4,
                        bits: int | None = None) -> list[RangeSummary]:
    """Plot per-channel input ranges of ``layers`` (QuantConv2d paths; default: Trio-ViT sites,
    else depthwise convs) over ``images``, before and after each layer's transform, as a PNG at
    ``path``. ``bits`` defaults to the model's activation bits. Returns one summary per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = layers if layers is not None else _default_layers(qmodel, max_layers)
    convs = dict(qmodel.named_modules())
    bad = [n for n in layers if not isinstance(convs.get(n), QuantConv2d)]
    if bad or not layers:
        raise VitedgeError(f"no quantized conv at {bad[:3] or 'any chosen layer'}; pass module paths "
                           "of QuantConv2d layers (see point_report)")
    bits = bits or getattr(getattr(qmodel, "quant_config", None), "a_bits", 8)

    captured: dict[str, torch.Tensor] = {}
    hooks = [convs[n].register_forward_pre_hook(
        lambda mod, args, name=n: captured.__setitem__(name, args[0].detach())) for n in layers]
    states = {id(q): q.fake_quant for _, q in quantizers(qmodel)}
    was_training = qmodel.training
    try:
        for _, q in quantizers(qmodel):
            q.fake_quant = False
        qmodel.eval()(images.to(next(qmodel.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        for _, q in quantizers(qmodel):
            q.fake_quant = states[id(q)]
        qmodel.train(was_training)

    fig, axes = plt.subplots(len(layers), 2, figsize=(12, 2.6 * len(layers)), squeeze=False)
    summary = []
    for row, name in enumerate(layers):
        conv, x = convs[name], captured[name]
        if conv.migration is not None:
            after, what = conv.migration(x), "migration  x / s_c"
        elif conv.shift is not None:
            after, what = conv.shift(x), "shifting  x − z_c"
        else:
            after, what = x, "no transform"
        dims = [d for d in range(x.ndim) if d != 1]
        levels = []
        for col, (t, title) in enumerate(((x, "before"), (after, f"after {what}"))):
            lo, hi = t.amin(dim=dims).cpu(), t.amax(dim=dims).cpu()
            n = _levels(lo, hi, bits)
            levels.append(n)
            ax = axes[row][col]
            ax.vlines(range(lo.numel()), lo, hi, linewidth=1.0, color="tab:blue")
            ax.axhline(float(hi.max()), color="tab:red", linewidth=0.8, linestyle="--")
            ax.axhline(min(float(lo.min()), 0.0), color="tab:red", linewidth=0.8, linestyle="--")
            ax.set_title(f"{name} — {title}\nmedian {n:.0f} of {(1 << bits) - 1} per-tensor levels per channel",
                         fontsize=8)
            ax.set_xlabel("channel", fontsize=7)
            ax.tick_params(labelsize=7)
        summary.append(RangeSummary(name, what.split()[0], levels[0], levels[1]))
    fig.suptitle("per-channel min/max of conv inputs (dashed: the per-tensor range)", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return summary
