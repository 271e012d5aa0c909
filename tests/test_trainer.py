"""The training loop: learns, keeps the best epoch, is reproducible, survives (and reports) bad steps,
distils from cached soft labels (labelled and unlabeled rows), and follows its schedules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.train.schedules import Schedule
from edgekd.train.soft_labels import SoftLabels, standardise
from edgekd.train.spec_augment import SpecAugment
from edgekd.train.trainer import (
    FitResult,
    FitRun,
    FitSpec,
    Hooks,
    TrainData,
    _mix,
    fit,
    predict,
    resolve_device,
)

torch.set_num_threads(1)  # shared 2-core machine: one intra-op thread is faster for these tiny models
CPU = torch.device("cpu")


def separable(n: int, seed: int, shift: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """[N, 8, 8] unit-noise features whose mean is shifted by a fixed per-class pattern (3 classes)."""
    means = np.random.default_rng(1234).normal(size=(3, 8, 8)).astype(np.float32)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 8, 8)).astype(np.float32) + shift * means[y]
    return x, y


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_tr, y_tr = separable(192, seed=0)
    x_val, y_val = separable(96, seed=1)
    return x_tr, y_tr, x_val, y_val


class Net(nn.Module):
    """Flatten, Linear, BatchNorm, ReLU, Dropout, Linear: buffers and randomness, like the students."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2)
        )
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class FcNet(nn.Module):
    """Like the students: pooled features, then a final `fc` nn.Linear (what feature matching taps)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model, x, CPU).argmax(1) == y).mean())


def teacher_soft(y: np.ndarray, embeddings: np.ndarray | None = None, scale: float = 4.0) -> SoftLabels:
    """A teacher that knows the true labels: confident one-hot logits."""
    return SoftLabels.from_logits(np.eye(3, dtype=np.float32)[y] * scale, embeddings=embeddings)


def embeddings_of(x: np.ndarray) -> np.ndarray:
    """A fixed nonlinear 4-d function of the input: a teacher embedding the student can learn to predict."""
    proj = np.random.default_rng(7).normal(size=(64, 4)).astype(np.float32)
    e = np.tanh(x.reshape(len(x), -1) @ proj / 8)
    return standardise(e, e)


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


SPEC = FitSpec(epochs=4, lr=2e-2, batch_size=32)


def train(
    model: nn.Module,
    data: tuple[np.ndarray, ...],
    spec: FitSpec = SPEC,
    *,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    seed: int = 0,
    soft: SoftLabels | None = None,
    param_groups: list[dict] | None = None,
    before_eval: Callable[[nn.Module], None] | None = None,
    **run: Any,
) -> FitResult:
    """`fit` as these tests call it: the module's split (training rows replaced by `x`/`y` when given),
    on the CPU, without a progress bar."""
    x_tr, y_tr, x_val, y_val = data
    rows = TrainData(x_tr if x is None else x, y_tr if y is None else y, x_val, y_val)
    return fit(
        model,
        rows,
        spec,
        FitRun(CPU, seed, progress=False, **run),
        soft=soft,
        param_groups=param_groups,
        hooks=Hooks(before_eval=before_eval),
    )


def test_learns_a_separable_problem(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    model = Net()
    result = train(model, data)
    assert result.best_val_accuracy > 0.9
    assert accuracy(model, x_val, y_val) == pytest.approx(result.best_val_accuracy)
    assert not model.training  # handed back in eval mode
    assert result.skipped_steps == 0 and not result.stopped_early
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    for row in result.history:
        assert {
            "loss",
            "ce",
            "kd",
            "feature",
            "grad_norm",
            "val_accuracy",
            "lr",
            "alpha",
            "temperature",
        } <= set(row)
        assert np.isfinite([row["loss"], row["ce"], row["grad_norm"]]).all() and row["kd"] == 0.0
        assert row["alpha"] == 0.0 and row["feature"] == 0.0  # no teacher: labels only
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    # warm-up then cosine decay: the last epoch ends far below the peak learning rate
    assert result.history[-1]["lr"] < 0.1 * SPEC.lr


def test_restores_the_best_validation_epoch(data) -> None:
    """Wreck the model before the last validation: fit must hand back the best earlier epoch's weights."""
    x_tr, y_tr, x_val, y_val = data
    model = Net()
    snapshots: list[dict[str, torch.Tensor]] = []

    def before_eval(m: nn.Module) -> None:
        if len(snapshots) == SPEC.epochs - 1:  # last epoch: always predict class 0
            with torch.no_grad():
                m.head.weight.zero_()
                m.head.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
        snapshots.append({k: v.detach().clone() for k, v in m.state_dict().items()})

    result = train(model, data, before_eval=before_eval)
    accs = [row["val_accuracy"] for row in result.history]
    assert accs[-1] == pytest.approx(float((y_val == 0).mean()))
    best = max(accs)
    assert result.best_val_accuracy == best > accs[-1]
    assert accs[result.best_epoch - 1] == best and result.best_epoch < SPEC.epochs
    assert result.best_epoch == max(i + 1 for i, a in enumerate(accs) if a == best)  # ties: the later epoch
    final = model.state_dict()
    for k, v in snapshots[result.best_epoch - 1].items():
        assert torch.equal(final[k], v), k
    assert accuracy(model, x_val, y_val) == pytest.approx(result.best_val_accuracy)


