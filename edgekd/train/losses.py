"""Distillation loss: (1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher || student).

Both distributions go through `log_softmax` (never `log(softmax(.))`), so the KL term stays finite
for confident teachers; the T^2 factor keeps the soft-target gradient scale independent of T
(Hinton et al., 2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Return the total loss and its components (for logging)."""
    ce = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    if teacher_logits is None or alpha == 0.0:
        return ce, {"ce": float(ce.detach()), "kd": 0.0}
    t = temperature
    kd = F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=-1),
        F.log_softmax(teacher_logits.float() / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)
    loss = (1.0 - alpha) * ce + alpha * kd
    return loss, {"ce": float(ce.detach()), "kd": float(kd.detach())}
