"""SpecAugment (Park et al. 2019) on batches of features [N, T, C], shared by the classifier and the
wake-word student.

Each example loses up to `freq_masks` bands of 0..`freq_width` channels and up to `time_masks` spans of
0..`time_width` frames, each placed wholly inside the example. A voice or a microphone the synthetic corpus
lacks moves energy between bands and stretches sounds; a student that cannot lean on any one band or instant
has to use the rest of the word, which is what carries over to people (docs/DESIGN.md: on the wake word
`computer` it nearly doubled the people heard at the strictest point).

Frequency warping (`freq_warp`, vocal-tract-length perturbation after Jaitly & Hinton 2013, done on the
features): each example's channel axis is resampled as if every frequency were scaled by a factor drawn
from `1 +- freq_warp`. A longer or shorter vocal tract moves every formant by about that factor; the
synthetic corpus has a few hundred vocal tracts, people have as many as there are people. The channels are
assumed HTK-mel-spaced over the micro frontend's 125-7500 Hz (the log-mel frontend's 20-7600 Hz is close
enough for a factor of a few per cent); bands warped past either edge repeat the edge channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

LOWER_HZ, UPPER_HZ = 125.0, 7500.0  # the micro frontend's filterbank edges


def mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * np.expm1(m / 1127.0)


def warp_positions(factors: torch.Tensor, channels: int) -> torch.Tensor:
    """Fractional source channel [N, C] for each output channel when frequencies scale by `factors` [N]:
    output channel i (centre f_i) reads the input at f_i / factor, clamped to the outermost channels."""
    lo, hi = mel(LOWER_HZ), mel(UPPER_HZ)
    step = (hi - lo) / (channels + 1)  # triangular filters: C centres between the two edges
    centres = mel_to_hz(lo + step * np.arange(1, channels + 1))
    source = mel(centres[None, :] / factors.double().numpy()[:, None])
    return torch.from_numpy((source - lo) / step - 1).float().clamp(0, channels - 1)


def freq_warp(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """`x` [N, T, C] with each example's channels resampled (linearly) at `warp_positions`."""
    pos = warp_positions(factors, x.shape[2])
    left = pos.floor().long().clamp(max=x.shape[2] - 2)
    frac = (pos - left).unsqueeze(1)
    lo = torch.gather(x, 2, left.unsqueeze(1).expand(-1, x.shape[1], -1))
    hi = torch.gather(x, 2, (left + 1).unsqueeze(1).expand(-1, x.shape[1], -1))
    return lo + frac * (hi - lo)


class MaskFields(Protocol):
    """The config sections that ask for SpecAugment (`train`, `wakeword`) carry these fields."""

    freq_masks: int
    freq_mask_width: int
    time_masks: int
    time_mask_width: int
    freq_warp: float


@dataclass(frozen=True)
class SpecAugment:
    freq_masks: int = 0
    freq_width: int = 0
    time_masks: int = 0
    time_width: int = 0
    # what a masked cell becomes: the example's mean (the wake-word student, measured with it), or its
    # minimum, i.e. silence (the classifier's choice since its first build)
    fill: Literal["mean", "min"] = "mean"
    freq_warp: float = 0.0  # frequencies scaled by a factor in 1 +- this, per example (0: off)

    @classmethod
    def of(cls, fields: MaskFields, fill: Literal["mean", "min"]) -> SpecAugment:
        return cls(
            fields.freq_masks, fields.freq_mask_width, fields.time_masks, fields.time_mask_width, fill,
            fields.freq_warp,
        )  # fmt: skip

    @property
    def masks(self) -> bool:
        return bool(self.freq_masks and self.freq_width) or bool(self.time_masks and self.time_width)

    @property
    def on(self) -> bool:
        return self.masks or self.freq_warp > 0

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """`x` warped, then masked, with the draws from `gen` (the input is not modified; the same draws
        give the same output, so a seeded build reproduces)."""
        if not self.on:
            return x
        n, t, c = x.shape
        if self.freq_warp > 0:
            x = freq_warp(x, 1 + self.freq_warp * (2 * torch.rand(n, generator=gen) - 1))
        if not self.masks:
            return x
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