def _wreck_from(epoch: int, calls: list[int] | None = None):
    """A before_eval hook: every validation from `epoch` (1-based) on sees a model that says class 0."""
    seen = [] if calls is None else calls

    def before_eval(m: nn.Module) -> None:
        seen.append(1)
        if len(seen) >= epoch:
            with torch.no_grad():
                m.head.weight.zero_()
                m.head.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))

    return before_eval


def test_a_validation_reference_chooses_the_epoch_that_agrees_with_it(data) -> None:
    """QAT's rule: with `val_reference` (the float student's decisions) the kept epoch is the one that
    agrees with them most, here the wrecked last epoch that says class 0 like the reference, although
    its label accuracy is the worst; the history and the result carry both figures."""
    x_tr, y_tr, x_val, y_val = data
    reference = np.zeros_like(y_val)
    rows = TrainData(x_tr, y_tr, x_val, y_val, val_reference=reference)
    model = Net()
    hooks = Hooks(before_eval=_wreck_from(SPEC.epochs))
    result = fit(model, rows, SPEC, FitRun(CPU, 0, progress=False), hooks=hooks)
    accs = [row["val_accuracy"] for row in result.history]
    agreements = [row["val_agreement"] for row in result.history]
    assert result.best_epoch == SPEC.epochs and agreements[-1] == 1.0 == result.best_val_agreement
    assert result.best_val_accuracy == accs[-1] < max(accs)
    assert accuracy(model, x_val, reference) == 1.0
    plain = train(Net(), data, before_eval=_wreck_from(SPEC.epochs))  # without it: label accuracy decides
    assert plain.best_epoch < SPEC.epochs and plain.best_val_agreement is None
    assert all("val_agreement" not in row for row in plain.history)


def _without_timing(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "epoch_s"} for row in history]


