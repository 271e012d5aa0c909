"""Schedule(start, end, kind).at(progress): the value alpha, T and the feature weight follow over training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekd.train.schedules import Schedule

KINDS = ("constant", "linear", "cosine", "step")
GRID = np.linspace(0.0, 1.0, 101)


@pytest.mark.parametrize("kind", KINDS)
def test_constant_when_end_is_none_or_equal(kind: str) -> None:
    """end=None (or end == start) means "stays at start", whatever the kind."""
    for s in (Schedule(0.7, None, kind), Schedule(0.7, 0.7, kind)):
        assert all(s.at(p) == 0.7 for p in GRID)


def test_constant_kind_ignores_end() -> None:
    s = Schedule(2.0, 8.0, "constant")
    assert {s.at(p) for p in (0.0, 0.3, 1.0)} == {2.0}


@pytest.mark.parametrize("kind", ["linear", "cosine", "step"])
@pytest.mark.parametrize(("start", "end"), [(0.0, 1.0), (4.0, 1.0)])
def test_endpoints(kind: str, start: float, end: float) -> None:
    s = Schedule(start, end, kind)
    assert s.at(0.0) == pytest.approx(start, abs=1e-12)
    assert s.at(1.0) == pytest.approx(end, abs=1e-12)


def test_midpoints() -> None:
    assert Schedule(0.0, 1.0, "linear").at(0.25) == pytest.approx(0.25)
    assert Schedule(4.0, 1.0, "linear").at(0.5) == pytest.approx(2.5)
    # cosine: half-way at the middle, but slow at both ends (below the linear ramp early on)
    cos = Schedule(0.0, 1.0, "cosine")
    assert cos.at(0.5) == pytest.approx(0.5)
    assert cos.at(0.25) == pytest.approx(0.5 * (1 - math.cos(math.pi * 0.25)))
    assert cos.at(0.1) < 0.1 and cos.at(0.9) > 0.9
    # step: one switch at half-way
    step = Schedule(0.9, 0.1, "step")
    assert step.at(0.49) == 0.9 and step.at(0.5) == 0.1 and step.at(0.99) == 0.1


@pytest.mark.parametrize("kind", ["linear", "cosine", "step"])
@pytest.mark.parametrize(("start", "end"), [(0.0, 1.0), (4.0, 1.0)])
def test_monotone_between_start_and_end(kind: str, start: float, end: float) -> None:
    values = np.array([Schedule(start, end, kind).at(p) for p in GRID])
    steps = np.diff(values) * np.sign(end - start)
    assert np.all(steps >= -1e-12), "moves only toward `end`"
    assert values.min() >= min(start, end) - 1e-12 and values.max() <= max(start, end) + 1e-12
    if kind != "step":
        assert len(np.unique(np.round(values, 9))) > 50  # a ramp, not a jump


@pytest.mark.parametrize("kind", KINDS)
def test_progress_outside_zero_one_is_clamped(kind: str) -> None:
    s = Schedule(3.0, 1.0, kind)
    assert s.at(-0.5) == s.at(0.0) and s.at(-100.0) == s.at(0.0)
    assert s.at(1.5) == s.at(1.0) and s.at(100.0) == s.at(1.0)
