"""Batch-norm adaptation to unlabelled audio, with the `_unknown_` bias that holds its fire rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.train.adapt import adapt_to_real, mix_rows, reestimate_batch_norm
from edgekd.train.operating_point import fire_rate
from edgekd.train.trainer import predict

KEYWORDS, UNKNOWN = [0, 1], 2


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3)).eval()


def test_mix_rows_keeps_the_share_and_never_repeats_a_row() -> None:
    source, target = np.arange(100)[:, None], 1000 + np.arange(30)[:, None]
    src, tgt = mix_rows(source, target, 0.2, seed=0)
    assert (len(src), len(tgt)) == (100, 25)  # the source side limits: 25 / 125 = 20 %
    src, tgt = mix_rows(source, target, 0.5, seed=0)
    assert (len(src), len(tgt)) == (30, 30)  # the target side limits
    assert len(np.unique(src)) == len(src) and len(np.unique(tgt)) == len(tgt)
    src, tgt = mix_rows(source, target, 1.0, seed=0)
    assert (len(src), len(tgt)) == (0, 30)
    with pytest.raises(ValueError, match="share=0"):
        mix_rows(source, target, 0.0, seed=0)


def test_batch_norm_statistics_are_the_moments_of_the_new_rows() -> None:
    model = tiny()
    weights = {
        k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k
    }
    x = np.random.default_rng(0).normal(3.0, 2.0, (1000, 2, 3)).astype(np.float32)
    adapted = reestimate_batch_norm(model, x, batch_size=125)  # 8 equal batches: an exact mean
    with torch.no_grad():
        h = model[1](model[0](torch.from_numpy(x)))
    bn = adapted[2]
    assert torch.allclose(bn.running_mean, h.mean(0), atol=1e-4)
    assert torch.allclose(bn.running_var, h.var(0), rtol=0.05)  # the mean of 8 batches' variances
    assert not adapted.training
    for k, v in adapted.state_dict().items():  # weights untouched, and the caller's model too
        if k in weights:
            assert torch.equal(v, weights[k])
    assert torch.equal(model[2].running_mean, torch.zeros(4))
    with pytest.raises(ValueError, match="no batch norm"):
        reestimate_batch_norm(nn.Linear(6, 3), x.reshape(1000, 6))


def test_adaptation_holds_the_fire_rate_on_the_target_rows() -> None:
    rng = np.random.default_rng(2)
    source = rng.normal(0.0, 1.0, (600, 2, 3)).astype(np.float32)
    target = rng.normal(1.5, 3.0, (300, 2, 3)).astype(np.float32)  # another domain's statistics
    model = tiny()
    adapted, info = adapt_to_real(model, source, target, 0.5, KEYWORDS, UNKNOWN, seed=0)
    assert (info.source_rows, info.target_rows) == (300, 300)
    after = fire_rate(predict(adapted, target, torch.device("cpu")), KEYWORDS, UNKNOWN)
    assert after == pytest.approx(info.fire_rate_after) and after <= info.fire_rate_before
    assert info.fire_rate_before - after <= 1 / len(target) + 1e-9  # held, to one row
    assert not torch.equal(adapted[2].running_mean, model[2].running_mean)
