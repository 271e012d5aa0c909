"""Batch-norm statistics adapted to real audio (AdaBN, Li et al. 2016), without a single label.

The student learns from synthetic voices; its batch norms then normalise every input with statistics of
synthetic audio. Real speech through real channels has other feature statistics, so each layer's
activations arrive shifted and scaled, and the classifier on top reads them wrongly. Re-estimating the
statistics on a mix of the training rows and windows of real speech (the built-in pool, no labels)
moves the normalisation half-way to the real domain without touching a weight.

Re-normalising also moves the decision boundary between the keywords and `_unknown_`: on the real pool
(speech that holds none of the keywords, mostly) the adapted student fires more often. One bias on the
`_unknown_` logit, chosen so that the adapted student fires on exactly as many pool windows as before,
keeps the rejection of other speech where it was; what is left is the gain in discrimination. The pool's
windows are the only audio involved: no real labelled recording chooses anything here.

Measured (`bench/bench_adapt.py`, docs/DESIGN.md): no gain on 3,240 real digits at a held fire rate, 2-5
points on kws12's 77 real commands within their interval; the build does not adapt. The bias comes from
`edgekd.train.operating_point`, which also puts every build at its teacher's operating point.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgekd.train.operating_point import add_logit_bias, fire_rate, hold_fire_rate


@dataclass(frozen=True)
class Adaptation:
    """What the adaptation did (bench/bench_adapt.py prints it)."""

    source_rows: int
    target_rows: int
    unknown_bias: float
    fire_rate_before: float  # share of target windows the student calls a keyword, before adapting
    fire_rate_after: float  # with the bias: equal to `fire_rate_before` up to the bisection's tolerance


def mix_rows(
    source: np.ndarray, target: np.ndarray, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Source and target rows in the proportion `share` of target rows, as many as the smaller side
    allows (subsampled without replacement, seeded)."""
    if not 0 < share <= 1:
        raise ValueError(f"share={share}: the share of target rows must be in (0, 1]")
    rng = np.random.default_rng(seed)
    n_target = len(target) if share == 1 else min(len(target), int(len(source) * share / (1 - share)))
    n_source = min(len(source), int(round(n_target * (1 - share) / share)))
    return (
        source[np.sort(rng.choice(len(source), n_source, replace=False))],
        target[np.sort(rng.choice(len(target), n_target, replace=False))],
    )


def reestimate_batch_norm(model: nn.Module, x: np.ndarray, batch_size: int = 256, seed: int = 0) -> nn.Module:
    """A copy of `model` whose batch norms hold the mean of their per-batch statistics over `x`, every
    batch weighted alike (the training run's moving average forgets its early batches); weights are
    untouched."""
    adapted = copy.deepcopy(model)
    norms = [m for m in adapted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("the model has no batch norm to adapt")
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over every batch
    adapted.train()
    order = np.random.default_rng(seed).permutation(len(x))
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            adapted(torch.as_tensor(x[order[i : i + batch_size]], dtype=torch.float32))
    return adapted.eval()


def adapt_to_real(
    model: nn.Module,
    source: np.ndarray,
    target: np.ndarray,
    share: float,
    keywords: list[int],
    unknown: int,
    seed: int,
) -> tuple[nn.Module, Adaptation]:
    """`model` with batch norms re-estimated on `share` target rows among source rows, and the
    `_unknown_` bias that keeps its fire rate on the target rows."""
    from edgekd.train.trainer import predict

    cpu = torch.device("cpu")
    src, tgt = mix_rows(source, target, share, seed)
    before = fire_rate(predict(model, target, cpu), keywords, unknown)
    adapted = reestimate_batch_norm(model, np.concatenate([src, tgt]), seed=seed)
    logits = predict(adapted, target, cpu)
    bias = hold_fire_rate(logits, keywords, unknown, before)
    add_logit_bias(adapted, unknown, bias)
    return adapted, Adaptation(
        source_rows=len(src),
        target_rows=len(tgt),
        unknown_bias=bias,
        fire_rate_before=before,
        fire_rate_after=fire_rate(logits, keywords, unknown, bias),
    )
