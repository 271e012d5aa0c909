"""The student's operating point on real speech: one bias on its `_unknown_` logit.

A student taught by synthetic voices (and by the teacher's soft labels on real speech, which say that
real speech is mostly not a keyword) learns *how often* to call something a keyword from its training
mix, not from the world. Measured on real audio it then sits at another operating point than its
teacher: on the built-in pool's speech the default digits student fired on 6.9 % of windows, the same
student taught on the pool too on 1.9 %, the teacher on 13.3 %; at argmax the cautious student calls
more real digits `_unknown_`, although at one shared fire rate on the pool it hears them 8-9 points
better (docs/DESIGN.md, "One operating point for every comparison"). That yardstick flatters a pool-taught
student: it learns to reject the pool's (foreign-language) speech, so at the pool's rate it fires more on
English other words, and at equal keyword accuracy on `real-commands-dev` it is no better than the recipe
(docs/DESIGN.md, "Along the whole curve"). The rule is a choice of trade-off, hence opt-in.

`match_teacher` moves the student to its teacher's operating point: the bias at which the student fires
on as many windows of unlabelled real speech as the teacher does. Only the pool's `calibration` part is
involved (never trained on), no label and no evaluation recording; the bias is folded into the last
linear layer before QAT, so the int8 graph carries it for free. `bench/bench_real.py --fire-rate` and
`edgekd.train.adapt` use the same functions to compare models at one operating point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

BIAS_RANGE = 10.0  # logits; a bias outside it means the model is broken, not miscalibrated
# Added to the bisection's bias, which sits on a row's decision boundary to 1e-11: float32 weights
# would round that row back across it. 1e-4 logits is far below one int8 output step (~0.07).
BIAS_MARGIN = 1e-4


def fire_rate(logits: np.ndarray, keywords: list[int], unknown: int, bias: float = 0.0) -> float:
    """Share of rows whose top class is a keyword once `bias` is added to the `_unknown_` logit."""
    shifted = logits.copy()
    shifted[:, unknown] += bias
    return float(np.isin(shifted.argmax(1), keywords).mean())


def hold_fire_rate(logits: np.ndarray, keywords: list[int], unknown: int, target: float) -> float:
    """The smallest `_unknown_` bias at which the model fires on at most `target` of these rows
    (the rate falls as the bias rises: bisection)."""
    lo, hi = -BIAS_RANGE, BIAS_RANGE
    if fire_rate(logits, keywords, unknown, hi) > target:
        raise ValueError(f"no _unknown_ bias within ±{BIAS_RANGE} holds the fire rate at {target:.3f}")
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fire_rate(logits, keywords, unknown, mid) <= target else (mid, hi)
    return hi + BIAS_MARGIN


def add_logit_bias(model: nn.Module, index: int, bias: float) -> None:
    """Add `bias` to one output of the model's last linear layer (folded into its bias: the int8
    graph carries it for free)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].bias is None:
        raise ValueError("the model has no linear layer with a bias to move")
    with torch.no_grad():
        linears[-1].bias[index] += bias


@dataclass(frozen=True)
class TeacherMatch:
    """Where `match_teacher` put the student (the manifest and report quote it)."""

    windows: int
    teacher_fire_rate: float
    student_fire_rate: float  # as trained
    unknown_bias: float
    matched_fire_rate: float  # with the bias: the teacher's, to one window (ties aside)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def match_teacher(
    student: np.ndarray, teacher: np.ndarray, keywords: list[int], unknown: int
) -> TeacherMatch:
    """The `_unknown_` bias at which the student's logits fire on as many rows as the teacher's."""
    if student.shape != teacher.shape:
        raise ValueError(f"student logits {student.shape} and teacher logits {teacher.shape} differ")
    target = fire_rate(teacher, keywords, unknown)
    bias = hold_fire_rate(student, keywords, unknown, target)
    return TeacherMatch(
        windows=len(student),
        teacher_fire_rate=target,
        student_fire_rate=fire_rate(student, keywords, unknown),
        unknown_bias=bias,
        matched_fire_rate=fire_rate(student, keywords, unknown, bias),
    )