def test_deterministic_for_a_fixed_seed(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    spec = FitSpec(
        epochs=2,
        lr=1e-2,
        batch_size=32,
        spec_augment=SpecAugment(1, 5, 1, 10, fill="min"),
        label_smoothing=0.1,
        mixup=0.3,
        alpha=Schedule(0.5),
    )
    soft = teacher_soft((y_tr + 1) % 3)
    runs = []
    for seed in (3, 3, 4):
        model = Net()
        result = train(model, data, spec, seed=seed, soft=soft)
        runs.append((model.state_dict(), result.history))
    (a, hist_a), (b, hist_b), (c, _) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _without_timing(hist_a) == _without_timing(hist_b)
    assert not all(torch.equal(a[k], c[k]) for k in a), "a different seed should train differently"


def test_non_finite_steps_are_skipped_and_counted(data) -> None:
    """One NaN example spoils one batch per epoch: that step is skipped, and leaves no NaN behind."""
    x_tr, y_tr, x_val, y_val = data
    x_bad = x_tr.copy()
    x_bad[7, 3, 4] = np.nan
    model = Net()
    result = train(model, data, x=x_bad)
    assert result.skipped_steps == SPEC.epochs
    for name, tensor in model.state_dict().items():  # BatchNorm running stats included
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), name
    assert result.best_val_accuracy > 0.9
    assert all(np.isfinite(row["loss"]) for row in result.history)


