"""Domain-adversarial training: importance weights per class, the reversed gradient, the ramp, and a
student whose features stop telling the two domains apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.train.domain import DomainCritic, class_weights
from edgekd.train.losses import UNLABELED
from edgekd.train.schedules import Schedule
from edgekd.train.soft_labels import SoftLabels
from edgekd.train.trainer import FitRun, FitSpec, TrainData, fit

torch.set_num_threads(1)
CPU = torch.device("cpu")


def test_class_weights_are_the_teachers_pool_prior_over_the_labelled_share() -> None:
    # labelled: class 0 twice as often as class 1, class 2 absent; pool: the teacher says 1 : 3 : 0
    y = np.array([0, 0, 1, UNLABELED, UNLABELED])
    logits = np.full((5, 3), -30.0, np.float32)
    logits[3, 0] = logits[4, 1] = 0.0  # the pool rows: one class-0 row, one class-1 row
    logits[4, 0] = np.log(1 / 3)  # row 4: p(0) = 0.25, p(1) = 0.75
    w = class_weights(y, SoftLabels.from_logits(logits), 3)
    prior = np.array([(1 + 0.25) / 2, 0.75 / 2, 0.0])
    np.testing.assert_allclose(w, [prior[0] / (2 / 3), prior[1] / (1 / 3), 0.0], rtol=1e-4)
    np.testing.assert_array_equal(class_weights(y, None, 3), [1.0, 1.0, 0.0])


def test_the_critic_reverses_and_scales_the_gradient_into_the_features() -> None:
    torch.manual_seed(0)
    critic = DomainCritic(4, weight=0.5, weights_per_class=np.ones(3, np.float32))
    feats = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 2, UNLABELED, UNLABELED, 0])
    critic.loss(feats, labels, progress=1.0).backward()
    reversed_grad = feats.grad.clone()
    head_grads = [p.grad.clone() for p in critic.parameters()]
    # the same loss without reversal: the head's gradient is unchanged, the features' is -1/scale times it
    critic.zero_grad()
    plain = feats.detach().clone().requires_grad_(True)
    real = labels == UNLABELED
    logit = critic.head(plain).squeeze(-1)
    bce = nn.functional.binary_cross_entropy_with_logits(logit, real.float(), reduction="none")
    w = torch.where(real, 1.0 / real.sum(), 1.0 / (~real).sum())
    (0.5 * (bce * w).sum()).backward()
    torch.testing.assert_close(reversed_grad, -critic.scale(1.0) * plain.grad)
    for got, want in zip(head_grads, critic.parameters(), strict=True):
        torch.testing.assert_close(got, want.grad)


def test_the_ramp_starts_at_zero_and_reaches_the_weight() -> None:
    critic = DomainCritic(4, weight=0.3, weights_per_class=np.ones(2, np.float32))
    assert critic.scale(0.0) == 0.0
    assert critic.scale(0.5) < critic.scale(1.0)
    assert critic.scale(1.0) == pytest.approx(0.3, rel=1e-3)


def test_a_batch_of_one_domain_costs_nothing() -> None:
    critic = DomainCritic(4, weight=1.0, weights_per_class=np.ones(2, np.float32))
    feats = torch.randn(3, 4)
    assert float(critic.loss(feats, torch.tensor([0, 1, 0]), 1.0)) == 0.0
    assert float(critic.loss(feats, torch.full((3,), UNLABELED), 1.0)) == 0.0


class Pooled(nn.Module):
    """A student in miniature: features, then the `fc` layer DANN's critic reads the input of."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU())
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def shifted_domains(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes told apart by input 0; the real rows carry a large offset on inputs 8-15 that the
    labels never need (a channel the student could learn to see)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    x[:, 0] += 2.5 * (2 * y - 1)
    real = np.arange(400) >= 300
    x[real, 8:] += 3.0
    return x.reshape(400, 4, 4), np.where(real, UNLABELED, y)


def test_dann_leaves_the_critic_guessing() -> None:
    """Without reversal (a vanishing weight) the critic learns to tell the domains apart almost perfectly;
    with it the student's features stop showing the channel and the critic's loss stays near chance."""
    x, y = shifted_domains(0)
    xv, yv = shifted_domains(1)
    keep = yv != UNLABELED
    rows = TrainData(x, y, xv[keep], yv[keep])
    logits = np.zeros((len(y), 2), np.float32)
    logits[y >= 0, y[y >= 0]] = 4.0  # a teacher that knows the labels; no opinion on the real rows
    soft = SoftLabels.from_logits(logits)
    critic_loss = {}
    for weight in (1e-6, 1.0):
        spec = FitSpec(
            epochs=30, lr=1e-2, batch_size=50, alpha=Schedule(0.5), unlabeled_weight=0.0, domain_weight=weight
        )
        result = fit(Pooled(), rows, spec, FitRun(CPU, 0, progress=False), soft=soft)
        assert result.best_val_accuracy > 0.9  # the task is still learnt
        critic_loss[weight] = np.mean([h["domain"] for h in result.history[-10:]])
    assert critic_loss[1e-6] < 0.05
    assert critic_loss[1.0] > 5 * critic_loss[1e-6]


def test_dann_needs_real_rows() -> None:
    x, y = shifted_domains(0)
    keep = y != UNLABELED
    rows = TrainData(x[keep], y[keep], x[keep], y[keep])
    with pytest.raises(ValueError, match="unlabeled"):
        fit(
            Pooled(),
            rows,
            FitSpec(epochs=1, lr=1e-2, batch_size=50, domain_weight=1.0),
            FitRun(CPU, 0, progress=False),
        )
