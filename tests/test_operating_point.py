"""The `_unknown_` bias that puts a student at a fire rate: its own held, or its teacher's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.models.students import build_student
from edgekd.train.operating_point import add_logit_bias, fire_rate, hold_fire_rate, match_teacher

KEYWORDS, UNKNOWN = [0, 1], 2


def test_the_held_fire_rate_bias_is_the_smallest_that_reaches_the_target() -> None:
    logits = np.random.default_rng(1).normal(size=(2000, 3))
    assert fire_rate(logits, KEYWORDS, UNKNOWN) == pytest.approx(np.isin(logits.argmax(1), KEYWORDS).mean())
    bias = hold_fire_rate(logits, KEYWORDS, UNKNOWN, 0.25)
    assert (
        fire_rate(logits, KEYWORDS, UNKNOWN, bias) <= 0.25 < fire_rate(logits, KEYWORDS, UNKNOWN, bias - 1e-3)
    )
    assert hold_fire_rate(logits, KEYWORDS, UNKNOWN, 0.9) < 0  # firing more asks for a negative bias
    with pytest.raises(ValueError, match="no _unknown_ bias"):
        hold_fire_rate(logits * 100, KEYWORDS, UNKNOWN, 0.0)


def test_the_bias_lands_in_the_last_linear_layer() -> None:
    model = build_student("ds_cnn", 3, (49, 40))
    x = torch.randn(4, 49, 40)
    model.eval()
    before = model(x).detach()
    add_logit_bias(model, UNKNOWN, 1.5)
    assert torch.allclose(model(x).detach() - before, torch.tensor([0.0, 0.0, 1.5]), atol=1e-5)


def test_the_student_is_moved_to_its_teachers_fire_rate() -> None:
    rng = np.random.default_rng(3)
    teacher = rng.normal(size=(1500, 4))
    student = rng.normal(size=(1500, 4))
    student[:, UNKNOWN] += 2.0  # a cautious student: fires far less often than its teacher
    m = match_teacher(student, teacher, KEYWORDS, UNKNOWN)
    assert m.windows == 1500 and m.student_fire_rate < m.teacher_fire_rate
    assert m.unknown_bias < 0  # firing more asks for a negative bias
    assert m.teacher_fire_rate - 1 / 1500 <= m.matched_fire_rate <= m.teacher_fire_rate
    assert m.matched_fire_rate == fire_rate(student, KEYWORDS, UNKNOWN, m.unknown_bias)
    with pytest.raises(ValueError, match="differ"):
        match_teacher(student[:10], teacher, KEYWORDS, UNKNOWN)


def test_a_model_without_a_linear_bias_is_refused() -> None:
    with pytest.raises(ValueError, match="no linear layer"):
        add_logit_bias(torch.nn.Sequential(torch.nn.ReLU()), 0, 1.0)
