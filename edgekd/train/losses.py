"""Distillation losses, per example so that labelled and unlabeled clips can share a batch.

- KD: alpha * T^2 * KL(teacher || student) at temperature T (Hinton et al., 2015). Both sides go
  through `log_softmax` (never `log(softmax(.))`), so the term stays finite for confident teachers;
  T^2 keeps the soft-target gradient scale independent of T.
- CE on the labels for labelled clips (label -1 = unlabeled: soft labels are its only supervision).
- Feature matching (FitNets-style): a learned projection of the student's pooled features regresses
  the teacher's embedding; rows without a teacher embedding are masked out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

UNLABELED = -1


@dataclass(frozen=True)
class LossWeights:
    alpha: float
    temperature: float
    feature: float = 0.0
    unlabeled: float = 1.0
    label_smoothing: float = 0.0
    trust_wrong_teacher: bool = True  # False: labelled rows the teacher gets wrong learn from the label only


def teacher_log_probs(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Teacher log-probabilities at T; -inf logits (classes a top-k cache did not keep) get zero mass."""
    return F.log_softmax(teacher_logits.float() / temperature, dim=-1)


def kd_per_example(
    student_logits: torch.Tensor, teacher_logp: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 * KL(teacher || student) per example; `teacher_logp` already at temperature T.

    Classes where the teacher's log-probability is -inf (outside a top-k union) are dropped from the
    student's softmax as well, so both distributions live on the same subset.
    """
    kept = ~torch.isneginf(teacher_logp)  # NaN stays "kept": it must poison the loss, not vanish
    student = student_logits.float().masked_fill(~kept, float("-inf"))
    s = F.log_softmax(student / temperature, dim=-1)
    p = teacher_logp.exp()
    # 0 * log 0 := 0 for classes the teacher gives no mass (top-k caches)
    kl = torch.where(p == 0, torch.zeros_like(p), p * (teacher_logp - s)).sum(-1)
    return kl * temperature * temperature


def distill_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logp: torch.Tensor | None,
    w: LossWeights,
    feature_error: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its components for logging.

    `labels` may be one-hot-mixed (float [N, C], mixup; an all-zero row is unlabeled) or class indices with
    -1 for unlabeled rows;
    `feature_error` is the per-example feature-matching MSE (NaN rows masked).
    """
    logp = F.log_softmax(student_logits.float(), dim=-1)
    if labels.dtype.is_floating_point:  # soft (mixup) targets; an unlabeled row has no mass
        labelled = labels.sum(-1) > 0
        smooth = w.label_smoothing / logp.shape[-1]
        ce_rows = -((labels * (1 - w.label_smoothing) + smooth) * logp).sum(-1)
    else:
        labelled = labels != UNLABELED
        ce_rows = F.cross_entropy(
            student_logits.float(),
            labels.clamp_min(0),
            label_smoothing=w.label_smoothing,
            reduction="none",
        )
    lab = labelled.float()
    row_weight = lab + (1 - lab) * w.unlabeled
    alpha: torch.Tensor | float = w.alpha if teacher_logp is not None else 0.0
    use_kd = teacher_logp is not None and (w.alpha > 0 or not bool(labelled.all()))
    kd_rows = kd_per_example(student_logits, teacher_logp, w.temperature) if use_kd else torch.zeros_like(lab)
    if use_kd and not w.trust_wrong_teacher and not labels.dtype.is_floating_point:
        # where the label proves the teacher wrong, its soft label would teach the student that mistake
        alpha = alpha * (teacher_logp.argmax(-1) == labels).float()
    # labelled rows: (1 - a) CE + a KD; unlabeled rows: KD alone, weighted
    rows = lab * ((1 - alpha) * ce_rows + alpha * kd_rows) + (1 - lab) * w.unlabeled * kd_rows
    loss = rows.sum() / row_weight.sum().clamp_min(1e-6)
    feat = torch.zeros((), device=student_logits.device)
    if feature_error is not None and w.feature > 0:
        ok = torch.isfinite(feature_error)
        if bool(ok.any()):
            feat = feature_error[ok].mean()
            loss = loss + w.feature * feat
    n_lab = lab.sum().clamp_min(1.0)
    parts = {
        "ce": float((ce_rows.detach() * lab).sum() / n_lab),
        "kd": float(kd_rows.detach().mean()) if use_kd else 0.0,
        "feature": float(feat.detach()),
    }
    return loss, parts


def expand_topk(
    values: torch.Tensor, index: torch.Tensor, n_classes: int, student: torch.Tensor
) -> torch.Tensor:
    """Dense teacher logits for subset KD over the union of the teacher's and the student's top-k.

    Classes in the teacher's top-k keep their logits; classes only in the student's top-k get the
    teacher's smallest stored logit (an upper bound on what was cut off, so the student is still
    pushed down there); every other class is -inf (no mass on either side of the KL).
    """
    k = values.shape[-1]
    dense = torch.full((values.shape[0], n_classes), float("-inf"), device=values.device)
    floor = values.min(dim=-1, keepdim=True).values.expand(-1, k)
    dense.scatter_(1, student.topk(k, dim=-1).indices, floor)
    dense.scatter_(1, index, values.float())
    return dense
