"""The teacher gate decides on a paired interval, not on a point difference a few clips can flip."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.build import teacher_gate_record
from edgekd.report.markdown import teacher_gate_rule


def _preds(n: int, both: int, plain_only: int, teacher_only: int) -> tuple[np.ndarray, ...]:
    """Labels all 0: `both` clips right for both models, then `plain_only` right for the plain student
    alone, then `teacher_only` right for the teacher alone."""
    y = np.zeros(n, dtype=np.int64)
    plain, teacher = np.ones(n, dtype=np.int64), np.ones(n, dtype=np.int64)
    plain[: both + plain_only] = 0
    teacher[:both] = 0
    teacher[both + plain_only : both + plain_only + teacher_only] = 0
    return y, teacher, plain


def test_a_few_clips_do_not_refuse_a_teacher() -> None:
    """The `digits` recipe's seed-1 teacher: 94.03 vs 95.70 % of 419 clips (20 lost, 13 won) is noise."""
    y, teacher, plain = _preds(419, 381, 20, 13)
    record = teacher_gate_record(y, teacher, plain, margin_pts=-1.5, confidence=0.95)
    assert round(100 * record["teacher_validation"], 2) == 94.03
    assert round(100 * record["plain_student_validation"], 2) == 95.70
    low, high = record["interval_pts"]
    assert (round(low, 2), round(high, 2)) == (-4.27, 1.24)
    assert record["discordant"] == [20, 13] and record["passed"]


def test_a_clearly_worse_teacher_is_refused() -> None:
    """60 clips of 419 lost against 5 won: the whole interval lies below -1.5 points."""
    y, teacher, plain = _preds(419, 340, 60, 5)
    record = teacher_gate_record(y, teacher, plain, margin_pts=-1.5, confidence=0.95)
    assert record["interval_pts"][1] < -1.5
    assert not record["passed"]


@pytest.mark.parametrize(("margin", "passed"), [(-1.5, True), (0.0, False), (100.0, False)])
def test_identical_predictions_pass_only_a_margin_below_zero(margin: float, passed: bool) -> None:
    """No clip differs: a zero-width interval at 0, which margin 0 refuses (not above it) and -1.5 passes."""
    y, teacher, plain = _preds(200, 180, 0, 0)
    record = teacher_gate_record(y, teacher, plain, margin_pts=margin, confidence=0.95)
    assert record["interval_pts"] == [0.0, 0.0] and record["passed"] is passed


def test_the_report_names_what_the_gate_compared() -> None:
    """The interval where the build recorded one; the point rule's wording for builds that did not."""
    y, teacher, plain = _preds(419, 381, 20, 13)
    record = {**teacher_gate_record(y, teacher, plain, margin_pts=-1.5, confidence=0.95), "mode": "refuse"}
    assert teacher_gate_rule(record) == ", teacher - plain [-4.27, +1.24] pts: its high end needs > -1.5 pts"
    old = {k: v for k, v in record.items() if k not in ("interval_pts", "discordant")}
    assert teacher_gate_rule(old) == ", needs > -1.5 pts"
