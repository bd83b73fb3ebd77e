"""Quantize a trained checkpoint: calibrate, evaluate, optionally QAT with distillation from the
float model, save — the recipe behind ``vitedge quantize CKPT --method trio --calib 1024
[--qat-epochs N]``, as one function the CLI and the study call.

Files in ``out``:

- ``model.safetensors`` — the fake-quantized model with every quantization parameter
  (:func:`~vitedge.quantization.save_quantized`; ``vitedge.load`` reloads it), with the classes,
  preprocessing and metrics in its ``extra``;
- ``quantize.json`` — the config and metrics as plain JSON;
- ``points.md`` — every quantization point with its scale and range;
- ``qat/`` — the QAT training run (resumable) when ``qat`` is given.

Calibration images are a seeded random subset of the training split with the evaluation
transform; the test split only measures.

Example::

    result = quantize_checkpoint("runs/b0/model.safetensors", QuantConfig(method="trio"),
                                 data=DataConfig(dataset="cifar10", root="data/cifar10"),
                                 calib=1024, out="runs/b0_int8")
    result.metrics["score_int8"] - result.metrics["score_fp32"]
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from vitedge.bench.float_glue import check_float_glue
from vitedge.errors import VitedgeError
from vitedge.io import load_bundle, write_text
from vitedge.quantization.api import check_target_runtime, quantize
from vitedge.quantization.checkpoint import save_quantized
from vitedge.quantization.config import QuantConfig
from vitedge.quantization.plan import replan
from vitedge.quantization.points import is_quantized
from vitedge.quantization.qat import freeze, prepare_qat
from vitedge.quantization.report import point_report, report_markdown
from vitedge.train import fit
from vitedge.train.config import DataConfig, TrainConfig
from vitedge.train.task_data import TaskData
from vitedge.train.trainer import jsonable_config

__all__ = ["QuantizeResult", "quantize_checkpoint"]

QUANTIZED_FILE = "model.safetensors"
REPORT_FILE = "quantize.json"
POINTS_FILE = "points.md"


@dataclass
class QuantizeResult:
    """The fake-quantized model (eval mode, ranges frozen), its metrics and where it was saved."""

    model: nn.Module
    metrics: dict[str, Any]
    path: Path | None = None


def quantize_checkpoint(
    checkpoint: str | os.PathLike,
    config: QuantConfig,
    *,
    data: DataConfig,
    calib: int = 1024,
    holdout: int = 256,
    qat: TrainConfig | None = None,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    verbose: bool = True,
    refine: Callable[[nn.Module], Any] | None = None,
) -> QuantizeResult:
    """Quantize the float model in ``checkpoint`` with ``config``, calibrated on ``calib``
    training images of ``data``; evaluate FP32 and INT8 on the test split. ``holdout`` other
    training images score the precision plan (``config.auto_float``); the calibration images
    do when the split has no others.

    ``refine`` is called with the quantized model before it is scored (e.g.
    :func:`vitedge.bench.latency_plan.latency_plan`, which keeps in float what runs faster so).

    ``qat`` (a :class:`vitedge.train.TrainConfig`; its ``epochs``, ``optim``, ``distill.alpha``
    and ``distill.temperature`` are used) fine-tunes the quantized model with learned step
    sizes (LSQ), distilled from the float model, then freezes it. Metrics (percent):
    ``score_fp32``, ``score_int8`` (after PTQ) and ``score_qat``.
    """

    if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 0:
        raise VitedgeError(f"the held-out set must hold a number of images >= 0, got {holdout!r}")
    if isinstance(calib, bool) or not isinstance(calib, int) or calib < 1:
        raise VitedgeError(f"the calibration set must hold a positive number of images, got {calib!r}; "
                           "a few hundred to 1024 training images is typical")
    check_target_runtime(config.target)
    checkpoint = Path(checkpoint)
    bundle = load_bundle(checkpoint)
    model = bundle.model
    if is_quantized(model):
        raise VitedgeError(f"{checkpoint} is already quantized; quantize the float checkpoint it came from")
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and (out_dir / QUANTIZED_FILE).exists():
        raise VitedgeError(f"{out_dir / QUANTIZED_FILE} already exists; choose another --out or delete it")
    task = TaskData(data, bundle.data_config, bundle.classes)

    held_out = task.sample(holdout, seed=seed, skip=calib) if config.auto_float and holdout > 0 else []
    # quantized before the float model is scored: a keep_float name that matches nothing fails first
    qmodel = quantize(model.eval(), task.sample(calib, seed=seed), config=config, holdout=held_out or None)
    if refine is not None:
        refine(qmodel)
        if held_out:
            replan(qmodel, model, held_out)  # what is left in INT8 may now matter in another place
    metrics: dict[str, Any] = {"checkpoint": str(checkpoint), "config": config.to_dict(),
                               "calib_images": calib, "metric": task.metric, "score_fp32": task.score(model)}
    metrics["score_int8"] = task.score(qmodel)
    metrics["precision_plan"] = qmodel.precision_plan.summary()
    if qmodel.precision_plan.float_points:
        metrics["float_points"] = list(qmodel.precision_plan.float_points)
    if qmodel.precision_plan.reasons:
        metrics["plan_reasons"] = list(qmodel.precision_plan.reasons)
    if qat is not None:
        qmodel = _qat(task, qat, qmodel, model, checkpoint, out_dir, verbose)
        metrics["score_qat"] = task.score(qmodel)
    # on OpenVINO with native bf16, the float ops run in bf16 only where that barely moves the logits
    glue = None
    if qmodel.quant_config.target == "openvino":
        glue = check_float_glue(qmodel, held_out or task.sample(min(calib, 256), seed=seed))
    if glue is not None:
        metrics["float_glue"] = glue
        metrics["plan_reasons"] = list(qmodel.precision_plan.reasons)

    path = None
    if out_dir is not None:
        path = save_quantized(qmodel, out_dir / QUANTIZED_FILE, extra={
            "classes": task.classes, "data_config": jsonable_config(task.data_config), "source": str(checkpoint),
            "metrics": {k: v for k, v in metrics.items() if k.startswith("score")}})
        report = json.dumps(metrics, indent=2)
        write_text(out_dir / REPORT_FILE, report)
        points = report_markdown(point_report(qmodel))
        write_text(out_dir / POINTS_FILE, points)
    return QuantizeResult(qmodel.eval(), metrics, path)


def _qat(task: Any, cfg: TrainConfig, qmodel: nn.Module, teacher: nn.Module, checkpoint: Path,
         out: Path | None, verbose: bool) -> nn.Module:
    """LSQ fine-tuning distilled from the float model; the result is frozen (fixed ranges)."""

    cfg = cfg.replace(model=str(checkpoint), out=str(out / "qat") if out is not None else cfg.out)
    result = fit(prepare_qat(qmodel), task.train_set, task.eval_set, cfg, data_config=task.data_config,
                 teacher=teacher, verbose=verbose)
    return freeze(result.model).eval()

