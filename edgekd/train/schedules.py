"""Schedules for the distillation weights: a value that moves from `start` to `end` over training.

`alpha` (how much the student listens to the teacher), the temperature (how much of the teacher's
dark knowledge it sees) and the feature-matching weight can each follow one. Progress is measured
in optimizer steps over the whole run, so a schedule means the same thing at any batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Kind = Literal["constant", "linear", "cosine", "step"]


@dataclass(frozen=True)
class Schedule:
    start: float
    end: float | None = None  # None: constant at `start`
    kind: Kind = "constant"

    def at(self, progress: float) -> float:
        """The value at `progress` in [0, 1] (0 = first step, 1 = last)."""
        end = self.start if self.end is None else self.end
        p = min(1.0, max(0.0, progress))
        if self.kind == "constant" or end == self.start:
            return self.start
        if self.kind == "linear":
            return self.start + (end - self.start) * p
        if self.kind == "cosine":  # slow at both ends: a gentle hand-over between the two regimes
            return end + (self.start - end) * 0.5 * (1.0 + math.cos(math.pi * p))
        return self.start if p < 0.5 else end  # step: one switch half-way
