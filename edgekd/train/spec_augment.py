"""SpecAugment (Park et al. 2019) on batches of features [N, T, C], shared by the classifier and the
wake-word student.

Each example loses up to `freq_masks` bands of 0..`freq_width` channels and up to `time_masks` spans of
0..`time_width` frames, each placed wholly inside the example. A voice or a microphone the synthetic corpus
lacks moves energy between bands and stretches sounds; a student that cannot lean on any one band or instant
has to use the rest of the word, which is what carries over to people (docs/DESIGN.md: on the wake word
`computer` it nearly doubled the people heard at the strictest point).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch


class MaskFields(Protocol):
    """The config sections that ask for SpecAugment (`train`, `wakeword`) carry these four fields."""

    freq_masks: int
    freq_mask_width: int
    time_masks: int
    time_mask_width: int


@dataclass(frozen=True)
class SpecAugment:
    freq_masks: int = 0
    freq_width: int = 0
    time_masks: int = 0
    time_width: int = 0
    # what a masked cell becomes: the example's mean (the wake-word student, measured with it), or its
    # minimum, i.e. silence (the classifier's choice since its first build)
    fill: Literal["mean", "min"] = "mean"

    @classmethod
    def of(cls, fields: MaskFields, fill: Literal["mean", "min"]) -> SpecAugment:
        return cls(fields.freq_masks, fields.freq_mask_width, fields.time_masks, fields.time_mask_width, fill)

    @property
    def on(self) -> bool:
        return bool(self.freq_masks and self.freq_width) or bool(self.time_masks and self.time_width)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """`x` with the masks drawn from `gen` (the input is not modified; the same draws mask the same
        cells, so a seeded build reproduces)."""
        if not self.on:
            return x
        n, t, c = x.shape
        keep = torch.ones(x.shape, dtype=torch.bool)
        for count, width, size, axis in (
            (self.freq_masks, self.freq_width, c, 2),
            (self.time_masks, self.time_width, t, 1),
        ):
            pos = torch.arange(size).view(*([1] * axis), size, *([1] * (2 - axis)))  # broadcast along `axis`
            for _ in range(count if width else 0):
                w = torch.randint(0, min(width, size) + 1, (n,), generator=gen)
                start = (torch.rand(n, generator=gen) * (size - w + 1)).long()
                lo, hi = start.view(n, 1, 1), (start + w).view(n, 1, 1)
                keep &= ~((pos >= lo) & (pos < hi))
        fill = x.mean(dim=(1, 2), keepdim=True) if self.fill == "mean" else x.amin(dim=(1, 2), keepdim=True)
        return torch.where(keep.to(x.device), x, fill)
