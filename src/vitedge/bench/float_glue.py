"""The float type of an INT8 file's glue on OpenVINO: bf16 only where it changes no prediction.

On a CPU with native bf16, OpenVINO runs every op of an INT8 file that is not int8 (softmax,
norms, the linear attention's denominator, the points a precision plan keeps in float) in bf16
unless told otherwise. That is faster, but it is not what the PyTorch simulation computes, and
the points a plan keeps in float are exactly the ones that could not take a short mantissa:
flowers17 B0 on OpenVINO, plan keeping ``KᵀV`` in float, scored 73.90 % with bf16 glue against
75.00 % with f32 glue (FP32 75.37 %; AMD EPYC Zen 4). So a vitedge INT8 file runs its glue in f32
(:func:`vitedge.deploy.runtimes.int8_float_glue`) unless :func:`check_float_glue` ran it both
ways on held-out training images and the predictions agreed.

Example::

    qmodel = vitedge.quantize(model, calib, target="openvino")
    check_float_glue(qmodel, held_out)   # {"float_glue": "f32", "agreement": 100.0, "kl": 1.9e-3}
    vitedge.export(qmodel, "b1.onnx", precision="int8")   # records it; the runtime honours it
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from vitedge.deploy import export
from vitedge.deploy.runtimes import OpenVinoRuntime, native_bf16
from vitedge.quantization.plan import MIN_KL, fixed_plan, predictions, score_logits

__all__ = ["MAX_KL", "MIN_AGREEMENT", "check_float_glue"]

MIN_AGREEMENT = 99.5  # % of held-out predictions (pixels for segmentation) bf16 glue must leave as they are
MAX_KL = MIN_KL / 10  # bf16 may add a tenth of the divergence below which the precision plan does not search


def check_float_glue(qmodel: nn.Module, images: Sequence[torch.Tensor], *, threads: int = 2,
                     min_agreement: float = MIN_AGREEMENT, max_kl: float = MAX_KL) -> dict[str, Any] | None:
    """Run ``qmodel``'s INT8 file on OpenVINO with f32 and with bf16 glue over ``images``
    (held-out training batches) and record in its config the glue the file will run with: bf16
    when the bf16 logits stay within ``max_kl`` (mean KL of the softmax, per image or pixel) of
    the f32 ones and at least ``min_agreement`` % of the argmax predictions are unchanged, else
    f32. Agreement alone is blind on training images: the model is sure of them, and flowers17
    B0's bf16 glue changed none of 256 held-out predictions but 3.3 % of the test ones; its KL
    (1.9e-3 on the held-out images) is what shows it. A line in the precision plan says which
    and why. ``None`` (nothing recorded, f32 stays) for a target other than ``openvino``, a CPU
    without native bf16 or no images."""
    config = qmodel.quant_config
    if config.target != "openvino" or not native_bf16() or not images:
        return None
    with tempfile.TemporaryDirectory(prefix="vitedge-float-glue-") as tmp:
        height, width = (int(d) for d in images[0].shape[-2:])  # a segmentation model's frames
        size = (height, width) if height != width else height
        path = export(qmodel, Path(tmp) / "int8.onnx", "int8", resolution=size)
        runs = {glue: OpenVinoRuntime(path, threads=threads, precision="int8", float_glue=glue)
                for glue in ("f32", "bf16")}
        logits = {glue: torch.cat([predictions(torch.from_numpy(np.asarray(run(b.numpy())))) for b in images])
                  for glue, run in runs.items()}
    score = score_logits(logits["bf16"], logits["f32"])
    agreement, kl = score.agreement, score.kl
    glue = "bf16" if agreement >= min_agreement and kl <= max_kl else "f32"
    qmodel.quant_config = dataclasses.replace(config, float_glue=glue)
    plan = getattr(qmodel, "precision_plan", None) or fixed_plan(qmodel)
    reason = (f"float glue on openvino: {glue} (bf16 against f32 on held-out images: KL {kl:.2e}, at most "
              f"{max_kl:.0e} allowed; {agreement:.2f} % of predictions unchanged, {min_agreement} % needed)")
    qmodel.precision_plan = dataclasses.replace(plan, reasons=(*plan.reasons, reason))
    return {"float_glue": glue, "agreement": agreement, "kl": kl}