def test_nan_teacher_logits_are_skipped_too(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    teacher = np.eye(3, dtype=np.float32)[y_tr] * 4
    teacher[11] = np.nan
    spec = FitSpec(epochs=3, lr=1e-2, batch_size=32, alpha=Schedule(0.5), temperature=Schedule(2.0))
    model = Net()
    soft = SoftLabels.from_logits(teacher)
    result = train(model, data, spec, soft=soft)
    assert result.skipped_steps == spec.epochs
    assert result.best_val_accuracy > 0.9
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_too_many_non_finite_steps_raise(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    x_bad = x_tr.copy()
    x_bad[::10, 0, 0] = np.nan  # a NaN in every batch
    spec = FitSpec(epochs=2, lr=1e-2, batch_size=32)
    with pytest.raises(EdgekdError, match="non-finite logits or loss") as err:
        train(Net(), data, spec, x=x_bad, desc="student")
    assert "student" in str(err.value) and "NaN" in str(err.value)


def test_an_all_nan_teacher_cache_raises(data) -> None:
    """A corrupt soft-label cache must stop the run, not silently train on labels alone."""
    x_tr, y_tr, x_val, y_val = data
    soft = SoftLabels.from_logits(np.full((len(y_tr), 3), np.nan, dtype=np.float32))
    spec = FitSpec(epochs=2, lr=1e-2, batch_size=32, alpha=Schedule(0.5))
    with pytest.raises(EdgekdError, match="non-finite logits or loss"):
        train(Net(), data, spec, soft=soft)


def test_distillation_logs_and_follows_the_teacher(data) -> None:
    """alpha=1 trains on soft targets only: a teacher that relabels y as (y+1) % 3 is what is learned."""
    x_tr, y_tr, x_val, y_val = data
    soft = teacher_soft((y_tr + 1) % 3, scale=6.0)
    spec = FitSpec(epochs=4, lr=1e-2, batch_size=32, alpha=Schedule(1.0), temperature=Schedule(2.0))
    model = Net()
    result = train(model, data, spec, soft=soft)
    assert all(row["kd"] > 0 and np.isfinite(row["kd"]) for row in result.history)
    assert all(row["loss"] == pytest.approx(row["kd"], rel=1e-6) for row in result.history)
    pred = predict(model, x_val, CPU).argmax(1)
    assert (pred == (y_val + 1) % 3).mean() > 0.9

    mixed = FitSpec(epochs=2, lr=1e-2, batch_size=32, alpha=Schedule(0.5), temperature=Schedule(2.0))
    result = train(Net(), data, mixed, soft=soft)
    assert all(row["kd"] > 0 and row["ce"] > 0 for row in result.history)


def test_distils_from_a_top_k_cache(data) -> None:
    """A top-k cache (k=2 of 3 classes) still carries the teacher's relabelling to the student."""
    x_tr, y_tr, x_val, y_val = data
    rng = np.random.default_rng(0)
    logits = (
        rng.normal(size=(len(y_tr), 3)).astype(np.float32) + np.eye(3, dtype=np.float32)[(y_tr + 1) % 3] * 6
    )
    soft = SoftLabels.from_logits(logits, top_k=2)
    assert soft.index is not None
    spec = FitSpec(epochs=4, lr=1e-2, batch_size=32, alpha=Schedule(1.0), temperature=Schedule(2.0))
    model = Net()
    result = train(model, data, spec, soft=soft)
    assert result.skipped_steps == 0 and all(np.isfinite(row["kd"]) for row in result.history)
    assert (predict(model, x_val, CPU).argmax(1) == (y_val + 1) % 3).mean() > 0.9


def test_soft_labels_must_match_the_training_rows(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    with pytest.raises(ValueError, match="191 soft labels for 192"):
        train(Net(), data, soft=teacher_soft(y_tr[:-1]))


# --- unlabeled rows ------------------------------------------------------------------------------------


def test_unlabeled_rows_with_a_teacher_improve_a_few_label_model() -> None:
    """9 labelled rows alone vs the same 9 plus 183 unlabeled rows a (correct) teacher labels: the same
    number of optimizer steps and seeds, and the unlabeled pool must lift accuracy by a clear margin."""
    x, y = separable(192, seed=0, shift=0.4)
    x_val, y_val = separable(96, seed=1, shift=0.4)
    labelled = np.zeros(len(y), bool)
    for c in range(3):
        labelled[np.flatnonzero(y == c)[:3]] = True
    split = (x, y, x_val, y_val)
    few = train(Net(), split, FitSpec(epochs=24, lr=2e-2, batch_size=32), x=x[labelled], y=y[labelled])
    y_semi = np.where(labelled, y, -1)
    model = Net()
    semi = train(
        model,
        split,
        FitSpec(epochs=4, lr=2e-2, batch_size=32, alpha=Schedule(0.5), temperature=Schedule(2.0)),
        x=x,
        y=y_semi,
        soft=teacher_soft(y),
    )
    assert semi.skipped_steps == 0
    assert all(row["kd"] > 0 for row in semi.history)
    assert semi.best_val_accuracy > 0.9
    assert semi.best_val_accuracy > few.best_val_accuracy + 0.1


def test_unlabeled_rows_without_soft_labels_raise(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    y = y_tr.copy()
    y[:5] = -1
    with pytest.raises(ValueError, match="unlabeled rows need teacher soft labels"):
        train(Net(), data, y=y)


def test_mixup_mixes_the_labelled_rows_and_passes_the_pool_rows_unmixed() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 4, 3, generator=g)
    y = torch.tensor([0, -1, 2, 1, -1, 2, 0, -1])
    torch.manual_seed(0)
    mixed, targets, lam, perm = _mix(g, 0.4, x, y, 3)
    pool = y == -1
    assert torch.equal(perm[pool], torch.nonzero(pool).flatten())  # their own partner
    assert (
        bool((y[perm[~pool]] != -1).all())
        and sorted(perm[~pool].tolist()) == torch.nonzero(~pool).flatten().tolist()
    )
    torch.testing.assert_close(mixed[pool], x[pool])
    torch.testing.assert_close(mixed[~pool], lam * x[~pool] + (1 - lam) * x[perm[~pool]])
    assert bool((targets[pool] == 0).all())  # no label to mix: distill_loss reads the row as unlabeled
    torch.testing.assert_close(targets[~pool].sum(-1), torch.ones(int((~pool).sum())))


def test_mixup_acts_on_batches_that_hold_pool_rows(data) -> None:
    """Every batch of a half-unlabeled set holds pool rows (as with a recipe's real pool): mixup must still
    change the training, and the model still learns."""
    x_tr, y_tr, x_val, y_val = data
    y = np.where(np.arange(len(y_tr)) % 2 == 0, y_tr, -1)
    states = {}
    for mix in (0.0, 0.4):
        model = Net()
        spec = FitSpec(epochs=3, lr=2e-2, batch_size=32, alpha=Schedule(0.5), mixup=mix)
        result = train(model, data, spec, y=y, soft=teacher_soft(y_tr))
        assert result.skipped_steps == 0 and result.best_val_accuracy > 0.9
        states[mix] = params_of(model)
    assert any(not torch.equal(states[0.0][k], states[0.4][k]) for k in states[0.0]), "mixup changed nothing"


# --- early stopping, EMA, mixup ----------------------------------------------------------------------


def test_patience_stops_early_and_restores_the_best_epoch(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    spec = FitSpec(epochs=8, lr=2e-2, batch_size=32, patience=2)
    calls: list[int] = []
    model = Net()
    result = train(model, data, spec, before_eval=_wreck_from(2, calls))
    assert result.stopped_early
    assert len(result.history) == 3 == len(calls)  # best at 1, then two epochs without improvement
    assert result.best_epoch == 1 and result.best_val_accuracy > 0.9
    assert accuracy(model, x_val, y_val) == pytest.approx(result.best_val_accuracy)
    # patience 0 never stops
    calls.clear()
    no_stop = train(Net(), data, FitSpec(epochs=8, lr=2e-2, batch_size=32), before_eval=_wreck_from(2, calls))
    assert not no_stop.stopped_early and len(no_stop.history) == 8


def test_keep_last_returns_the_final_weights_not_the_best_epoch(data) -> None:
    """`keep_last` hands back where the schedule ended even when validation preferred an earlier epoch
    (the float student's synthetic split can pick a mid-schedule epoch on one clip's margin)."""
    x_tr, y_tr, x_val, y_val = data
    spec = FitSpec(epochs=4, lr=2e-2, batch_size=32, keep_last=True)
    model = Net()
    result = train(model, data, spec, before_eval=_wreck_from(3))
    accs = [row["val_accuracy"] for row in result.history]
    assert max(accs[:2]) > 0.9 and accs[-1] < 0.5  # validation preferred epochs 1-2
    assert result.best_epoch == 4 and result.best_val_accuracy == accs[-1]
    assert accuracy(model, x_val, y_val) == pytest.approx(accs[-1])
    best = Net()
    kept = train(best, data, FitSpec(epochs=4, lr=2e-2, batch_size=32), before_eval=_wreck_from(3))
    assert kept.best_epoch <= 2
    assert accuracy(best, x_val, y_val) > 0.9


def test_ema_weights_are_evaluated_and_restored(data) -> None:
    """With EMA, validation sees the averaged weights and the model comes back with the best averaged
    state, not the raw weights; the average lags the raw weights (it is closer to the start)."""
    x_tr, y_tr, x_val, y_val = data
    spec = FitSpec(epochs=3, lr=2e-2, batch_size=32, ema_decay=0.9)
    model = Net()
    init = params_of(model)
    evaluated: list[dict[str, torch.Tensor]] = []
    raw: list[dict[str, torch.Tensor]] = []

    def before_eval(m: nn.Module) -> None:
        assert m is not model, "with EMA the averaged copy is evaluated"
        evaluated.append(params_of(m))
        raw.append(params_of(model))

    result = train(model, data, spec, before_eval=before_eval)
    assert len(evaluated) == 3 and result.best_val_accuracy > 0.9
    best = result.best_epoch - 1
    final = params_of(model)
    assert all(torch.equal(final[k], evaluated[best][k]) for k in final)
    assert any(not torch.equal(final[k], raw[best][k]) for k in final)

    def dist(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        return float(sum(((a[k] - b[k]) ** 2).sum() for k in a))

    assert dist(evaluated[0], init) < dist(raw[0], init)
    assert accuracy(model, x_val, y_val) == pytest.approx(result.best_val_accuracy)


@pytest.mark.parametrize("with_teacher", [False, True])
def test_mixup_trains_with_and_without_a_teacher(data, with_teacher: bool) -> None:
    x_tr, y_tr, x_val, y_val = data
    soft = teacher_soft(y_tr) if with_teacher else None
    alpha = Schedule(0.5) if with_teacher else Schedule(0.0)
    states = {}
    for mix in (0.0, 0.4):
        model = Net()
        spec = FitSpec(epochs=4, lr=2e-2, batch_size=32, mixup=mix, alpha=alpha)
        result = train(model, data, spec, soft=soft)
        assert result.skipped_steps == 0 and result.best_val_accuracy > 0.85
        assert all(np.isfinite(row["loss"]) for row in result.history)
        assert all((row["kd"] > 0) == with_teacher for row in result.history)
        states[mix] = params_of(model)
    assert any(not torch.equal(states[0.0][k], states[0.4][k]) for k in states[0.0]), "mixup changed nothing"


# --- feature matching --------------------------------------------------------------------------------


def test_feature_matching_learns_the_teacher_embedding(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    soft = teacher_soft(y_tr, embeddings=embeddings_of(x_tr))
    spec = FitSpec(epochs=4, lr=2e-2, batch_size=32, alpha=Schedule(0.5), feature_weight=Schedule(1.0))
    model = FcNet()
    result = train(model, data, spec, soft=soft)
    feats = [row["feature"] for row in result.history]
    assert all(f > 0 and np.isfinite(f) for f in feats)
    assert feats[-1] < 0.7 * feats[0]
    assert all(row["loss"] > row["feature"] * 0.99 for row in result.history)
    assert result.best_val_accuracy > 0.9
    assert not model.fc._forward_pre_hooks, "the feature tap is removed after training"
    assert {k for k, _ in model.named_parameters()} == {k for k, _ in FcNet().named_parameters()}


def test_feature_matching_needs_an_fc_layer(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    soft = teacher_soft(y_tr, embeddings=embeddings_of(x_tr))
    spec = FitSpec(epochs=1, lr=2e-2, batch_size=32, alpha=Schedule(0.5), feature_weight=Schedule(1.0))
    with pytest.raises(EdgekdError, match="fc"):
        train(Net(), data, spec, soft=soft)


def test_feature_matching_masks_rows_without_an_embedding(data) -> None:
    """Rows without a teacher embedding (NaN) must simply not take part in feature matching."""
    x_tr, y_tr, x_val, y_val = data
    emb = embeddings_of(x_tr)
    emb[5] = np.nan
    spec = FitSpec(epochs=2, lr=2e-2, batch_size=32, alpha=Schedule(0.5), feature_weight=Schedule(1.0))
    model = FcNet()
    result = train(model, data, spec, soft=teacher_soft(y_tr, emb))
    assert result.skipped_steps == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(np.isfinite(row["feature"]) and row["feature"] > 0 for row in result.history)


def test_feature_weight_schedule_starting_at_zero_still_matches_features(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    soft = teacher_soft(y_tr, embeddings=embeddings_of(x_tr))
    spec = FitSpec(
        epochs=2, lr=2e-2, batch_size=32, alpha=Schedule(0.5), feature_weight=Schedule(0.0, 1.0, "linear")
    )
    result = train(FcNet(), data, spec, soft=soft)
    assert result.history[-1]["feature"] > 0


# --- parameter groups, logging, schedules ------------------------------------------------------------


def test_param_groups_scale_the_learning_rate(data) -> None:
    """lr_scale=0 freezes a group (AdamW's decoupled weight decay is scaled by the lr, too)."""
    x_tr, y_tr, x_val, y_val = data
    model = Net()
    before = params_of(model)
    groups = [
        {"params": list(model.body.parameters()), "lr_scale": 0.0},
        {"params": list(model.head.parameters()), "lr_scale": 1.0},
    ]
    spec = FitSpec(epochs=2, lr=2e-2, batch_size=32, weight_decay=0.1)
    result = train(model, data, spec, param_groups=groups)
    after = params_of(model)
    for k in before:
        if k.startswith("body."):
            assert torch.equal(before[k], after[k]), k
        else:
            assert not torch.equal(before[k], after[k]), k
    assert result.history[-1]["grad_norm"] > 0


def test_param_groups_accept_parameter_generators(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    model = Net()
    groups = [{"params": model.parameters(), "lr_scale": 1.0}]
    result = train(model, data, param_groups=groups)
    assert all(row["grad_norm"] > 0 for row in result.history)


def test_log_dir_writes_tensorboard_events_and_history_follows_the_schedules(data, tmp_path: Path) -> None:
    x_tr, y_tr, x_val, y_val = data
    alpha, temp = Schedule(0.0, 1.0, "linear"), Schedule(4.0, 1.0, "cosine")
    spec = FitSpec(epochs=3, lr=2e-2, batch_size=32, alpha=alpha, temperature=temp)
    log_dir = tmp_path / "tb"
    result = train(Net(), data, spec, soft=teacher_soft(y_tr), log_dir=log_dir, desc="student")
    events = list(log_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    steps, total = 6, 18  # 192 rows / 32 per step, 3 epochs; progress = step / (total - 1)
    for e, row in enumerate(result.history):
        p = ((e + 1) * steps - 1) / (total - 1)  # the epoch's last step
        assert row["alpha"] == pytest.approx(alpha.at(p)) and row["temperature"] == pytest.approx(temp.at(p))
    assert result.history[-1]["alpha"] == pytest.approx(1.0) and result.history[-1]["temperature"] == 1.0
    assert result.history[0]["alpha"] < result.history[1]["alpha"] < result.history[2]["alpha"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"student/loss", "student/kd", "student/alpha", "student/temperature", "student/lr"} <= tags
    logged_alpha = [ev.value for ev in acc.Scalars("student/alpha")]
    assert len(logged_alpha) == total
    np.testing.assert_allclose(logged_alpha, [alpha.at(s / (total - 1)) for s in range(total)], rtol=1e-6)
    assert len(acc.Scalars("student/val_accuracy")) == 3


def test_no_log_dir_writes_nothing(data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x_tr, y_tr, x_val, y_val = data
    monkeypatch.chdir(tmp_path)
    train(Net(), data, FitSpec(epochs=1, lr=2e-2, batch_size=32))
    assert list(tmp_path.iterdir()) == []  # no default ./runs directory


# --- helpers -----------------------------------------------------------------------------------------


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EdgekdError, match="--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_predict_batches_and_empty_input() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x = np.random.default_rng(0).normal(size=(10, 2, 2)).astype(np.float32)
    full = predict(model, x, CPU)
    np.testing.assert_allclose(predict(model, x, CPU, batch_size=3), full, rtol=1e-6)
    assert full.shape == (10, 2) and full.dtype == np.float32
    assert predict(model, x[:0], CPU).shape[0] == 0


def test_float_student_is_reproducible_whatever_ran_before() -> None:
    """Regression: the student's initial weights were drawn before fit() seeded torch, so two builds
    with the same seed in two processes trained different models. (This used to run the whole student
    stage, QAT included, at ~25 s; the seeding lives in `fit_float_student`, which the stage calls.)"""
    from edgekd.config import load_config
    from edgekd.stages.distill import fit_float_student
    from edgekd.train.trainer import TrainData

    cfg = load_config("esp32s3", overrides=["train.epochs=1", "train.batch_size=32"])
    rng = np.random.default_rng(0)
    x, x_val = (
        (rng.random((64, 98, 40)) * 20).astype(np.float32),
        (rng.random((16, 98, 40)) * 20).astype(np.float32),
    )
    data = TrainData(x, rng.integers(0, 12, 64), x_val, rng.integers(0, 12, 16))
    states = []
    for run in (1, 2):
        torch.manual_seed(run * 1000)  # whatever ran earlier in the process leaves a different state
        model, _ = fit_float_student(cfg, data, None, CPU, cfg.seed, progress=False)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
