"""Domain-adversarial training (DANN, Ganin et al. 2016) between synthetic and real speech.

The labelled rows are synthetic voices, the unlabelled rows real recordings (the built-in pool). A small
critic reads the student's pooled features and guesses which domain a row came from; a gradient-reversal
layer makes the student's features *worse* for that guess, so a real channel stops being something the
student can see — the shortcut that soft or hard `_unknown_` labels on real speech teach.

Plain DANN aligns the two feature distributions as wholes, and the two domains do not hold the same
words: the synthetic rows are mostly keywords, the real pool mostly other speech. Aligning them as they
are would pull real speech toward keywords. So the synthetic rows are importance-weighted by class
(IWDAN, Combes et al. 2020): each class weighs what the teacher says it is worth in the real pool (its mean
posterior there) over its share of the labelled rows, and the critic compares like with like.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edgekd.train.losses import UNLABELED
from edgekd.train.soft_labels import SoftLabels


class _Reverse(torch.autograd.Function):
    """Identity forward; the gradient times -scale backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def class_weights(labels: np.ndarray, soft: SoftLabels | None, n_classes: int) -> np.ndarray:
    """Per class: the teacher's mean posterior on the unlabelled rows over the class's share of the
    labelled rows (1 everywhere without a teacher). Classes absent from the labelled rows get 0."""
    lab = labels[labels != UNLABELED]
    share = np.bincount(lab, minlength=n_classes) / max(1, len(lab))
    if soft is None:
        return (share > 0).astype(np.float32)
    rows = np.flatnonzero(labels == UNLABELED)
    prior = np.zeros(n_classes)
    for i in range(0, len(rows), 4096):
        idx = torch.from_numpy(rows[i : i + 4096])
        t = soft.teacher_logits(idx, torch.zeros(len(idx), n_classes))
        prior += torch.softmax(t.float(), -1).sum(0).numpy()
    prior /= max(1, len(rows))
    return np.where(share > 0, prior / np.maximum(share, 1e-12), 0.0).astype(np.float32)


class DomainCritic(nn.Module):
    """The critic and its loss; `weight` is the peak reversal scale, reached along DANN's ramp."""

    def __init__(self, width: int, weight: float, weights_per_class: np.ndarray) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, 1))
        self.weight = weight
        self.register_buffer("per_class", torch.as_tensor(weights_per_class, dtype=torch.float32))

    def scale(self, progress: float) -> float:
        """2 / (1 + exp(-10 p)) - 1: no reversal while the features are still random, `weight` at the end."""
        return self.weight * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)

    def loss(self, features: torch.Tensor, labels: torch.Tensor, progress: float) -> torch.Tensor:
        """Balanced binary cross-entropy of the critic: real rows average to one half, the weighted
        synthetic rows to the other. Zero when the batch holds only one domain."""
        real = labels == UNLABELED
        w_syn = torch.where(
            real, torch.zeros_like(real, dtype=torch.float32), self.per_class[labels.clamp_min(0)]
        )
        if not bool(real.any()) or float(w_syn.sum()) <= 0:
            return torch.zeros((), device=features.device)
        logit = self.head(_Reverse.apply(features.float().flatten(1), self.scale(progress))).squeeze(-1)
        bce = nn.functional.binary_cross_entropy_with_logits(logit, real.float(), reduction="none")
        w = torch.where(real, 1.0 / real.sum(), w_syn / w_syn.sum())
        return 0.5 * (bce * w).sum()
