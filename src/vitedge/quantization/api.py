"""``vitedge.quantize``: the one call from a float model and calibration images to a
fake-quantized model."""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any

import torch
import torch.nn as nn

from vitedge.errors import VitedgeError
from vitedge.quantization.calibrate import calibrate, calibration_batches
from vitedge.quantization.config import TARGET_PACKAGES, QuantConfig
from vitedge.quantization.plan import (
    auto_plan,
    close_enough,
    fixed_plan,
    keep_in_float,
    score_against,
    select_points,
)
from vitedge.quantization.points import prepare, quantizers
from vitedge.quantization.quantizer import Quantizer
from vitedge.quantization.reconstruct import reconstruct

__all__ = ["check_target_runtime", "quantize"]


def check_target_runtime(target: str) -> None:
    """A one-line error when ``target``'s runtime is not installed here."""
    package = TARGET_PACKAGES.get(target)
    if package is not None and importlib.util.find_spec(package) is None:
        raise VitedgeError(f"target {target} needs the {package} package, which is not installed: "
                           f"`pip install {package}`, or quantize for another target (simulation runs anywhere)")


def quantize(
    model: nn.Module,
    calib_data: Any,
    method: str | None = None,
    w_bits: int | None = None,
    a_bits: int | None = None,
    per_channel: bool | None = None,
    *,
    config: QuantConfig | None = None,
    holdout: Any = None,
    target: str | None = None,
) -> nn.Module:
    """A fake-quantized copy of ``model`` (BN folded, every point calibrated), same forward
    signature; ``model`` is left untouched.

    ``calib_data``: image batches, ``(images, labels)`` pairs (a DataLoader) or single images —
    a few hundred training images with the eval transform. ``method`` is ``"trio"`` (default:
    MSE ranges and the three Trio-ViT transforms), ``"minmax"``, ``"percentile"`` or ``"mse"``.
    Arguments given explicitly override the matching fields of ``config``
    (:class:`~vitedge.quantization.QuantConfig`, for everything else).

    ``target`` (``"openvino"``, ``"onnxruntime"``, ``"tensorrt"`` or ``"simulation"``; default
    ``config.target``) is the runtime the model will deploy on: the points go where that runtime
    fuses them into integer kernels (:data:`~vitedge.quantization.config.TARGETS`), the checkpoint
    records it and ``vitedge.export(q, path, precision="int8")`` writes that runtime's graph. A
    target whose runtime is not installed is an error before any work.

    Points named in ``config.keep_float`` stay in float; with ``config.auto_float`` (the
    default) so do those the measured precision plan keeps in float
    (:func:`~vitedge.quantization.auto_plan`), scored on ``holdout`` — other training images
    than the calibration ones, in any form ``calib_data`` takes; the calibration images when
    not given. The plan is ``qmodel.precision_plan``.

    Example::

        qmodel = vitedge.quantize(model, loader, method="trio", w_bits=8, a_bits=8)
        qmodel = vitedge.quantize(model, loader, config=QuantConfig(method="minmax", per_channel=False))
        qmodel = vitedge.quantize(model, loader, target="openvino")      # OpenVINO's int8 graph
        save_quantized(qmodel, "b0_w8a8.safetensors")
    """
    overrides = {k: v for k, v in dict(method=method, w_bits=w_bits, a_bits=a_bits,
                                       per_channel=per_channel).items() if v is not None}
    cfg = dataclasses.replace(config or QuantConfig(), **overrides)  # validates
    if target is not None and target != cfg.target:
        cfg = cfg.retarget(target)
    check_target_runtime(cfg.target)
    batches = calibration_batches(calib_data, cfg.max_calib_batches)
    qmodel = prepare(model, cfg)
    keep_in_float(qmodel, select_points(qmodel, cfg.keep_float))  # a bad name fails before calibration
    calibrate(qmodel, batches)
    if cfg.reconstruct_iters:
        reconstruct(qmodel, model, batches, iters=cfg.reconstruct_iters)
    if cfg.auto_float:
        scored = batches if holdout is None else calibration_batches(holdout)
        auto_plan(qmodel, model, scored)
        if not cfg.reconstruct_iters:
            _learn_scales_when_short(qmodel, model, batches, scored, cfg.auto_reconstruct)
    else:
        qmodel.precision_plan = fixed_plan(qmodel)
    return qmodel.eval()


def _learn_scales_when_short(qmodel: nn.Module, model: nn.Module, calib: list[torch.Tensor],
                             scored: list[torch.Tensor], iters: int) -> None:
    """When the precision plan leaves the held-out predictions short of its agreement target (no
    kind of point in float helps: the error is spread over many layers, as on a segmentation
    model's every pixel), learn the step sizes ``iters`` steps on the calibration images and
    keep them if the held-out divergence drops; the plan records either outcome."""
    plan = qmodel.precision_plan
    planned = plan.planned
    if not iters or planned is None or close_enough(planned):
        return
    before = plan.planned
    scales = {name: q.scale.detach().clone() for name, q in quantizers(qmodel) if isinstance(q, Quantizer)}
    reconstruct(qmodel, model, calib, iters=iters)
    after = score_against(qmodel, model, scored)
    if after.kl < before.kl:
        plan.planned = after
        plan.learned_steps = iters
        plan.reasons += (f"step sizes learned {iters} steps on the calibration images (still short of the "
                         f"target): held-out {before} → {after}",)
        return
    points = dict(quantizers(qmodel))
    with torch.no_grad():
        for name, scale in scales.items():
            points[name].scale.copy_(scale)
    plan.reasons += (f"learning the step sizes {iters} steps did not help (held-out {before} → {after}): "
                     "calibrated ones kept",)
