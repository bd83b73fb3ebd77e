"""Building blocks shared by both families: BatchNorm folding and block-width overrides.

BN folding follows the Microsoft EfficientViT shape: every conv-BN module knows how to ``fuse()``
itself into a plain layer, and :func:`fuse_bn` walks a model and replaces each such module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from vitedge.errors import VitedgeError

BlockWidths = Mapping[str, Mapping[str, Any]]


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a new conv equal to ``bn(conv(x))`` in eval mode (bias always present)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
        device=conv.weight.device, dtype=conv.weight.dtype,
    )
    fused.weight.copy_(conv.weight * scale[:, None, None, None])
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


@torch.no_grad()
def fuse_bn_linear(bn: nn.BatchNorm1d, linear: nn.Linear) -> nn.Linear:
    """Return a new linear equal to ``linear(bn(x))`` in eval mode (BN *before* the linear)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    fused = nn.Linear(linear.in_features, linear.out_features, bias=True,
                      device=linear.weight.device, dtype=linear.weight.dtype)
    fused.weight.copy_(linear.weight * scale[None, :])
    bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
    fused.bias.copy_(bias + linear.weight @ shift)
    return fused


def fuse_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm of ``model`` into its neighbouring conv/linear, in place.

    Modules that can fold themselves expose ``fuse() -> nn.Module``; the returned module replaces
    them. The model is switched to eval mode (folding uses running statistics). Raises if a
    BatchNorm is left over, so an export can trust that none remains.
    """
    model.eval()
    _fuse_children(model)
    leftover = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if leftover:
        raise RuntimeError(f"fuse_bn left BatchNorm modules unfused: {leftover[:5]}")
    return model


def _fuse_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        if hasattr(child, "fuse"):
            setattr(module, name, child.fuse())
        else:
            _fuse_children(child)


class WidthOverrides:
    """Per-block width overrides, keyed by the block's module path (e.g. ``stages.1.blocks.0``).

    A pruned model is rebuilt from its saved config alone: the pruner records the surviving
    widths here, and each block asks for its own entry while the model is built. Every entry
    must be consumed exactly as spelled, so a typo cannot silently build the dense model.

    Example::

        widths = WidthOverrides({"stages.1.blocks.0": {"mid_channels": 40}})
        mid = widths.take("stages.1.blocks.0", "mid_channels", default=64)
        widths.check_all_used()
    """

    def __init__(self, overrides: BlockWidths | None) -> None:
        self._overrides = {path: dict(keys) for path, keys in (overrides or {}).items()}
        self._used: set[tuple[str, str]] = set()
        self._prefix = ""

    def take(self, path: str, key: str, default: Any) -> Any:
        path = self._prefix + path
        entry = self._overrides.get(path, {})
        if key in entry:
            self._used.add((path, key))
            return entry[key]
        return default

    def under(self, prefix: str) -> WidthOverrides:
        """A view for a submodule at ``prefix`` (e.g. ``"backbone."``): it takes ``prefix + path``
        and counts as used here, so the owner's :meth:`check_all_used` sees the whole model."""
        view = WidthOverrides(None)
        view._overrides, view._used, view._prefix = self._overrides, self._used, self._prefix + prefix
        return view

    def check_all_used(self) -> None:
        unused = [f"{p}.{k}" for p, keys in self._overrides.items() for k in keys
                  if (p, k) not in self._used]
        if unused:
            raise VitedgeError(f"block_widths entries match no block of this model: {unused[:5]}; "
                               "check the module paths and keys")
