"""Post-training reconstruction: after calibration, learn every step size on the calibration
images alone so the quantized model's outputs match the float model's (Trio-ViT's release
learns its activation steps LSQ-style the same way; no labels, no other data, weights fixed).

Per iteration: one calibration batch (split into steps of at most ``MAX_STEP_PIXELS`` input
pixels, so that a batch of whole segmentation frames fits in memory with its gradients), the
float model's logits as the target, the KL divergence
of the softened distributions (temperature ``T``, scaled by ``T²``) as the loss, Adam on the
``log_scale`` of every uniform point (:func:`~vitedge.quantization.qat.prepare_qat`). The log2
divisor keeps its exponent window. The model comes back frozen (fixed ranges), in eval mode.

Example::

    qmodel = quantize(model, calib, config=QuantConfig(method="trio", reconstruct_iters=300))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.quantization.qat import freeze, prepare_qat, scale_parameters

__all__ = ["MAX_STEP_PIXELS", "reconstruct"]

# 16 images at 224²: a 96-px classifier's 64-image batch is one step, a 352×480 frame batch 4 frames
MAX_STEP_PIXELS = 16 * 224 * 224


def reconstruct(qmodel: nn.Module, teacher: nn.Module, batches: Sequence[torch.Tensor], *, iters: int,
                lr: float = 1e-3, temperature: float = 1.0) -> list[float]:
    """Learn ``qmodel``'s step sizes for ``iters`` steps (see the module doc); returns the loss
    of each step. ``batches``: the calibration image tensors."""
    device = next(qmodel.parameters()).device
    batches = [chunk for b in batches
               for chunk in b.split(max(1, MAX_STEP_PIXELS // (b.shape[-2] * b.shape[-1])))]
    was_training = teacher.training
    with torch.no_grad():
        teacher.eval()
        targets = [F.softmax(teacher(b.to(device)) / temperature, dim=1) for b in batches]
        teacher.train(was_training)  # the caller's model is left as it came
    prepare_qat(qmodel)
    qmodel.eval()  # no dropout; the quantizers learn in eval mode as well
    params = scale_parameters(qmodel)
    frozen = [p for p in qmodel.parameters() if p.requires_grad and all(p is not q for q in params)]
    for p in frozen:
        p.requires_grad_(False)  # weights stay as trained
    optimizer = torch.optim.Adam(params, lr=lr)
    losses = []
    try:
        for step in range(iters):
            i = step % len(batches)
            logits = qmodel(batches[i].to(device))
            loss = F.kl_div(F.log_softmax(logits / temperature, dim=1), targets[i],
                            reduction="batchmean") * temperature**2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        for p in frozen:
            p.requires_grad_(True)
    freeze(qmodel)
    return losses
