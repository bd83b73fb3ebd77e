"""Calibration: set every point's range from a few hundred images, no labels, no gradients.

Two passes over the same batches, both in float (every quantizer off):

1. Trio-ViT sites only: per-channel min/max (and a sample for the tensor-wide quantile) of each
   migrated / shifted conv input → migration factors (folded into the depthwise filters) and
   shift offsets. Skipped when no transform is on.
2. Every activation point observes its (now transformed) input; each observer then proposes
   its range (min-max, percentile or MSE search), and the weights' scales come from the weights.

Ranges are measured on the float network, not sequentially on the already-quantized upstream
(cheaper, the common PTQ recipe; QAT then adapts the scales to the quantized upstream).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from vitedge.errors import VitedgeError
from vitedge.quantization.points import quantizers, set_quant_state
from vitedge.quantization.qmodules import QuantConv2d, QuantLinear
from vitedge.quantization.trio import ChannelStats, migration_factors, shift_offsets

__all__ = ["calibrate", "calibration_batches"]

SINGLE_IMAGE_BATCH = 32  # single images (a dataset passed as is) are stacked into batches this big


def calibration_batches(data: Any, max_batches: int | None = None) -> list[torch.Tensor]:
    """The calibration images as a list of ``(N, C, H, W)`` batches.

    ``data`` may be one batch tensor, or an iterable (DataLoader, list, dataset) of batches,
    ``(images, labels)`` pairs, or single ``(C, H, W)`` images (stacked 32 at a time). Held in a
    list because calibration reads them twice, and a shuffling loader would not give the same
    images twice.
    """
    if isinstance(data, torch.Tensor):
        data = [data]
    try:
        items = iter(data)
    except TypeError:
        raise VitedgeError(f"calibration data must be an iterable of image batches, got "
                           f"{type(data).__name__}; pass a DataLoader, a dataset or a list of tensors") from None
    batches: list[torch.Tensor] = []
    singles: list[torch.Tensor] = []

    def full() -> bool:
        return max_batches is not None and len(batches) >= max_batches

    for item in items:
        if full():
            break
        x = item[0] if isinstance(item, (tuple, list)) and item else item
        if not isinstance(x, torch.Tensor):
            raise VitedgeError(f"calibration data yielded a {type(x).__name__}; it must yield image "
                               "tensors or (image, label) pairs — add a ToTensor/eval transform")
        if x.ndim == 3:
            singles.append(x)
            if len(singles) == SINGLE_IMAGE_BATCH:
                batches.append(torch.stack(singles))
                singles = []
        elif x.ndim == 4:
            batches.append(x.detach())
        else:
            raise VitedgeError(f"calibration images must be (N, C, H, W) batches or (C, H, W) images, "
                               f"got shape {tuple(x.shape)}")
    if singles and not full():
        batches.append(torch.stack(singles))
    if not batches or all(b.shape[0] == 0 for b in batches):
        raise VitedgeError("the calibration set is empty: pass at least one batch of images "
                           "(a few hundred training images, eval transform, is typical)")
    return batches


@torch.no_grad()
def _run(model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device) -> None:
    for x in batches:
        model(x.to(device))


@torch.no_grad()
def calibrate(qmodel: nn.Module, calib_data: Any) -> nn.Module:
    """Set the Trio-ViT transforms and every point's scale of a :func:`prepare`-d model from
    ``calib_data`` (any form :func:`calibration_batches` takes), then turn fake quantization on.
    In place; returns ``qmodel`` in the training mode it had."""
    cfg = qmodel.quant_config
    batches = calibration_batches(calib_data, cfg.max_calib_batches)
    device = next(qmodel.parameters()).device
    was_training = qmodel.training
    qmodel.eval()
    set_quant_state(qmodel, fake_quant=False, observing=False)

    sites = [m for m in qmodel.modules() if isinstance(m, QuantConv2d) and (m.migration or m.shift)]
    if sites:
        stats = {id(m): ChannelStats(cfg.observer.samples) for m in sites}
        hooks = [m.register_forward_pre_hook(lambda mod, args: stats[id(mod)].update(args[0])) for m in sites]
        try:
            _run(qmodel, batches, device)
        finally:
            for h in hooks:
                h.remove()
        trio = cfg.transforms
        for m in sites:
            st = stats[id(m)]
            transform = m.migration if m.migration is not None else m.shift
            transform.channel_min.copy_(st.lo)
            transform.channel_max.copy_(st.hi)
            if m.migration is not None:
                absolute = trio.migration_stat == "absmax"
                m.migrate(migration_factors(st.peak(absolute), st.quantile(trio.migration_quantile, absolute),
                                            trio))
            else:
                m.shift.offset.copy_(shift_offsets(st.lo, st.hi))

    set_quant_state(qmodel, observing=True, weights=False)
    try:
        _run(qmodel, batches, device)
    finally:
        set_quant_state(qmodel, observing=False)
    for name, q in quantizers(qmodel, weights=False):
        if getattr(q, "observer", None) is not None and not q.observer.seen:
            raise RuntimeError(f"quantization point {name} saw no calibration data")  # our invariant
        q.update_qparams()
        if hasattr(q, "observer"):
            q.observer.reset()  # frees the kept samples
    for m in qmodel.modules():
        if isinstance(m, (QuantConv2d, QuantLinear)):
            m.weight_quant.calibrate_from(m.weight)
    set_quant_state(qmodel, fake_quant=True)
    return qmodel.train(was_training)
