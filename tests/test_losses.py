"""kd_loss: the CE / soft-target mix, checked against hand-written formulas and autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekd.train.losses import kd_loss


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_kd(student: np.ndarray, teacher: np.ndarray, t: float) -> float:
    """T^2 * mean over the batch of KL(p_teacher || p_student), both at temperature T, in float64."""
    log_ps = _np_log_softmax(student.astype(np.float64) / t)
    log_pt = _np_log_softmax(teacher.astype(np.float64) / t)
    return float(t * t * (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=-1).mean())


def _np_ce(student: np.ndarray, labels: np.ndarray) -> float:
    return float(-_np_log_softmax(student.astype(np.float64))[np.arange(len(labels)), labels].mean())


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=g) * 3
    teacher = torch.randn(6, 5, generator=g) * 3
    labels = torch.randint(0, 5, (6,), generator=g)
    return student, labels, teacher


def test_alpha_zero_is_cross_entropy(batch) -> None:
    student, labels, teacher = batch
    loss, parts = kd_loss(student, labels, teacher, alpha=0.0, temperature=4.0)
    assert loss.item() == pytest.approx(_np_ce(student.numpy(), labels.numpy()), rel=1e-5)
    assert parts["ce"] == pytest.approx(loss.item()) and parts["kd"] == 0.0
    # without a teacher the alpha is irrelevant
    loss_none, parts_none = kd_loss(student, labels, None, alpha=0.7, temperature=4.0)
    assert loss_none.item() == pytest.approx(loss.item()) and parts_none["kd"] == 0.0


def test_alpha_zero_with_label_smoothing_matches_torch(batch) -> None:
    student, labels, teacher = batch
    loss, _ = kd_loss(student, labels, teacher, alpha=0.0, temperature=1.0, label_smoothing=0.1)
    log_p = _np_log_softmax(student.numpy().astype(np.float64))
    n_classes = student.shape[1]
    target = np.full(log_p.shape, 0.1 / n_classes)
    target[np.arange(len(labels)), labels.numpy()] += 0.9
    assert loss.item() == pytest.approx(float(-(target * log_p).sum(1).mean()), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_alpha_one_is_t_squared_kl(batch, temperature: float) -> None:
    student, labels, teacher = batch
    loss, parts = kd_loss(student, labels, teacher, alpha=1.0, temperature=temperature)
    expected = _np_kd(student.numpy(), teacher.numpy(), temperature)
    assert expected > 0.01
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert parts["kd"] == pytest.approx(expected, rel=1e-5)
    assert parts["ce"] == pytest.approx(_np_ce(student.numpy(), labels.numpy()), rel=1e-5)


def test_mixture_weights_both_terms(batch) -> None:
    student, labels, teacher = batch
    loss, _ = kd_loss(student, labels, teacher, alpha=0.3, temperature=2.0)
    expected = 0.7 * _np_ce(student.numpy(), labels.numpy()) + 0.3 * _np_kd(
        student.numpy(), teacher.numpy(), 2.0
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_kl_term_vanishes_when_student_equals_teacher(batch) -> None:
    student, labels, _ = batch
    loss, parts = kd_loss(student, labels, student.clone(), alpha=1.0, temperature=3.0)
    assert abs(parts["kd"]) < 1e-6 and abs(loss.item()) < 1e-6
    # shifting every logit of a row by a constant leaves the distribution (and the KL) unchanged
    _, parts = kd_loss(student, labels, student + 7.5, alpha=1.0, temperature=3.0)
    assert abs(parts["kd"]) < 1e-5


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_finite_for_extreme_logits(temperature: float) -> None:
    student = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], requires_grad=True)
    teacher = torch.tensor([[-1e4, 1e4, 0.0], [-1e4, 1e4, 0.0]])
    labels = torch.tensor([1, 1])
    loss, parts = kd_loss(student, labels, teacher, alpha=0.5, temperature=temperature)
    assert torch.isfinite(loss) and math.isfinite(parts["kd"]) and math.isfinite(parts["ce"])
    # row 0 disagrees completely: KL = 2e4 / T nats, times T^2, averaged over the batch of 2
    assert parts["kd"] == pytest.approx(temperature * 2e4 / 2, rel=1e-3)
    loss.backward()
    assert torch.isfinite(student.grad).all()
    # a confident teacher that agrees exactly gives a zero (not NaN) KL term
    _, parts = kd_loss(teacher.clone(), labels, teacher, alpha=1.0, temperature=temperature)
    assert parts["kd"] == 0.0


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_soft_target_gradient_is_analytic(batch, temperature: float) -> None:
    student, labels, teacher = batch
    s = student.clone().requires_grad_(True)
    loss, _ = kd_loss(s, labels, teacher, alpha=1.0, temperature=temperature)
    loss.backward()
    n = len(student)
    expected = (F.softmax(student / temperature, -1) - F.softmax(teacher / temperature, -1)) * temperature / n
    torch.testing.assert_close(s.grad, expected, rtol=1e-5, atol=1e-7)


def test_gradient_flows_only_to_student(batch) -> None:
    student, labels, teacher = batch
    s = student.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    loss, _ = kd_loss(s, labels, t.detach(), alpha=0.5, temperature=2.0)
    loss.backward()
    assert s.grad is not None and t.grad is None


def test_half_precision_logits_are_computed_in_float32(batch) -> None:
    student, labels, teacher = batch
    loss16, _ = kd_loss(student.half(), labels, teacher.half(), alpha=0.5, temperature=2.0)
    loss32, _ = kd_loss(student.half().float(), labels, teacher.half().float(), alpha=0.5, temperature=2.0)
    assert loss16.dtype == torch.float32
    assert loss16.item() == pytest.approx(loss32.item(), rel=1e-6)
