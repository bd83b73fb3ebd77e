"""Quantized checkpoints: one safetensors file holding the float model's config, its
(BN-folded, migration-folded) weights and every quantization parameter — scales, zero points,
observed ranges, migration factors, shift offsets, divisor exponent windows — with the
:class:`~vitedge.quantization.QuantConfig` (method, bit widths, switches) as JSON metadata.

:func:`load_quantized` rebuilds the float model from its config, folds BN, inserts the same
points (:func:`~vitedge.quantization.prepare`) and loads every tensor strictly: the result gives
bit-identical logits. This kind registers itself in :mod:`vitedge.io`'s table, so
``vitedge.save``, ``vitedge.load`` and :func:`vitedge.io.load_bundle` handle these files too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

from vitedge.errors import VitedgeError
from vitedge.io import CheckpointKind, read_metadata, register_checkpoint_kind
from vitedge.models.checkpoint import load_state_dict_into, read_state_dict, save_float
from vitedge.models.registry import create_model
from vitedge.quantization.config import QuantConfig
from vitedge.quantization.plan import PrecisionPlan, keep_in_float
from vitedge.quantization.points import is_quantized, prepare, quantizers, set_quant_state

__all__ = ["QUANT_FORMAT_VERSION", "is_quantized_checkpoint", "load_quantized", "save_quantized"]

QUANT_FORMAT_VERSION = 2  # 2: points left in float are recorded (written only when there are some)
_KEY = "quantization"


def save_quantized(qmodel: nn.Module, path: str | os.PathLike, *,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write a fake-quantized model (from :func:`~vitedge.quantize`) to ``path`` atomically.
    ``extra`` is kept beside the quantization record (class names, accuracy …). Points switched
    kept in float (the precision plan's ``in_float``, or ``fake_quant = False`` set by hand: the
    export then writes them in float) are recorded, and so is the plan's sensitivity record."""
    cfg = getattr(qmodel, "quant_config", None)
    if cfg is None or not is_quantized(qmodel):
        raise VitedgeError("this model is not quantized; save float models with vitedge.save, or "
                           "quantize it first with vitedge.quantize")
    in_float = [name for name, q in quantizers(qmodel) if q.in_float or not q.fake_quant]
    # format 1 when every point is on, so an older vitedge still reads such files as they are
    record: dict[str, Any] = {"format_version": 2 if in_float else 1, "config": cfg.to_dict()}
    if in_float:
        record["float_points"] = in_float
    plan = getattr(qmodel, "precision_plan", None)
    if plan is not None:
        record["plan"] = plan.to_dict()
    return save_float(qmodel, path, extra={**dict(extra or {}), _KEY: record})


def is_quantized_checkpoint(path: str | os.PathLike) -> bool:
    """True for a vitedge checkpoint written by :func:`save_quantized`."""
    try:
        return _KEY in read_metadata(path)["extra"]
    except VitedgeError:
        return False


def load_quantized(path: str | os.PathLike) -> nn.Module:
    """The fake-quantized model saved at ``path``, in eval mode with every point on but those
    it was saved with in float."""
    meta = read_metadata(path)
    record = meta["extra"].get(_KEY)
    if record is None:
        raise VitedgeError(f"{path} holds a float model, not a quantized one; load it with "
                           "vitedge.load, or quantize it with vitedge.quantize")
    version = int(record.get("format_version", 0))
    if version > QUANT_FORMAT_VERSION:
        raise VitedgeError(f"{path} was written by a newer vitedge (quantization format {version}); "
                           "upgrade vitedge to load it")
    cfg = QuantConfig.from_dict(record["config"])
    arch = meta["arch"]
    qmodel = prepare(create_model(arch["name"], **arch["kwargs"]), cfg)
    # a checkpoint written mid-QAT also holds the learned log step sizes; ``scale`` is current
    state = {k: v for k, v in read_state_dict(path).items() if not k.endswith(".log_scale")}
    load_state_dict_into(qmodel, state, source=str(path))
    set_quant_state(qmodel, fake_quant=True)
    points = dict(quantizers(qmodel))
    for name in record.get("float_points", []):
        if name not in points:
            raise VitedgeError(f"{path} keeps the point {name!r} in float, but its model has no such point; "
                               "the file is damaged: quantize the float model again")
    keep_in_float(qmodel, record.get("float_points", []))
    if "plan" in record:
        qmodel.precision_plan = PrecisionPlan.from_dict(record["plan"])
    return qmodel.eval()


register_checkpoint_kind(CheckpointKind(
    name="quantized", holds_model=lambda model: getattr(model, "quant_config", None) is not None,
    holds_file=lambda extra: _KEY in extra, save=save_quantized, load=load_quantized), first=True)
