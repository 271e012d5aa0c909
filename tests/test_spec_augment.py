"""SpecAugment (`edgekd.train.spec_augment`), shared by the classifier and the wake-word student, and the
config fields that ask for it."""

from __future__ import annotations

import pytest
import torch

from edgekd.config import load_config
from edgekd.errors import ConfigError
from edgekd.stages.distill import float_spec
from edgekd.stages.wakeword import train_config
from edgekd.train.spec_augment import LOWER_HZ, UPPER_HZ, SpecAugment, freq_warp, mel


@pytest.mark.parametrize("fill", ["mean", "min"])
def test_masks_are_whole_bands_and_spans_within_the_widths(fill: str) -> None:
    """Masked cells form whole bands (every frame) and whole spans (every channel), no more and no wider
    than asked, and take their own example's fill value; the input is left as it was."""
    x = torch.rand(32, 200, 40) + torch.arange(32.0).view(32, 1, 1)
    before = x.clone()
    aug = SpecAugment(freq_masks=2, freq_width=5, time_masks=2, time_width=10, fill=fill)
    y = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(x, before)
    changed = y != x
    assert sum(bool(m.any()) for m in changed) > 16  # it does augment
    for i in range(32):
        # with the minimum as fill, the lowest cell looks unchanged when masked: judge the rest
        lowest = (x[i] == x[i].min()) if fill == "min" else torch.zeros_like(changed[i])
        masked = changed[i] | lowest
        bands, spans = masked.all(dim=0), masked.all(dim=1)
        whole = bands.view(1, 40) | spans.view(200, 1)
        assert torch.equal(masked | lowest, whole | lowest)
        assert bands.sum() <= 10 and spans.sum() <= 20
        expected = x[i].mean() if fill == "mean" else x[i].min()
        assert torch.allclose(y[i][changed[i]], expected)


def test_the_seed_decides_the_masks() -> None:
    x = torch.rand(16, 100, 40)
    aug = SpecAugment(freq_masks=1, freq_width=8, time_masks=1, time_width=20)
    first = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(first, aug(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, aug(x, torch.Generator().manual_seed(2)))


def test_no_masks_or_zero_widths_keep_the_input() -> None:
    x = torch.rand(4, 50, 40)
    for off in (SpecAugment(), SpecAugment(freq_masks=2, time_masks=0, time_width=9)):
        assert not off.on
        assert off(x, torch.Generator().manual_seed(0)) is x


def test_a_width_wider_than_the_example_masks_at_most_all_of_it() -> None:
    x = torch.rand(64, 6, 40)
    y = SpecAugment(time_masks=1, time_width=50)(x, torch.Generator().manual_seed(0))
    frames = (y != x).all(dim=2).sum(dim=1)  # masked frames per example
    assert torch.equal((y != x).any(dim=2).sum(dim=1), frames)  # whole frames only
    assert frames.max() == 6 and frames.min() == 0


def test_config_fields_reach_both_students() -> None:
    """The classifier keeps one band of <= 5 channels and one span of <= 10 frames at the clip minimum;
    `train.*_masks` change it and 0 turns it off; a count with no width is refused, naming both fields."""
    assert float_spec(load_config("esp32s3"), True).spec_augment == SpecAugment(1, 5, 1, 10, fill="min")
    wider = load_config("esp32s3", overrides=["train.time_masks=2", "train.time_mask_width=20"])
    assert float_spec(wider, True).spec_augment == SpecAugment(1, 5, 2, 20, fill="min")
    off = load_config("esp32s3", overrides=["train.freq_masks=0", "train.time_masks=0"])
    assert not float_spec(off, True).spec_augment.on
    with pytest.raises(ConfigError, match="time_masks 2 with time_mask_width 0 masks nothing"):
        load_config("esp32s3", overrides=["train.time_masks=2", "train.time_mask_width=0"])


def test_frequency_warp_moves_a_formant_by_the_factor_on_the_mel_axis() -> None:
    """A factor of 1 keeps the channels; a peak at 1 kHz moves to the channel of 1.1 kHz under 1.1 and of
    0.9 kHz under 0.9 (every frequency scaled, read through the frontend's mel-spaced filterbank)."""
    lo, hi = mel(LOWER_HZ), mel(UPPER_HZ)

    def channel(hz: float) -> float:
        return float((mel(hz) - lo) / ((hi - lo) / 41) - 1)

    x = torch.exp(-0.5 * (torch.arange(40.0) - channel(1000.0)) ** 2).view(1, 1, 40).repeat(3, 5, 1)
    y = freq_warp(x, torch.tensor([1.0, 1.1, 0.9]))
    assert torch.allclose(y[0], x[0])
    peaks = [float((y[i, 0] * torch.arange(40.0)).sum() / y[i, 0].sum()) for i in range(3)]
    assert peaks[0] == pytest.approx(channel(1000.0), abs=0.05)
    assert peaks[1] == pytest.approx(channel(1100.0), abs=0.15)
    assert peaks[2] == pytest.approx(channel(900.0), abs=0.15)


def test_the_warp_is_seeded_bounded_and_composes_with_the_masks() -> None:
    """Warped values stay within each example's range (interpolation, edge channels repeated); the seed
    decides the factors; with masks on, the masked cells still take the warped example's fill."""
    x = torch.rand(16, 50, 40)
    warp = SpecAugment(freq_warp=0.15)
    assert warp.on
    y = warp(x, torch.Generator().manual_seed(4))
    assert torch.equal(y, warp(x, torch.Generator().manual_seed(4)))
    assert not torch.equal(y, warp(x, torch.Generator().manual_seed(5)))
    assert (y.amax(dim=(1, 2)) <= x.amax(dim=(1, 2)) + 1e-6).all()
    assert (y.amin(dim=(1, 2)) >= x.amin(dim=(1, 2)) - 1e-6).all()
    both = SpecAugment(freq_masks=1, freq_width=8, freq_warp=0.15)(x, torch.Generator().manual_seed(4))
    assert ((both == y) | (both == y.mean(dim=(1, 2), keepdim=True))).all()
    assert (both != y).any()


def test_the_warp_is_a_config_field_of_both_students_within_its_range() -> None:
    cfg = load_config("esp32s3", overrides=["train.freq_warp=0.1"])
    assert float_spec(cfg, True).spec_augment == SpecAugment(1, 5, 1, 10, fill="min", freq_warp=0.1)
    wake = train_config(load_config("esphome", None, ["wakeword.freq_warp=0.1"]))
    assert wake.spec_augment.freq_warp == 0.1
    with pytest.raises(ConfigError, match="freq_warp"):
        load_config("esphome", None, ["wakeword.freq_warp=0.5"])
