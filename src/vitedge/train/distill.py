"""Knowledge distillation loss (Hinton et al., 2015): the student matches the teacher's softened
class distribution as well as the labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      *, alpha: float = 0.5, temperature: float = 4.0,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """``(1 - alpha) * CE(student, targets) + alpha * T² * KL(softmax(t/T) || softmax(s/T))``.

    The T² factor keeps the soft term's gradient scale independent of the temperature, so
    ``alpha`` means the same at any T. KL is averaged over the batch (``batchmean``).
    """
    ce = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    if alpha == 0:
        return ce
    t = temperature
    kd = F.kl_div(F.log_softmax(student_logits.float() / t, dim=-1),
                  F.log_softmax(teacher_logits.detach().float() / t, dim=-1),
                  reduction="batchmean", log_target=True) * (t * t)
    return (1 - alpha) * ce + alpha * kd
