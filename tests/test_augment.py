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
from edgekd.audio.channel import room_bank
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


# --- pitch / tempo, band limiting, mixing with another clip ----------------------------------------


def _tone_burst(freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    """One pure tone with the keyword envelope: its pitch and duration are easy to measure."""
    t = np.arange(N) / SAMPLE_RATE
    env = np.clip((t - 0.2) / 0.05, 0, 1) * np.clip((0.8 - t) / 0.05, 0, 1)
    return (amp * env * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(y: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(y.astype(np.float64) * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / SAMPLE_RATE)[spec.argmax()])


def _active_s(y: np.ndarray) -> float:
    """Seconds between the first and last 25 ms frame holding half the peak short-time energy."""
    e = np.convolve(y.astype(np.float64) ** 2, np.ones(400) / 400, "same")
    on = np.flatnonzero(e > 0.5 * e.max())
    return float(on[-1] - on[0]) / SAMPLE_RATE


NEW_STEPS = {
    "pitch": {"pitch_prob": 1.0},
    "tempo": {"tempo_prob": 1.0},
    "bandlimit": {"bandlimit_prob": 1.0},
}


@pytest.mark.parametrize("step", [*NEW_STEPS, "mix"])
def test_new_steps_change_the_view_and_keep_it_well_formed(step: str) -> None:
    """Each new step alters the clip, keeps its length and dtype, stays finite and unclipped, and is
    deterministic per view stream."""
    loud = _speech(amp=0.98)
    other = _speech(amp=0.98, seed=5)[::-1].copy()
    cfg = _cfg(mix_prob=1.0) if step == "mix" else _cfg(**NEW_STEPS[step])
    kw = {"other": other} if step == "mix" else {}
    for v in range(3):
        y = augment(loud, cfg, view_rng(0, 0, v), **kw)
        assert y.shape == loud.shape and y.dtype == np.float32
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= PEAK
        assert not np.allclose(y, loud, atol=1e-3), f"{step} did nothing"
        np.testing.assert_array_equal(y, augment(loud, cfg, view_rng(0, 0, v), **kw))
    assert not np.array_equal(
        augment(loud, cfg, view_rng(0, 0, 0), **kw), augment(loud, cfg, view_rng(0, 0, 1), **kw)
    )
    np.testing.assert_array_equal(loud, _speech(amp=0.98))  # inputs untouched
    np.testing.assert_array_equal(other, _speech(amp=0.98, seed=5)[::-1])


def test_pitch_shift_moves_the_pitch_within_the_range_in_both_directions() -> None:
    x = _tone_burst(440.0)
    cfg = _cfg(pitch_prob=1.0, pitch_semitones=3.0)
    semis = []
    for v in range(8):
        y = augment(x, cfg, view_rng(1, 0, v))
        semis.append(12 * np.log2(_peak_hz(y) / 440.0))
        assert _active_s(y) == pytest.approx(_active_s(x), abs=0.02)  # tempo kept
    assert max(np.abs(semis)) <= 3.0 + 0.05
    assert min(semis) < -0.3 and max(semis) > 0.3


def test_tempo_changes_the_duration_but_not_the_pitch() -> None:
    x = _tone_burst(440.0)
    cfg = _cfg(tempo_prob=1.0, tempo_range=(0.85, 1.15))
    ratios = []
    for v in range(8):
        y = augment(x, cfg, view_rng(1, 0, v))
        assert _peak_hz(y) == pytest.approx(440.0, abs=3.0)
        ratios.append(_active_s(y) / _active_s(x))
    assert min(ratios) >= 1 / 1.15 - 0.05 and max(ratios) <= 1 / 0.85 + 0.05
    assert min(ratios) < 0.95 and max(ratios) > 1.05  # faster and slower both drawn


def test_band_limiting_removes_lows_and_highs() -> None:
    """White noise through the band limiter: < 2% of the energy left below 80 Hz and above 7 kHz, the
    1-2 kHz band untouched (the filter's edges are drawn from 100-400 Hz and 2.5-6 kHz)."""
    w = (0.1 * np.random.default_rng(0).standard_normal(N)).astype(np.float32)
    before = np.abs(np.fft.rfft(w.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(N, 1 / SAMPLE_RATE)
    bands = {"low": f < 80, "high": f > 7000, "mid": (f > 1000) & (f < 2000)}
    for v in range(10):
        y = augment(w, _cfg(bandlimit_prob=1.0), view_rng(0, 0, v))
        after = np.abs(np.fft.rfft(y.astype(np.float64))) ** 2
        kept = {k: after[m].sum() / before[m].sum() for k, m in bands.items()}
        assert kept["low"] < 0.02 and kept["high"] < 0.02, kept
        assert kept["mid"] == pytest.approx(1.0, abs=0.1), kept


def test_mixing_adds_the_other_clip_6_to_20_db_down() -> None:
    x = _speech()
    other = (0.5 * np.random.default_rng(2).standard_normal(N)).astype(np.float32)
    levels = [_snr_db(x, augment(x, _cfg(mix_prob=1.0), view_rng(0, i, 1), other=other)) for i in range(30)]
    assert min(levels) >= 6 - 0.05 and max(levels) <= 20 + 0.05
    assert min(levels) < 10 and max(levels) > 16  # the range is used
    # the difference is the other clip, scaled
    y = augment(x, _cfg(mix_prob=1.0), view_rng(0, 0, 1), other=other)
    scale = float(np.dot(y - x, other) / np.dot(other, other))
    np.testing.assert_allclose(y - x, scale * other, atol=1e-5)


def test_mix_prob_zero_never_mixes() -> None:
    x, other = _speech(), _speech(seed=3)[::-1].copy()
    for i in range(5):
        np.testing.assert_array_equal(augment(x, _cfg(), view_rng(0, i, 1), other=other), x)


def test_disabled_new_steps_leave_the_old_views_unchanged() -> None:
    """Old caches stay valid: with the new probabilities at 0 their parameters draw nothing."""
    x = _speech()
    old = AugmentConfig(noise_prob=1.0, reverb_prob=0.5)
    tweaked = AugmentConfig(noise_prob=1.0, reverb_prob=0.5, pitch_semitones=7.0, tempo_range=(0.5, 2.0))
    for i in range(5):
        np.testing.assert_array_equal(
            augment(x, old, view_rng(0, i, 1)), augment(x, tweaked, view_rng(0, i, 1))
        )


def test_passing_other_with_mix_prob_zero_keeps_the_random_stream() -> None:
    """With every new probability at 0, handing `other` must give the bit-identical view the same rng
    gives without it (the data stage passes `other` only when mix_prob > 0, but any caller that always
    passes it would silently get different views and invalidate cached teacher logits)."""
    x, other = _speech(), _speech(seed=3)[::-1].copy()
    cfg = AugmentConfig(noise_prob=1.0, reverb_prob=0.5)
    for i in range(5):
        np.testing.assert_array_equal(
            augment(x, cfg, view_rng(0, i, 1), other=other), augment(x, cfg, view_rng(0, i, 1))
        )


def test_background_speech_is_a_stretch_of_the_recording_within_the_snr_range() -> None:
    x = _speech()
    talk = (0.2 * np.random.default_rng(4).standard_normal(20 * N)).astype(np.float32)
    cfg = _cfg(speech_prob=1.0, speech_snr_db=(0.0, 20.0))
    levels = []
    for i in range(30):
        y = augment(x, cfg, view_rng(0, i, 1), speech=talk)
        levels.append(_snr_db(x, y))
        start = int(np.argmax(np.correlate(talk, (y - x)[:64], "valid")))  # where the stretch begins
        seg = talk[start : start + N]
        scale = float(np.dot(y - x, seg) / np.dot(seg, seg))
        np.testing.assert_allclose(y - x, scale * seg, atol=1e-5)  # one stretch of the recording, scaled
    assert min(levels) >= -0.05 and max(levels) <= 20.05 and min(levels) < 5 and max(levels) > 15
    # no speech there, or the option off: the view and its random stream are what they were
    for i in range(5):
        np.testing.assert_array_equal(augment(x, _cfg(), view_rng(0, i, 1), speech=talk), x)
    old = AugmentConfig(noise_prob=1.0, reverb_prob=0.5)
    np.testing.assert_array_equal(
        augment(x, old, view_rng(0, 0, 1), speech=talk), augment(x, old, view_rng(0, 0, 1))
    )
    silent = np.zeros(5 * N, np.float32)  # a pause: left out rather than blown up
    np.testing.assert_array_equal(augment(x, cfg, view_rng(0, 0, 1), speech=silent), x)


# --- the channel: simulated rooms, microphones, codecs, overload, noise floor ---------------------------


def _band_energy(y: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(y.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SAMPLE_RATE)
    return float(spec[(f >= lo) & (f < hi)].sum() / spec.sum())


def test_room_bank_is_seeded_unit_energy_and_starts_at_the_direct_path() -> None:
    a, b = room_bank(3, 12), room_bank(3, 12)
    assert a is b  # simulated once per (seed, size)
    other = room_bank(4, 12)
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, other, strict=True))
    for rir in a:
        assert np.isclose(np.sum(rir.astype(np.float64) ** 2), 1.0, atol=1e-4)
        assert np.argmax(np.abs(rir)) < 0.02 * SAMPLE_RATE  # no propagation delay left in front
        tail = np.sum(rir[int(0.05 * SAMPLE_RATE) :].astype(np.float64) ** 2)
        assert tail > 1e-3  # a reverberant tail, not a bare impulse


def test_room_reverb_is_deterministic_and_smears_an_impulse() -> None:
    impulse = np.zeros(N, np.float32)
    impulse[N // 2] = 0.5
    cfg = _cfg(reverb_prob=1.0, reverb_kind="room")
    y = augment(impulse, cfg, view_rng(0, 1, 1))
    np.testing.assert_array_equal(y, augment(impulse, cfg, view_rng(0, 1, 1)))
    assert np.count_nonzero(np.abs(y[N // 2 :]) > 1e-4) > 0.02 * SAMPLE_RATE
    assert np.max(np.abs(y[: N // 2])) < 1e-6  # causal: nothing before the impulse


def test_mic_colour_keeps_the_level_and_changes_the_spectrum() -> None:
    x = coloured_noise(N, "white", np.random.default_rng(0)) * np.float32(0.1)
    outs = [augment(x, _cfg(mic_prob=1.0), view_rng(0, i, 1)) for i in range(8)]
    for y in outs:
        assert np.isclose(np.sqrt(np.mean(y**2)), 0.1, rtol=0.02)
        assert _band_energy(y, 0, 50) < 0.5 * _band_energy(x, 0, 50)  # the bass roll-off
    lows = [_band_energy(y, 200, 1000) for y in outs]
    assert max(lows) - min(lows) > 0.05  # every view a different microphone


def test_codec_is_narrow_band_and_overload_clips() -> None:
    x = coloured_noise(N, "white", np.random.default_rng(1)) * np.float32(0.1)
    for i in range(6):
        y = augment(x, _cfg(codec_prob=1.0), view_rng(0, i, 1))
        assert y.shape == x.shape and _band_energy(y, 5600, 8000) < 0.01  # nothing above 5.5 kHz
    s = _speech(0.1)
    for i in range(6):
        y = augment(s, _cfg(overload_prob=1.0), view_rng(0, i, 1))
        assert np.isclose(np.max(np.abs(y)), np.max(np.abs(s)), rtol=1e-3)  # level kept, shape flattened
        crest = np.max(np.abs(y)) / np.sqrt(np.mean(y[y != 0] ** 2))
        assert crest < np.max(np.abs(s)) / np.sqrt(np.mean(s[s != 0] ** 2))


def test_noise_floor_fills_the_digital_silence_at_its_level() -> None:
    s = _speech()
    for i in range(6):
        y = augment(s, _cfg(floor_prob=1.0, floor_db=(-60.0, -60.0)), view_rng(0, i, 1))
        assert y[: int(0.15 * SAMPLE_RATE)].all()
        floor = (y - s).astype(np.float64)
        assert np.isclose(20 * np.log10(np.sqrt(np.mean(floor**2))), -60.0, atol=0.5)


def test_channel_steps_off_keep_the_old_views() -> None:
    x = _speech()
    old = AugmentConfig(noise_prob=1.0, reverb_prob=0.5)
    off = AugmentConfig(noise_prob=1.0, reverb_prob=0.5, floor_db=(-70.0, -40.0), room_seed=5)
    for i in range(5):
        np.testing.assert_array_equal(augment(x, old, view_rng(0, i, 1)), augment(x, off, view_rng(0, i, 1)))
