"""distill_loss: the per-example CE / KD / feature mix, checked against hand-written formulas and autograd.

Labelled rows get (1 - alpha) CE + alpha T^2 KL(teacher || student); unlabeled rows (label -1) get
only the KD term, times the unlabeled weight; float [N, C] labels are mixup soft targets (an all-zero row
is unlabeled).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekd.train.losses import (
    UNLABELED,
    LossWeights,
    distill_loss,
    expand_topk,
    kd_per_example,
    teacher_log_probs,
)

torch.set_num_threads(1)  # shared 2-core machine


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_kd_rows(student: np.ndarray, teacher: np.ndarray, t: float) -> np.ndarray:
    """T^2 * KL(p_teacher || p_student) per example, both at temperature T, in float64."""
    log_ps = _np_log_softmax(student.astype(np.float64) / t)
    log_pt = _np_log_softmax(teacher.astype(np.float64) / t)
    return t * t * (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=-1)


def _np_kd(student: np.ndarray, teacher: np.ndarray, t: float) -> float:
    return float(_np_kd_rows(student, teacher, t).mean())


def _np_ce_rows(student: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return -_np_log_softmax(student.astype(np.float64))[np.arange(len(labels)), labels]


def _np_ce(student: np.ndarray, labels: np.ndarray) -> float:
    return float(_np_ce_rows(student, labels).mean())


def loss_of(
    student: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor | None,
    alpha: float,
    temperature: float,
    **kw: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """distill_loss from raw teacher logits, as the trainer calls it."""
    w = LossWeights(alpha=alpha, temperature=temperature, **kw)
    t_logp = None if teacher is None else teacher_log_probs(teacher, temperature)
    return distill_loss(student, labels, t_logp, w)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=g) * 3
    teacher = torch.randn(6, 5, generator=g) * 3
    labels = torch.randint(0, 5, (6,), generator=g)
    return student, labels, teacher


def test_alpha_zero_is_cross_entropy(batch) -> None:
    student, labels, teacher = batch
    loss, parts = loss_of(student, labels, teacher, alpha=0.0, temperature=4.0)
    assert loss.item() == pytest.approx(_np_ce(student.numpy(), labels.numpy()), rel=1e-5)
    assert parts["ce"] == pytest.approx(loss.item()) and parts["kd"] == 0.0
    # alpha = 0 without a teacher: the same CE
    loss_none, parts_none = loss_of(student, labels, None, alpha=0.0, temperature=4.0)
    assert loss_none.item() == pytest.approx(loss.item()) and parts_none["kd"] == 0.0
    assert parts_none["feature"] == 0.0


def test_no_teacher_is_cross_entropy_whatever_alpha(batch) -> None:
    """Without soft labels there is nothing to mix CE with: alpha must not shrink the CE (the old kd_loss
    guaranteed this; a caller passing its configured alpha with no teacher would get 0.3 x the gradient)."""
    student, labels, _ = batch
    loss, parts = loss_of(student, labels, None, alpha=0.7, temperature=4.0)
    assert parts["kd"] == 0.0
    assert loss.item() == pytest.approx(_np_ce(student.numpy(), labels.numpy()), rel=1e-5)


def test_alpha_zero_with_label_smoothing_matches_the_formula(batch) -> None:
    student, labels, teacher = batch
    loss, _ = loss_of(student, labels, teacher, alpha=0.0, temperature=1.0, label_smoothing=0.1)
    log_p = _np_log_softmax(student.numpy().astype(np.float64))
    n_classes = student.shape[1]
    target = np.full(log_p.shape, 0.1 / n_classes)
    target[np.arange(len(labels)), labels.numpy()] += 0.9
    assert loss.item() == pytest.approx(float(-(target * log_p).sum(1).mean()), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_alpha_one_is_t_squared_kl(batch, temperature: float) -> None:
    student, labels, teacher = batch
    loss, parts = loss_of(student, labels, teacher, alpha=1.0, temperature=temperature)
    expected = _np_kd(student.numpy(), teacher.numpy(), temperature)
    assert expected > 0.01
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert parts["kd"] == pytest.approx(expected, rel=1e-5)
    assert parts["ce"] == pytest.approx(_np_ce(student.numpy(), labels.numpy()), rel=1e-5)


def test_mixture_weights_both_terms(batch) -> None:
    student, labels, teacher = batch
    loss, _ = loss_of(student, labels, teacher, alpha=0.3, temperature=2.0)
    expected = 0.7 * _np_ce(student.numpy(), labels.numpy()) + 0.3 * _np_kd(
        student.numpy(), teacher.numpy(), 2.0
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_kd_per_example_matches_the_formula_row_by_row(batch) -> None:
    student, _, teacher = batch
    rows = kd_per_example(student, teacher_log_probs(teacher, 3.0), 3.0)
    assert rows.shape == (len(student),)
    np.testing.assert_allclose(rows.numpy(), _np_kd_rows(student.numpy(), teacher.numpy(), 3.0), rtol=1e-5)


def test_kl_term_vanishes_when_student_equals_teacher(batch) -> None:
    student, labels, _ = batch
    loss, parts = loss_of(student, labels, student.clone(), alpha=1.0, temperature=3.0)
    assert abs(parts["kd"]) < 1e-6 and abs(loss.item()) < 1e-6
    # shifting every logit of a row by a constant leaves the distribution (and the KL) unchanged
    _, parts = loss_of(student, labels, student + 7.5, alpha=1.0, temperature=3.0)
    assert abs(parts["kd"]) < 1e-5
    _, parts_shift = loss_of(student - 100.0, labels, student, alpha=1.0, temperature=3.0)
    assert abs(parts_shift["kd"]) < 1e-4


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_finite_for_extreme_logits(temperature: float) -> None:
    """log_softmax on both sides: no log(0) even when both models are certain (and disagree)."""
    student = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], requires_grad=True)
    teacher = torch.tensor([[-1e4, 1e4, 0.0], [-1e4, 1e4, 0.0]])
    labels = torch.tensor([1, 1])
    loss, parts = loss_of(student, labels, teacher, alpha=0.5, temperature=temperature)
    assert torch.isfinite(loss) and math.isfinite(parts["kd"]) and math.isfinite(parts["ce"])
    # row 0 disagrees completely: KL = 2e4 / T nats, times T^2, averaged over the batch of 2
    assert parts["kd"] == pytest.approx(temperature * 2e4 / 2, rel=1e-3)
    loss.backward()
    assert torch.isfinite(student.grad).all()
    # a confident teacher that agrees exactly gives a zero (not NaN) KL term
    _, parts = loss_of(teacher.clone(), labels, teacher, alpha=1.0, temperature=temperature)
    assert parts["kd"] == 0.0


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_soft_target_gradient_is_analytic(batch, temperature: float) -> None:
    """d(T^2 KL)/dz = T (softmax(z/T) - softmax(t/T)): the T^2 factor keeps the gradient scale ~T, not 1/T."""
    student, labels, teacher = batch
    s = student.clone().requires_grad_(True)
    loss, _ = loss_of(s, labels, teacher, alpha=1.0, temperature=temperature)
    loss.backward()
    n = len(student)
    expected = (F.softmax(student / temperature, -1) - F.softmax(teacher / temperature, -1)) * temperature / n
    torch.testing.assert_close(s.grad, expected, rtol=1e-5, atol=1e-7)


def test_gradient_flows_only_to_student(batch) -> None:
    student, labels, teacher = batch
    s = student.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    loss, _ = loss_of(s, labels, t.detach(), alpha=0.5, temperature=2.0)
    loss.backward()
    assert s.grad is not None and t.grad is None


def test_half_precision_logits_are_computed_in_float32(batch) -> None:
    student, labels, teacher = batch
    loss16, parts16 = loss_of(student.half(), labels, teacher.half(), alpha=0.5, temperature=2.0)
    loss32, parts32 = loss_of(
        student.half().float(), labels, teacher.half().float(), alpha=0.5, temperature=2.0
    )
    assert loss16.dtype == torch.float32
    assert loss16.item() == pytest.approx(loss32.item(), rel=1e-6)
    assert parts16["kd"] == pytest.approx(parts32["kd"], rel=1e-6)


# --- unlabeled rows ------------------------------------------------------------------------------------


UNLAB_ROWS = [1, 4]


def _with_unlabeled(labels: torch.Tensor) -> torch.Tensor:
    out = labels.clone()
    out[UNLAB_ROWS] = UNLABELED
    return out


@pytest.mark.parametrize("unlabeled_weight", [1.0, 0.5, 2.0])
def test_unlabeled_rows_get_only_the_weighted_kd_term(batch, unlabeled_weight: float) -> None:
    """loss = (sum_lab [(1-a) CE + a KD] + u * sum_unlab KD) / (n_lab + u * n_unlab)."""
    student, labels, teacher = batch
    y = _with_unlabeled(labels)
    alpha, t, u = 0.3, 2.0, unlabeled_weight
    loss, parts = loss_of(student, y, teacher, alpha=alpha, temperature=t, unlabeled=u)
    lab = np.ones(len(y), bool)
    lab[UNLAB_ROWS] = False
    kd = _np_kd_rows(student.numpy(), teacher.numpy(), t)
    ce = _np_ce_rows(student.numpy()[lab], labels.numpy()[lab])
    expected = (((1 - alpha) * ce + alpha * kd[lab]).sum() + u * kd[~lab].sum()) / (
        lab.sum() + u * (~lab).sum()
    )
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    assert parts["ce"] == pytest.approx(float(ce.mean()), rel=1e-5)  # labelled rows only
    assert parts["kd"] == pytest.approx(float(kd.mean()), rel=1e-5)


def test_unlabeled_rows_are_supervised_by_kd_even_at_alpha_zero(batch) -> None:
    """alpha weighs KD against CE on labelled rows; unlabeled rows have nothing but KD to learn from."""
    student, labels, teacher = batch
    s = student.clone().requires_grad_(True)
    loss, parts = loss_of(s, _with_unlabeled(labels), teacher, alpha=0.0, temperature=2.0)
    assert parts["kd"] > 0
    loss.backward()
    expected = (F.softmax(student / 2.0, -1) - F.softmax(teacher / 2.0, -1)) * 2.0 / len(student)
    torch.testing.assert_close(s.grad[UNLAB_ROWS], expected[UNLAB_ROWS], rtol=1e-5, atol=1e-7)


def test_unlabeled_row_logits_do_not_reach_the_logged_ce(batch) -> None:
    """An unlabeled row's CE (against the clamped label 0) is neither trained on nor logged: making it
    enormous changes neither the "ce" component nor the gradient the row gets."""
    student, labels, teacher = batch
    y = _with_unlabeled(labels)
    base = student.clone()
    base[UNLAB_ROWS] = torch.tensor([-30.0, 0.0, 0.0, 0.0, 0.0])  # CE vs class 0 would be ~30 nats
    _, parts = loss_of(base, y, teacher, alpha=0.5, temperature=2.0)
    lab = np.ones(len(y), bool)
    lab[UNLAB_ROWS] = False
    assert parts["ce"] == pytest.approx(_np_ce(base.numpy()[lab], labels.numpy()[lab]), rel=1e-5)
    assert parts["ce"] < 15
    # the row's gradient is the pure KD gradient: no pull toward class 0
    s = base.clone().requires_grad_(True)
    loss, _ = loss_of(s, y, teacher, alpha=0.5, temperature=2.0)
    loss.backward()
    n_eff = lab.sum() + (~lab).sum()  # unlabeled weight 1
    kd_grad = (F.softmax(base / 2.0, -1) - F.softmax(teacher / 2.0, -1)) * 2.0 / n_eff
    torch.testing.assert_close(s.grad[UNLAB_ROWS], kd_grad[UNLAB_ROWS], rtol=1e-5, atol=1e-7)


def test_marking_rows_unlabeled_changes_nothing_at_alpha_one(batch) -> None:
    """With alpha = 1 and unlabeled weight 1 every row is pure KD, so a row's label value is irrelevant:
    the loss and the gradient are the same whether the label is known or -1."""
    student, labels, teacher = batch
    grads = []
    losses = []
    for y in (labels, _with_unlabeled(labels), (labels + 1) % 5):
        s = student.clone().requires_grad_(True)
        loss, _ = loss_of(s, y, teacher, alpha=1.0, temperature=2.0)
        loss.backward()
        losses.append(loss.item())
        grads.append(s.grad)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) == pytest.approx(losses[2], rel=1e-6)
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(grads[0], grads[2])


def test_unlabeled_weight_zero_ignores_unlabeled_rows(batch) -> None:
    """u = 0: the loss is that of the labelled rows alone, and unlabeled rows get no gradient."""
    student, labels, teacher = batch
    y = _with_unlabeled(labels)
    keep = [i for i in range(len(y)) if i not in UNLAB_ROWS]
    s = student.clone().requires_grad_(True)
    loss, _ = loss_of(s, y, teacher, alpha=0.4, temperature=2.0, unlabeled=0.0)
    ref, _ = loss_of(student[keep], labels[keep], teacher[keep], alpha=0.4, temperature=2.0)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    loss.backward()
    assert torch.all(s.grad[UNLAB_ROWS] == 0)
    assert torch.all(s.grad[keep].abs().sum(1) > 0)


# --- feature matching --------------------------------------------------------------------------------


def test_feature_term_is_weighted_and_masks_nan_rows(batch) -> None:
    """Rows without a teacher embedding (NaN error) are left out of the feature mean, and get no gradient."""
    student, labels, teacher = batch
    err = torch.tensor([0.5, float("nan"), 1.5, 2.0, float("nan"), 1.0], requires_grad=True)
    base, _ = loss_of(student, labels, teacher, alpha=0.5, temperature=2.0)
    w = LossWeights(alpha=0.5, temperature=2.0, feature=0.25)
    loss, parts = distill_loss(student, labels, teacher_log_probs(teacher, 2.0), w, err)
    assert torch.isfinite(loss)
    assert parts["feature"] == pytest.approx(5.0 / 4)
    assert loss.item() == pytest.approx(base.item() + 0.25 * 5.0 / 4, rel=1e-6)
    loss.backward()
    assert torch.isfinite(err.grad).all()
    np.testing.assert_allclose(err.grad.numpy(), [0.25 / 4, 0, 0.25 / 4, 0.25 / 4, 0, 0.25 / 4], rtol=1e-6)
    # every row NaN: no feature term at all (not NaN)
    all_nan = torch.full((6,), float("nan"))
    loss, parts = distill_loss(student, labels, teacher_log_probs(teacher, 2.0), w, all_nan)
    assert loss.item() == pytest.approx(base.item(), rel=1e-6) and parts["feature"] == 0.0
    # zero weight: the term is off even when the error is large
    off = LossWeights(alpha=0.5, temperature=2.0, feature=0.0)
    loss, parts = distill_loss(student, labels, teacher_log_probs(teacher, 2.0), off, err.detach())
    assert loss.item() == pytest.approx(base.item(), rel=1e-6) and parts["feature"] == 0.0


# --- mixup soft labels -------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_one_hot_soft_labels_equal_index_labels(batch, smoothing: float) -> None:
    """Mixup targets are float [N, C]; a one-hot target must be exactly the index-label loss."""
    student, labels, teacher = batch
    onehot = F.one_hot(labels, 5).float()
    results = []
    for y in (labels, onehot):
        s = student.clone().requires_grad_(True)
        loss, parts = loss_of(s, y, teacher, alpha=0.3, temperature=2.0, label_smoothing=smoothing)
        loss.backward()
        results.append((loss.item(), parts, s.grad))
    (l_idx, p_idx, g_idx), (l_soft, p_soft, g_soft) = results
    assert l_soft == pytest.approx(l_idx, rel=1e-6)
    assert p_soft["ce"] == pytest.approx(p_idx["ce"], rel=1e-6) and p_soft["kd"] == pytest.approx(p_idx["kd"])
    torch.testing.assert_close(g_soft, g_idx)


def test_mixed_soft_labels_mix_the_cross_entropies(batch) -> None:
    """CE is linear in the target: lam * onehot(a) + (1 - lam) * onehot(b) gives lam CE_a + (1 - lam) CE_b."""
    student, labels, _ = batch
    other = (labels + 2) % 5
    lam = 0.7
    mixed = lam * F.one_hot(labels, 5).float() + (1 - lam) * F.one_hot(other, 5).float()
    loss, parts = loss_of(student, mixed, None, alpha=0.0, temperature=1.0)
    s = student.numpy()
    expected = lam * _np_ce(s, labels.numpy()) + (1 - lam) * _np_ce(s, other.numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-5) and parts["ce"] == pytest.approx(
        expected, rel=1e-5
    )


def test_an_all_zero_soft_label_row_is_an_unlabeled_row(batch) -> None:
    """Mixup leaves the pool's rows unmixed with an all-zero target: the loss must be the index-label
    loss with -1 there (KD only, times the unlabeled weight), gradients included."""
    student, labels, teacher = batch
    y = _with_unlabeled(labels)
    soft = F.one_hot(labels, 5).float()
    soft[UNLAB_ROWS] = 0.0
    results = []
    for target in (y, soft):
        s = student.clone().requires_grad_(True)
        loss, parts = loss_of(s, target, teacher, alpha=0.3, temperature=2.0, unlabeled=0.5)
        loss.backward()
        results.append((loss.item(), parts["ce"], s.grad))
    (l_idx, ce_idx, g_idx), (l_soft, ce_soft, g_soft) = results
    assert l_soft == pytest.approx(l_idx, rel=1e-6) and ce_soft == pytest.approx(ce_idx, rel=1e-6)
    torch.testing.assert_close(g_soft, g_idx)


# --- top-k subset KD ---------------------------------------------------------------------------------


def test_topk_with_k_equal_to_classes_is_full_kd(batch) -> None:
    student, labels, teacher = batch
    values, index = teacher.topk(5, dim=-1)
    dense = expand_topk(values, index, 5, student)
    torch.testing.assert_close(dense, teacher)
    full, parts_full = loss_of(student, labels, teacher, alpha=0.6, temperature=3.0)
    sub, parts_sub = loss_of(student, labels, dense, alpha=0.6, temperature=3.0)
    assert sub.item() == pytest.approx(full.item(), rel=1e-6)
    assert parts_sub["kd"] == pytest.approx(parts_full["kd"], rel=1e-6)


def test_topk_subset_kd_lives_on_the_union_of_both_top_ks() -> None:
    """k < C: classes outside (teacher top-k) U (student top-k) get no mass on either side, the
    student-only classes get the teacher's smallest stored logit, and the KL is the renormalised
    KL over the union (checked by hand); the student gets no gradient outside the union."""
    g = torch.Generator().manual_seed(3)
    n, c, k, t = 8, 12, 3, 2.0
    teacher = torch.randn(n, c, generator=g) * 3
    student = torch.randn(n, c, generator=g) * 3
    values, index = teacher.topk(k, dim=-1)
    dense = expand_topk(values, index, c, student)
    s_top = student.topk(k, dim=-1).indices
    kept = torch.zeros(n, c, dtype=torch.bool)
    kept.scatter_(1, index, True)
    kept.scatter_(1, s_top, True)
    assert torch.equal(torch.isfinite(dense), kept)
    assert torch.equal(dense.gather(1, index), values)
    only_student = kept.clone()
    only_student.scatter_(1, index, False)
    assert only_student.any()  # the student disagrees somewhere, so the union is larger than k
    floor = values.min(dim=1, keepdim=True).values.expand(-1, c)
    assert torch.equal(dense[only_student], floor[only_student])

    t_logp = teacher_log_probs(dense, t)
    assert torch.all(t_logp.exp()[~kept] == 0)
    s = student.clone().requires_grad_(True)
    rows = kd_per_example(s, t_logp, t)
    assert torch.isfinite(rows).all() and torch.all(rows >= 0)
    for i in range(n):
        m = kept[i].numpy()
        ref = _np_kd_rows(student[i : i + 1, m].numpy(), dense[i : i + 1, m].numpy(), t)
        assert rows[i].item() == pytest.approx(float(ref[0]), rel=1e-5, abs=1e-6)
    rows.sum().backward()
    assert torch.isfinite(s.grad).all()
    assert torch.all(s.grad[~kept] == 0)
    assert torch.all(s.grad[kept].abs().sum() > 0)
    # the student's distribution on the subset sums to one (the dropped classes get no mass)
    student_subset = F.softmax(student.masked_fill(~kept, float("-inf")) / t, -1)
    torch.testing.assert_close(student_subset.sum(-1), torch.ones(n))


def test_nan_teacher_logits_give_a_non_finite_loss(batch) -> None:
    """Only -inf means "class not in the cache"; NaN means a corrupt cache and must surface as a non-finite
    loss, which the trainer skips and counts."""
    student, labels, teacher = batch
    bad = teacher.clone()
    bad[2] = float("nan")
    loss, _ = loss_of(student, labels, bad, alpha=0.5, temperature=2.0)
    assert not torch.isfinite(loss)


def test_skip_wrong_teacher_leaves_only_the_label_where_the_teacher_is_wrong() -> None:
    """With trust_wrong_teacher=False a row whose teacher argmax contradicts its label is pure CE."""
    g = torch.Generator().manual_seed(3)
    student = torch.randn(4, 5, generator=g)
    labels = torch.tensor([0, 1, 2, 3])
    teacher = torch.full((4, 5), -2.0)
    teacher[torch.arange(4), torch.tensor([0, 1, 4, 4])] = 3.0  # right on rows 0-1, wrong on rows 2-3
    t_logp = teacher_log_probs(teacher, 2.0)
    skip = LossWeights(alpha=0.5, temperature=2.0, trust_wrong_teacher=False)
    loss, _ = distill_loss(student, labels, t_logp, skip)
    ce = F.cross_entropy(student, labels, reduction="none")
    kd = kd_per_example(student, t_logp, 2.0)
    expected = torch.cat([0.5 * ce[:2] + 0.5 * kd[:2], ce[2:]]).mean()
    torch.testing.assert_close(loss, expected)
    trusted, _ = distill_loss(student, labels, t_logp, LossWeights(alpha=0.5, temperature=2.0))
    assert not torch.isclose(trusted, loss)
