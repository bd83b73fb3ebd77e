"""BatchNorm re-estimation after pruning: the running statistics of the kept channels were
measured with the removed channels feeding later layers, so they no longer describe the pruned
network's activations. A few hundred training images through the model in train mode (no
gradients, no weight change) restore them — the standard step between pruning and judging or
fine-tuning a pruned model (it is not training: no parameter moves).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn

__all__ = ["recalibrate_batchnorm"]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm's running mean/variance by their average over ``batches`` (image
    tensors). Returns how many BatchNorm layers were re-estimated; the model ends in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches, not an EMA
    model.eval()
    for m in norms:
        m.train()  # only the norms see train mode: dropout and friends stay off
    device = next(model.parameters()).device
    for images in batches:
        model(images.to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
    return len(norms)
