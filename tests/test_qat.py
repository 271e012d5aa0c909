"""QAT preparation: the prepared graph trains like a module, switches train/eval, and freezes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _models import TinyDsCnn, realistic_features, train_steps

from edgekd.errors import EdgekdError
from edgekd.train import qat
from edgekd.train.qat import copy_prepared, freeze_observers, prepare_qat, trained_weight_scales


@pytest.fixture(scope="module")
def source_model() -> TinyDsCnn:
    torch.manual_seed(0)
    return TinyDsCnn().eval()


@pytest.fixture(scope="module")
def prepared_once(source_model: TinyDsCnn) -> torch.fx.GraphModule:
    return prepare_qat(source_model, realistic_features(1, seed=0))


@pytest.fixture
def prepared(prepared_once: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A fresh copy per test (preparing costs seconds, copying milliseconds)."""
    torch.manual_seed(0)
    return copy_prepared(prepared_once)


def test_training_updates_weights_with_finite_loss(prepared: torch.fx.GraphModule) -> None:
    before = {k: v.detach().clone() for k, v in prepared.named_parameters()}
    losses = train_steps(prepared, steps=3, seed=1)
    assert all(math.isfinite(loss) for loss in losses)
    changed = [k for k, v in prepared.named_parameters() if not torch.equal(v, before[k])]
    assert len(changed) == len(before), f"unchanged parameters: {set(before) - set(changed)}"


def test_batch_dimension_is_dynamic(prepared: torch.fx.GraphModule) -> None:
    # prepared from a batch of 1, run with other batch sizes
    for batch in (1, 5):
        assert prepared(realistic_features(batch, seed=2)).shape == (batch, 12)


def test_eval_uses_running_stats_and_train_switches_back(prepared: torch.fx.GraphModule) -> None:
    train_steps(prepared, steps=2, seed=3)
    freeze_observers(prepared)
    x = realistic_features(8, seed=4)
    prepared.eval()
    with torch.no_grad():
        # eval batch norm: a sample's output does not depend on the rest of its batch
        torch.testing.assert_close(prepared(x[:1]), prepared(x)[:1], rtol=1e-5, atol=1e-5)
        prepared.train()
        assert not torch.allclose(prepared(x[:2])[:1], prepared(x)[:1], atol=1e-3)


def test_prepare_leaves_callers_model_untouched(
    source_model: TinyDsCnn, prepared: torch.fx.GraphModule
) -> None:
    before = {k: v.clone() for k, v in source_model.state_dict().items()}
    train_steps(prepared, steps=2, seed=5)
    assert not source_model.training
    assert all(torch.equal(v, before[k]) for k, v in source_model.state_dict().items())


def test_frozen_observers_keep_scales_while_weights_train(prepared: torch.fx.GraphModule) -> None:
    train_steps(prepared, steps=2, seed=6)
    freeze_observers(prepared)
    scales = trained_weight_scales(prepared)
    weight = prepared.get_parameter("classifier.weight").detach().clone()
    train_steps(prepared, steps=2, seed=7)
    assert not torch.equal(weight, prepared.get_parameter("classifier.weight"))
    assert [s.shape for s in scales] == [(16,), (16,), (16,), (12,)]
    for before, after in zip(scales, trained_weight_scales(prepared), strict=True):
        np.testing.assert_array_equal(before, after)


def test_example_without_batch_dimension_is_refused() -> None:
    with pytest.raises(EdgekdError, match="batch dimension"):
        prepare_qat(TinyDsCnn(), torch.tensor(1.0))


def test_copies_keep_train_eval_switching(prepared: torch.fx.GraphModule) -> None:
    train_steps(prepared, steps=1, seed=8)
    freeze_observers(prepared)
    prepared.eval()
    x = realistic_features(4, seed=9)
    clone = copy_prepared(prepared)
    clone.train()
    clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(clone(x), prepared(x))


def test_train_eval_switches_trace_their_patterns_once(
    prepared: torch.fx.GraphModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchao traces six batch-norm/dropout patterns on every mode switch (~1 s); after the first
    switch each pattern comes from the per-process cache, and the switches still rewrite the graph."""
    train_steps(prepared, steps=1, seed=11)
    freeze_observers(prepared)
    x = realistic_features(4, seed=12)
    prepared.eval()
    prepared.train()
    traced = []
    trace = qat.torchao_pt2e_utils._get_aten_graph_module_for_pattern
    monkeypatch.setattr(
        qat.torchao_pt2e_utils,
        "_get_aten_graph_module_for_pattern",
        lambda *a, **k: traced.append(1) or trace(*a, **k),
    )
    with torch.no_grad():
        for _ in range(3):
            prepared.eval()  # running statistics: an example's output does not depend on its batch
            torch.testing.assert_close(prepared(x[:1]), prepared(x)[:1], rtol=1e-5, atol=1e-5)
            prepared.train()
            assert not torch.allclose(prepared(x[:2])[:1], prepared(x)[:1], atol=1e-3)
    assert not traced


class _FixedBatch(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(40, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(4, -1, 40))


def test_model_that_fixes_the_batch_size_is_refused() -> None:
    with pytest.raises(EdgekdError, match="dynamic batch dimension"):
        prepare_qat(_FixedBatch(), realistic_features(4, seed=0))


def test_qat_trains_on_the_float_students_batch_norm_statistics() -> None:
    """`run_qat` keeps batch norm in its inference form: the running statistics the float student learnt
    (on real pool rows too, which QAT does not see) reach the int8 model unchanged, while the weights
    train. Re-estimated on QAT's rows they moved ~4 % of real-pool decisions (docs/DESIGN.md, stop 48)."""
    from edgekd.stages.distill import run_qat
    from edgekd.train.schedules import Schedule
    from edgekd.train.trainer import FitSpec, TrainData

    torch.manual_seed(0)
    model = TinyDsCnn()
    train_steps(model, steps=3, seed=8)  # statistics of its own, not the 0 / 1 a fresh norm starts from
    model.eval()
    x = realistic_features(48, seed=9).numpy()
    y = np.random.default_rng(9).integers(0, 12, 48)
    spec = FitSpec(
        epochs=3, lr=1e-2, batch_size=8, alpha=Schedule(0.9), temperature=Schedule(2.0), warmup_epochs=0
    )
    prepared, _ = run_qat(model, TrainData(x[:32], y[:32], x[32:], y[32:]), spec, seed=0, progress=False)

    def stats(m: torch.nn.Module) -> list[torch.Tensor]:
        return [b for name, b in sorted(m.named_buffers()) if "running_" in name]

    assert len(stats(model)) == 6 and not torch.equal(stats(model)[0], torch.zeros(16))
    for float_stat, qat_stat in zip(stats(model), stats(prepared), strict=True):
        torch.testing.assert_close(qat_stat, float_stat, rtol=0, atol=0)
    trained = prepared.get_parameter("classifier.weight")
    assert not torch.equal(trained, model.classifier.weight)
