"""Quantization-aware training: make a calibrated fake-quant model trainable.

Two ways to adapt the ranges while the weights fine-tune (``vitedge.train.fit`` trains the
result like any model; distil from the float model to recover accuracy):

- ``learn_scales=True`` (LSQ, as Trio-ViT's release): every step size is learned with the LSQ
  gradient through a ``log_scale`` parameter (see :class:`~vitedge.quantization.Quantizer`);
  observers are off. These are 0-d/1-D, so the trainer's AdamW gives them no weight decay;
  :func:`scale_parameters` lists them for a learning rate of their own.
- ``learn_scales=False``: activations follow an EMA of each batch's range and weight scales are
  re-derived from the current weights every step (classic fake-quant QAT).

:func:`freeze` ends either: ranges fixed, nothing observed, nothing learned — the state to
evaluate, save and export in. :func:`observe` toggles observation alone.

Example::

    qmodel = prepare_qat(vitedge.quantize(model, calib, method="trio"))
    opt = torch.optim.AdamW([{"params": weights}, {"params": scale_parameters(qmodel), "lr": 4e-4}])
    ...  # train
    freeze(qmodel)
"""

from __future__ import annotations

import torch.nn as nn

from vitedge.errors import VitedgeError
from vitedge.quantization.points import is_quantized, quantizers
from vitedge.quantization.quantizer import Quantizer

__all__ = ["freeze", "observe", "prepare_qat", "scale_parameters"]


def _check(model: nn.Module) -> None:
    if not is_quantized(model):
        raise VitedgeError("this model has no quantization points; quantize it first "
                           "(vitedge.quantize(model, calib_data))")


def prepare_qat(qmodel: nn.Module, *, learn_scales: bool = True) -> nn.Module:
    """Switch a calibrated fake-quant model to training, in place (see the module doc)."""
    _check(qmodel)
    for _, q in quantizers(qmodel):
        if not isinstance(q, Quantizer):
            continue  # the log2 divisor has no scale: straight-through only
        q.fake_quant = not q.in_float
        q.learn(learn_scales)
        if learn_scales:
            q.observing = q.track = False
        else:
            q.set_observer("minmax" if q.kind == "weight" else "ema")
            q.observing = q.track = True
    return qmodel.train()


def observe(qmodel: nn.Module, enabled: bool = True, observer: str = "ema") -> nn.Module:
    """Let activation points follow the data (``observer``, refreshed every batch) or stop."""
    _check(qmodel)
    for _, q in quantizers(qmodel, weights=False):
        if isinstance(q, Quantizer):
            if enabled:
                q.set_observer(observer)
                q.learn(False)
            q.observing = q.track = enabled
    return qmodel


def freeze(qmodel: nn.Module) -> nn.Module:
    """Fix every range: no observation, no learned scales (evaluation, saving, export)."""
    _check(qmodel)
    for _, q in quantizers(qmodel):
        q.observing = q.track = False
        if isinstance(q, Quantizer):
            q.learn(False)
            q.set_observer(q.spec.observer)  # drop EMA state; the calibration observer again
    return qmodel


def scale_parameters(qmodel: nn.Module) -> list[nn.Parameter]:
    """The learned step sizes (``log_scale``) of a :func:`prepare_qat`-ed model, each shared
    point once; empty when scales are not learned."""
    return [q.log_scale for _, q in quantizers(qmodel) if isinstance(q, Quantizer) and q.learning]
