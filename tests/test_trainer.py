"""The training loop: learns, keeps the best epoch, is reproducible, survives (and reports) bad steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.train.trainer import FitSpec, fit, predict, resolve_device, spec_augment

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


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model, x, CPU).argmax(1) == y).mean())


SPEC = FitSpec(epochs=4, lr=2e-2, batch_size=32)


def test_learns_a_separable_problem(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    model = Net()
    result = fit(model, x_tr, y_tr, x_val, y_val, SPEC, device=CPU, seed=0, progress=False)
    assert result.best_val_accuracy > 0.9
    assert accuracy(model, x_val, y_val) == pytest.approx(result.best_val_accuracy)
    assert not model.training  # handed back in eval mode
    assert result.skipped_steps == 0
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    for row in result.history:
        assert {"loss", "ce", "kd", "grad_norm", "val_accuracy", "lr"} <= set(row)
        assert np.isfinite([row["loss"], row["ce"], row["grad_norm"]]).all() and row["kd"] == 0.0
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

    result = fit(
        model, x_tr, y_tr, x_val, y_val, SPEC, device=CPU, seed=0, progress=False, before_eval=before_eval
    )
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


def test_deterministic_for_a_fixed_seed(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    spec = FitSpec(epochs=2, lr=1e-2, batch_size=32, spec_augment=True, label_smoothing=0.1)
    runs = []
    for seed in (3, 3, 4):
        model = Net()
        result = fit(model, x_tr, y_tr, x_val, y_val, spec, device=CPU, seed=seed, progress=False)
        runs.append((model.state_dict(), result.history))
    (a, hist_a), (b, hist_b), (c, _) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert hist_a == hist_b
    assert not all(torch.equal(a[k], c[k]) for k in a), "a different seed should train differently"


def test_non_finite_steps_are_skipped_and_counted(data) -> None:
    """One NaN example spoils one batch per epoch: that step is skipped, and leaves no NaN behind."""
    x_tr, y_tr, x_val, y_val = data
    x_bad = x_tr.copy()
    x_bad[7, 3, 4] = np.nan
    model = Net()
    result = fit(model, x_bad, y_tr, x_val, y_val, SPEC, device=CPU, seed=0, progress=False)
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
    spec = FitSpec(epochs=3, lr=1e-2, batch_size=32, alpha=0.5, temperature=2.0)
    result = fit(
        Net(), x_tr, y_tr, x_val, y_val, spec, device=CPU, seed=0, teacher_logits=teacher, progress=False
    )
    assert result.skipped_steps == spec.epochs
    assert result.best_val_accuracy > 0.9


def test_too_many_non_finite_steps_raise(data) -> None:
    x_tr, y_tr, x_val, y_val = data
    teacher = np.full((len(y_tr), 3), np.nan, dtype=np.float32)
    spec = FitSpec(epochs=2, lr=1e-2, batch_size=32, alpha=0.5)
    with pytest.raises(EdgekdError, match="non-finite loss") as err:
        fit(
            Net(),
            x_tr,
            y_tr,
            x_val,
            y_val,
            spec,
            device=CPU,
            seed=0,
            teacher_logits=teacher,
            progress=False,
            desc="student",
        )
    assert "student" in str(err.value) and "NaN" in str(err.value)


def test_distillation_logs_and_follows_the_teacher(data) -> None:
    """alpha=1 trains on soft targets only: a teacher that relabels y as (y+1) % 3 is what is learned."""
    x_tr, y_tr, x_val, y_val = data
    teacher = np.eye(3, dtype=np.float32)[(y_tr + 1) % 3] * 6
    spec = FitSpec(epochs=4, lr=1e-2, batch_size=32, alpha=1.0, temperature=2.0)
    model = Net()
    result = fit(
        model, x_tr, y_tr, x_val, y_val, spec, device=CPU, seed=0, teacher_logits=teacher, progress=False
    )
    assert all(row["kd"] > 0 and np.isfinite(row["kd"]) for row in result.history)
    assert all(row["loss"] == pytest.approx(row["kd"], rel=1e-6) for row in result.history)
    pred = predict(model, x_val, CPU).argmax(1)
    assert (pred == (y_val + 1) % 3).mean() > 0.9

    mixed = FitSpec(epochs=2, lr=1e-2, batch_size=32, alpha=0.5, temperature=2.0)
    result = fit(
        Net(), x_tr, y_tr, x_val, y_val, mixed, device=CPU, seed=0, teacher_logits=teacher, progress=False
    )
    assert all(row["kd"] > 0 and row["ce"] > 0 for row in result.history)


def test_spec_augment_masks_a_bounded_region_deterministically() -> None:
    n, t, f, max_t, max_f = 64, 30, 20, 10, 5
    x = torch.randn(n, t, f, generator=torch.Generator().manual_seed(0)) + 10
    x[:, 0, 0] = -5.0  # the clip minimum, i.e. the fill value
    x_before = x.clone()
    out = spec_augment(x, torch.Generator().manual_seed(1), max_t=max_t, max_f=max_f)
    assert torch.equal(x, x_before), "input must not be modified"
    assert torch.equal(out, spec_augment(x, torch.Generator().manual_seed(1), max_t=max_t, max_f=max_f))
    assert not torch.equal(out, spec_augment(x, torch.Generator().manual_seed(2), max_t=max_t, max_f=max_f))
    n_masked_examples = 0
    for i in range(n):
        masked = out[i] == -5.0
        changed = out[i] != x[i]
        assert torch.equal(changed | masked, masked), "anything changed must be set to the clip minimum"
        rows, cols = masked.all(1), masked.all(0)
        assert rows.sum() <= max_t and cols.sum() <= max_f
        for line in (rows, cols):  # each mask is one contiguous band
            idx = torch.nonzero(line).flatten()
            assert len(idx) == 0 or idx[-1] - idx[0] + 1 == len(idx)
        expected = rows[:, None] | cols[None, :]
        expected[0, 0] = True
        assert torch.equal(masked, expected), "masked cells must form whole time rows / frequency columns"
        n_masked_examples += bool(changed.any())
    assert n_masked_examples > n // 2  # it does augment


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


def test_student_stage_is_reproducible_whatever_ran_before(tmp_path) -> None:
    """Regression: the student's initial weights were drawn before fit() seeded torch, so two builds
    with the same seed in two processes trained different models."""
    from edgekd.artifacts import write_npz
    from edgekd.config import load_config
    from edgekd.pipeline import Stages
    from edgekd.stages.distill import stage_student

    cfg = load_config("esp32s3", overrides=["train.epochs=1", "train.qat_epochs=1", "train.batch_size=32"])
    rng = np.random.default_rng(0)
    feats = tmp_path / "features"
    feats.mkdir()
    arrays = {
        split: (rng.random((n, 98, 40)) * 20).astype(np.float32)
        for split, n in (("train", 64), ("validation", 16), ("test", 16))
    }
    labels = {f"y_{split}": rng.integers(0, 12, len(a)) for split, a in arrays.items()}
    write_npz(feats / "features.npz", **arrays, **labels)
    states = []
    for run in (1, 2):
        torch.manual_seed(run * 1000)  # whatever ran earlier in the process leaves a different state
        stages = Stages(tmp_path / f"cache{run}", log=lambda _m: None)
        out, _ = stage_student(cfg, feats, "f", None, None, stages, torch.device("cpu"), progress=False)
        states.append(torch.load(out / "float.pt", weights_only=True))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
