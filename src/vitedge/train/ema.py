"""Exponential moving average of a model's weights (Polyak averaging).

The EMA copy usually evaluates better than the raw weights late in training and is what gets
exported when enabled. Buffers that are not floating point (BatchNorm's batch counter) are
copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer step.

    Example::

        ema = ModelEMA(model, decay=0.9998)
        ...; optimizer.step(); ema.update(model)
        evaluate(ema.module, loader)
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(unwrap(model)).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = unwrap(model).state_dict()
        for name, ema_value in self.module.state_dict().items():
            value = current[name].detach()
            if ema_value.dtype.is_floating_point:
                ema_value.lerp_(value, 1.0 - self.decay)
            else:
                ema_value.copy_(value)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or DataParallel) wrapper."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model
