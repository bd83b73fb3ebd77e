"""The Trio-ViT transforms (``shared/specs/trio-vit-ptq.md``): where they apply and their math.

- :class:`ChannelMigration` divides a depthwise conv's input by per-channel factors ``s_c``; the
  conv's filters are multiplied by ``s_c`` once, so the float function is unchanged (output
  channel c of a depthwise conv reads input channel c only). Net effect: per-channel activation
  scales ``Δ·s_c`` realised by one per-tensor quantizer.
- :class:`ChannelShift` subtracts each channel's mid-range ``z_c`` from a conv's input; the conv
  adds back ``Ŵ·z`` computed with the weight it actually uses (quantized or not), so the shift is
  exact before activation rounding.
- The log2 divisor lives in :class:`~vitedge.quantization.quantizer.Log2Quantizer`.

Sites, by block type (module paths relative to the block; BN already folded):

===================  =====================  ======================
block                migration (DW input)   shifting (proj input)
===================  =====================  ======================
MIT ``MBConv``       ``depth_conv.conv``    ``point_conv.conv``
MIT ``FusedMBConv``  —                      ``point_conv.conv``
MSRA ``PatchMerging``  ``conv2``            ``conv3``
MSRA ``ConvMlp``     —                      ``pw2``
===================  =====================  ======================

Deployment (ONNX QDQ): the Hardswish / ReLU between the producer and the migrated conv stops
``1/s_c`` from folding into the producer's float weights, so it stays one ``Mul`` before the
QuantizeLinear (an integer accelerator folds it into the producer's per-channel requantization
instead). Likewise the shift is one ``Sub``; its compensation folds into the conv bias exactly
for 1×1 unpadded convs (all default shift sites) — see :meth:`ChannelShift.compensation`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.models.efficientvit_mit import FusedMBConv, MBConv
from vitedge.models.efficientvit_msra import ConvMlp, PatchMerging
from vitedge.quantization.config import TrioConfig
from vitedge.quantization.quantizer import _Sample

__all__ = ["ChannelMigration", "ChannelShift", "ChannelStats", "find_sites", "migration_factors",
           "shift_offsets"]

# block type -> (migration site, shifting site), child paths inside the block
SITES: dict[type[nn.Module], tuple[str | None, str | None]] = {
    MBConv: ("depth_conv.conv", "point_conv.conv"),
    FusedMBConv: (None, "point_conv.conv"),
    PatchMerging: ("conv2", "conv3"),
    ConvMlp: (None, "pw2"),
}


def find_sites(model: nn.Module, cfg: TrioConfig) -> tuple[set[str], set[str]]:
    """Module paths of the convs whose input is migrated / shifted under ``cfg``."""
    migration, shifting = set(), set()
    for path, module in model.named_modules():
        for block, (mig, shift) in SITES.items():
            if isinstance(module, block):
                if cfg.migration and mig is not None:
                    migration.add(f"{path}.{mig}" if path else mig)
                if cfg.shifting and shift is not None:
                    shifting.add(f"{path}.{shift}" if path else shift)
    return migration, shifting


class ChannelStats:
    """Per-channel min and max of a conv input, plus a sample of all its values (for the
    tensor-wide quantile of the migration threshold)."""

    def __init__(self, samples: int = 1 << 16) -> None:
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None
        self.sample = _Sample(samples, seed=1)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        dims = [d for d in range(x.ndim) if d != 1]
        lo, hi = x.amin(dim=dims), x.amax(dim=dims)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        self.sample.add(x)

    def quantile(self, q: float, absolute: bool = False) -> float:
        """The ``q``-quantile of all values seen (of their magnitudes if ``absolute``)."""
        values = self.sample.values()
        return float(torch.quantile(values.abs() if absolute else values, q))

    def peak(self, absolute: bool = False) -> torch.Tensor:
        """Per-channel maximum (of magnitudes if ``absolute``)."""
        return torch.maximum(self.hi, -self.lo) if absolute else self.hi


def migration_factors(channel_max: torch.Tensor, tensor_quantile: float, cfg: TrioConfig) -> torch.Tensor:
    """``s_c = clamp(M_c / T, lo, hi)`` with ``T = max(quantile, mean_c M_c)``; with
    ``pow2_migration`` rounded to ``2^clip(round(log2 s_c), 0, 5)``."""
    threshold = max(float(tensor_quantile), float(channel_max.mean()))
    if not threshold > 0 or not math.isfinite(threshold):
        return torch.ones_like(channel_max)
    s = (channel_max / threshold).clamp(*cfg.migration_clamp)
    if cfg.pow2_migration:
        s = torch.exp2(torch.round(torch.log2(s)).clamp(0, 5))
    return s


def shift_offsets(channel_min: torch.Tensor, channel_max: torch.Tensor) -> torch.Tensor:
    """``z_c = (max_c + min_c) / 2``: centres every channel on zero."""
    return (channel_max + channel_min) / 2


class ChannelMigration(nn.Module):
    """``x / factor`` per channel (axis 1); ``channel_min``/``channel_max`` record the untransformed
    input's calibration range (for plots and the report)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("factor", torch.ones(channels))
        self.register_buffer("channel_min", torch.zeros(channels))
        self.register_buffer("channel_max", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.factor.view(1, -1, 1, 1)


class ChannelShift(nn.Module):
    """``x − offset`` per channel (axis 1); the conv adds :meth:`compensation` back."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(channels))
        self.register_buffer("channel_min", torch.zeros(channels))
        self.register_buffer("channel_max", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.offset.view(1, -1, 1, 1)

    def compensation(self, conv: nn.Conv2d, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """What ``conv`` with ``weight`` makes of the constant map ``offset``: added to
        ``conv(x − offset)`` it restores ``conv(x)``. A bias ``(1, O, 1, 1)`` for 1×1 unpadded convs
        (foldable into the conv's bias at export); otherwise the exact map, borders included."""
        if conv.kernel_size == (1, 1) and conv.padding in ((0, 0), 0):
            c_in = weight.shape[1]
            w = weight.reshape(conv.groups, -1, c_in)  # (groups, out per group, in per group)
            z = self.offset.to(weight.dtype).reshape(conv.groups, c_in, 1)
            return torch.bmm(w, z).reshape(1, -1, 1, 1)
        z = self.offset.to(weight.dtype).view(1, -1, 1, 1).expand(1, -1, *x.shape[-2:])
        return F.conv2d(z, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
