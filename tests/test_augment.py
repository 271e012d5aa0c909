"""Augmentation and synthetic noise: deterministic per (seed, clip, view), levels as documented."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.audio.augment import (
    NOISE_KINDS,
    augment,
    coloured_noise,
    pick_noise,
    silence_clip,
    synthetic_rir,
    view_rng,
)
from edgekd.audio.io import SAMPLE_RATE
from edgekd.config import AugmentConfig

N = SAMPLE_RATE
PEAK = 0.99 + 1e-6  # float32(0.99) is a hair above the float64 0.99
# Only the named step is active: no shift, no reverb, 0 dB gain, no noise.
NEUTRAL = {"shift_ms": 0, "reverb_prob": 0.0, "gain_db": (0.0, 0.0), "noise_prob": 0.0}


def _speech(amp: float = 0.3, seed: int = 0) -> np.ndarray:
    """A 1 s burst of two tones with a 0.2 s silent lead-in and tail, as a centred keyword looks."""
    t = np.arange(N) / SAMPLE_RATE
    env = np.clip((t - 0.2) / 0.05, 0, 1) * np.clip((0.8 - t) / 0.05, 0, 1)
    rng = np.random.default_rng(seed)
    x = np.sin(2 * np.pi * 220 * t + rng.uniform(0, 6)) + 0.5 * np.sin(2 * np.pi * 1300 * t)
    return (amp / 1.5 * env * x).astype(np.float32)


def _cfg(**kw: object) -> AugmentConfig:
    return AugmentConfig(**{**NEUTRAL, **kw})


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    c = clean.astype(np.float64)
    return float(10 * np.log10(np.sum(c**2) / np.sum((noisy.astype(np.float64) - c) ** 2)))


def test_same_view_rng_gives_the_same_view_and_views_differ() -> None:
    cfg, x = AugmentConfig(noise_prob=1.0, reverb_prob=0.5), _speech()
    a = augment(x, cfg, view_rng(7, 3, 1))
    np.testing.assert_array_equal(a, augment(x, cfg, view_rng(7, 3, 1)))
    others = [augment(x, cfg, view_rng(*k)) for k in ((7, 3, 2), (7, 4, 1), (8, 3, 1))]
    assert all(not np.allclose(a, o) for o in others)
    np.testing.assert_array_equal(x, _speech())  # the input is not modified in place


def test_view_rng_streams_are_reproducible_and_independent() -> None:
    assert view_rng(0, 5, 1).random() == view_rng(0, 5, 1).random()
    draws = {view_rng(0, c, v).random() for c in range(4) for v in range(4)}
    assert len(draws) == 16


def test_views_keep_length_dtype_and_never_clip() -> None:
    loud = _speech(amp=0.98)
    cfg = AugmentConfig(noise_prob=1.0, reverb_prob=0.5, gain_db=(0.0, 6.0), snr_db=(0.0, 5.0))
    peaks = []
    for v in range(20):
        y = augment(loud, cfg, view_rng(0, 0, v))
        assert y.shape == loud.shape and y.dtype == np.float32
        assert np.all(np.isfinite(y))
        peaks.append(np.max(np.abs(y)))
    assert max(peaks) <= PEAK
    assert sum(p > 0.989 for p in peaks) >= 5  # loud views are scaled back to the limit, not crushed


def test_all_steps_off_is_the_identity() -> None:
    x = _speech()
    np.testing.assert_array_equal(augment(x, _cfg(), view_rng(0, 0, 1)), x)


@pytest.mark.parametrize("snr", [(5.0, 30.0), (10.0, 12.0)])
def test_added_noise_is_within_the_configured_snr(snr: tuple[float, float]) -> None:
    x, cfg = _speech(), _cfg(noise_prob=1.0, snr_db=snr)
    bg = [0.2 * np.random.default_rng(1).standard_normal(3 * N).astype(np.float32)]
    got = [_snr_db(x, augment(x, cfg, view_rng(0, i, 1), bg if i % 2 else None)) for i in range(40)]
    assert min(got) >= snr[0] - 0.05 and max(got) <= snr[1] + 0.05
    width = snr[1] - snr[0]
    assert min(got) < snr[0] + width / 3 and max(got) > snr[1] - width / 3  # the range is used


def test_noise_prob_zero_adds_no_noise_and_one_always_does() -> None:
    x = _speech()
    assert all(np.array_equal(augment(x, _cfg(noise_prob=0.0), view_rng(0, i, 1)), x) for i in range(10))
    assert all(_snr_db(x, augment(x, _cfg(noise_prob=1.0), view_rng(0, i, 1))) < 40 for i in range(10))


def test_gain_is_within_the_configured_range() -> None:
    x, cfg = _speech(amp=0.1), _cfg(gain_db=(-12.0, 6.0))
    peaks = [np.max(np.abs(augment(x, cfg, view_rng(0, i, 1)))) for i in range(40)]
    gains = 20 * np.log10(np.array(peaks) / np.max(np.abs(x)))
    assert -12.001 <= min(gains) < -6 and 0 < max(gains) <= 6.001


def test_shift_moves_the_clip_by_at_most_shift_ms_and_fills_with_zeros() -> None:
    cfg = _cfg(shift_ms=100)
    limit = 100 * SAMPLE_RATE // 1000
    impulse = np.zeros(N, np.float32)
    impulse[N // 2] = 0.5
    shifts = []
    for i in range(30):
        y = augment(impulse, cfg, view_rng(0, i, 1))
        (where,) = np.flatnonzero(y)
        assert y[where] == 0.5
        shifts.append(where - N // 2)
        ones = augment(np.full(N, 0.5, np.float32), cfg, view_rng(0, i, 1))  # same stream, same shift
        s = shifts[-1]
        zeros = ones[:s] if s > 0 else ones[N + s :] if s < 0 else ones[:0]
        assert np.all(zeros == 0) and np.count_nonzero(ones) == N - abs(s)
    assert max(np.abs(shifts)) <= limit
    assert min(shifts) < 0 < max(shifts)


def test_reverb_convolves_with_a_unit_energy_response() -> None:
    impulse = np.zeros(N, np.float32)
    impulse[0] = 0.5
    for i in range(5):
        y = augment(impulse, _cfg(reverb_prob=1.0), view_rng(0, i, 1))
        assert np.sum(y.astype(np.float64) ** 2) == pytest.approx(0.25, rel=1e-4)  # energy kept
        assert np.count_nonzero(y) > 0.15 * SAMPLE_RATE  # a tail of at least RT60 = 0.15 s


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("n", [N, 12345])
def test_coloured_noise_has_unit_rms(kind: str, n: int) -> None:
    x = coloured_noise(n, kind, np.random.default_rng(3))
    assert x.shape == (n,) and x.dtype == np.float32
    assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)


def test_pink_and_brown_noise_carry_more_low_frequency_energy_than_white() -> None:
    def low_share(kind: str) -> float:
        spec = np.abs(np.fft.rfft(coloured_noise(N, kind, np.random.default_rng(0)))) ** 2
        f = np.fft.rfftfreq(N, 1 / SAMPLE_RATE)
        return float(spec[f < 500].sum() / spec.sum())

    white, pink, brown = low_share("white"), low_share("pink"), low_share("brown")
    assert white == pytest.approx(500 / 8000, abs=0.02)  # flat spectrum
    assert pink > 0.4 and brown > pink + 0.1 and brown > 0.9


def test_coloured_noise_is_deterministic_per_rng() -> None:
    for kind in NOISE_KINDS:
        a = coloured_noise(N, kind, np.random.default_rng(5))
        np.testing.assert_array_equal(a, coloured_noise(N, kind, np.random.default_rng(5)))


def _dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))))


@pytest.mark.parametrize("with_backgrounds", [False, True])
def test_silence_clip_levels_are_within_minus_80_to_minus_26_dbfs(with_backgrounds: bool) -> None:
    bg = [np.random.default_rng(9).uniform(-0.5, 0.5, 5000).astype(np.float32)] if with_backgrounds else None
    levels = [_dbfs(silence_clip(N, np.random.default_rng(s), bg)) for s in range(200)]
    assert all(-80.01 <= lv <= -25.99 for lv in levels)
    assert min(levels) < -70 and max(levels) > -36  # the whole range is drawn


def test_pick_noise_cuts_unit_rms_segments_from_backgrounds() -> None:
    t = np.arange(3200) / SAMPLE_RATE  # 200 whole periods, so tiling keeps a clean tone
    short = (0.05 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)  # shorter than a clip: tiled
    used = 0
    for s in range(30):
        seg = pick_noise(N, np.random.default_rng(s), [short])
        assert seg.shape == (N,)
        assert np.sqrt(np.mean(seg.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)
        spec = np.abs(np.fft.rfft(seg)) ** 2
        used += spec[990:1011].sum() / spec.sum() > 0.9
    assert 15 <= used < 30  # backgrounds 80% of the time, synthetic noise otherwise


def test_synthetic_rir_has_unit_energy_and_decays() -> None:
    for s in range(10):
        rir = synthetic_rir(np.random.default_rng(s))
        assert rir.dtype == np.float32
        assert np.sum(rir.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-5)
        assert 0.15 * SAMPLE_RATE - 1 <= len(rir) <= 0.8 * SAMPLE_RATE
        tenth = len(rir) // 10
        assert np.sum(rir[-tenth:] ** 2) < 1e-3 * np.sum(rir[1 : tenth + 1] ** 2)
