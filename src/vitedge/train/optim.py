"""AdamW with decoupled weight decay off for norms and biases, and a per-step cosine schedule.

The learning rate is a pure function of the global step (:func:`lr_at`), so resuming needs only
the step count — there is no scheduler object whose state could drift from the optimizer's.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from vitedge.train.config import OptimConfig

# Quantizers' learned step sizes (LSQ, vitedge.quantization.Quantizer) are parameters of this name.
STEP_SIZE_PARAM = "log_scale"


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters; 1-D tensors (norms, biases) get no decay.

    Decaying BatchNorm/LayerNorm scales and biases only hurts small models, hence the split.
    Learned quantizer step sizes (QAT) form a third group whose learning rate is
    ``cfg.step_size_lr_mult`` times the schedule's: a short QAT wants the weights to stay near
    the float optimum (low lr) while the ranges still move.
    """
    decay, no_decay, step_sizes = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.rsplit(".", 1)[-1] == STEP_SIZE_PARAM:
            step_sizes.append(param)
        else:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr_mult": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0}]
    if step_sizes:
        groups.append({"params": step_sizes, "weight_decay": 0.0, "lr_mult": cfg.step_size_lr_mult})
    # foreach=False: one fixed kernel path, so the same run gives the same bits everywhere.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, foreach=False)


def lr_at(step: int, total_steps: int, warmup_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    Linear warm-up from ``warmup_lr`` to ``lr`` over ``warmup_steps``, then a half cosine from
    ``lr`` down to ``min_lr`` at the last step.
    """
    if step < warmup_steps:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the schedule's ``lr``, scaled by each group's ``lr_mult`` (1 when absent)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
