"""Knowledge distillation (Hinton, Vinyals, Dean 2015): the student also learns the teacher's softened outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(hard_loss: torch.Tensor, logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                      alpha: float, temperature: float) -> torch.Tensor:
    """``(1 - alpha) * hard_loss + alpha * T^2 * KL(teacher || student)``, both softened at temperature ``T``.

    The ``T^2`` keeps the soft term's gradients on the scale of the hard loss's as ``T`` changes (the paper's
    remark), so one ``alpha`` means the same at any temperature."""
    t = temperature
    soft = F.kl_div(F.log_softmax(logits.float() / t, dim=1), F.log_softmax(teacher_logits.float() / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    return (1 - alpha) * hard_loss + alpha * soft
