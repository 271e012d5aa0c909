"""Noise sources and augmentation, all deterministic given a seed.

Offline there is no recorded noise, so `_silence_` and background noise are synthesised: coloured
noise (white, pink, brown), mains hum and babble-like band noise, at random levels. A user corpus'
`_background_noise_/` recordings replace them when present. Room reverb uses synthetic exponentially
decaying impulse responses (RT60 0.15-0.8 s), a standard stand-in for measured RIRs.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

from edgekd.audio.channel import codec, mic_colour, overload, room_bank
from edgekd.audio.io import SAMPLE_RATE
from edgekd.config import AugmentConfig

NOISE_KINDS = ("white", "pink", "brown", "hum", "band")


def coloured_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of `n` samples with the spectral shape `kind`."""
    if kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        f0 = rng.choice([50.0, 60.0])
        x = sum(
            rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) for h in (1, 2, 3, 5)
        )
        x = x + 0.05 * rng.standard_normal(n)
    else:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        f[0] = f[1]
        if kind == "pink":
            spec /= np.sqrt(f)
        elif kind == "brown":
            spec /= f
        elif kind == "band":
            lo = rng.uniform(100, 1500)
            spec *= np.exp(-0.5 * ((np.log(f) - np.log(lo * 2)) / 0.6) ** 2)
        x = np.fft.irfft(spec, n)
    x = np.asarray(x, dtype=np.float64)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def silence_clip(n: int, rng: np.random.Generator, backgrounds: list[np.ndarray] | None = None) -> np.ndarray:
    """A `_silence_` example: background noise at a random level, or near-digital silence."""
    level = 10 ** rng.uniform(-4.0, -1.3)  # -80 .. -26 dBFS RMS
    return level * pick_noise(n, rng, backgrounds)


def pick_noise(n: int, rng: np.random.Generator, backgrounds: list[np.ndarray] | None = None) -> np.ndarray:
    if backgrounds and rng.random() < 0.8:
        bg = backgrounds[rng.integers(len(backgrounds))]
        if len(bg) < n:
            bg = np.tile(bg, n // len(bg) + 1)
        start = rng.integers(0, len(bg) - n + 1)
        seg = bg[start : start + n].astype(np.float32)
        return seg / (np.sqrt(np.mean(seg**2)) + 1e-9)
    return coloured_noise(n, NOISE_KINDS[rng.integers(len(NOISE_KINDS))], rng)


def synthetic_rir(rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.15, 0.8)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at t = rt60
    rir[0] = 1.0 / rng.uniform(0.3, 1.0)  # direct path vs reverberant energy
    return (rir / np.sqrt(np.sum(rir**2))).astype(np.float32)


def pitch_tempo(y: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Voice variation synthetic voices lack: pitch shift (tempo kept) and tempo change (pitch kept)."""
    import librosa  # phase-vocoder effects; imported here because librosa's import costs ~1 s

    n = len(y)
    if rng.random() < cfg.pitch_prob:
        steps = rng.uniform(-cfg.pitch_semitones, cfg.pitch_semitones)
        y = librosa.effects.pitch_shift(y, sr=SAMPLE_RATE, n_steps=steps)
    if rng.random() < cfg.tempo_prob:
        y = librosa.effects.time_stretch(y, rate=rng.uniform(*cfg.tempo_range))
    out = np.zeros(n, np.float32)  # centred again: stretching moves the word
    m = min(n, len(y))
    start, src = (n - m) // 2, (len(y) - m) // 2
    out[start : start + m] = y[src : src + m]
    return out


def band_limit(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A telephone-like or cheap-microphone band: high-pass 100-400 Hz, low-pass 2.5-6 kHz."""
    lo, hi = rng.uniform(100, 400), rng.uniform(2500, 6000)
    sos = butter(4, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return sosfilt(sos, y).astype(np.float32)


def augment(
    x: np.ndarray,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    backgrounds: list[np.ndarray] | None = None,
    other: np.ndarray | None = None,
    speech: np.ndarray | None = None,
) -> np.ndarray:
    """One augmented view of a fixed-length clip.

    Pitch/tempo, time shift, reverb (synthetic or simulated rooms), microphone colouring, band
    limiting, a second clip mixed in 6-20 dB down (`other`; the label stays the main clip's, the teacher
    labels the mixture), real background speech (a random stretch of `speech`), gain, additive noise, a
    noise floor, an overloaded input and a codec.
    """
    n = len(x)
    y = x.astype(np.float32)
    if cfg.pitch_prob or cfg.tempo_prob:
        y = pitch_tempo(y, cfg, rng)
    if cfg.shift_ms:
        shift = int(rng.integers(-cfg.shift_ms, cfg.shift_ms + 1) * SAMPLE_RATE / 1000)
        y = np.roll(y, shift)
        if shift > 0:
            y[:shift] = 0.0
        elif shift < 0:
            y[shift:] = 0.0
    if rng.random() < cfg.reverb_prob:
        if cfg.reverb_kind == "room":
            bank = room_bank(cfg.room_seed)
            rir = bank[int(rng.integers(len(bank)))]
        else:
            rir = synthetic_rir(rng)
        y = fftconvolve(y, rir)[:n].astype(np.float32)
    if cfg.mic_prob and rng.random() < cfg.mic_prob:  # guarded like every later option: a config
        y = mic_colour(y, rng)  # without it keeps the random streams (and the views) it had
    if cfg.bandlimit_prob and rng.random() < cfg.bandlimit_prob:  # guarded: keeps older views' streams
        y = band_limit(y, rng)
    if other is not None and cfg.mix_prob and rng.random() < cfg.mix_prob:
        rms_y, rms_o = np.sqrt(np.mean(y**2)) + 1e-9, np.sqrt(np.mean(other**2)) + 1e-9
        y = y + other.astype(np.float32) * np.float32(rms_y / rms_o / 10 ** (rng.uniform(6, 20) / 20))
    if speech is not None and cfg.speech_prob and rng.random() < cfg.speech_prob:
        y = over_speech(y, speech, rng, cfg.speech_snr_db)
    y = y * np.float32(10 ** (rng.uniform(*cfg.gain_db) / 20))
    if rng.random() < cfg.noise_prob:
        rms = np.sqrt(np.mean(y**2)) + 1e-9
        snr = rng.uniform(*cfg.snr_db)
        y = y + pick_noise(n, rng, backgrounds) * np.float32(rms / 10 ** (snr / 20))
    if cfg.floor_prob and rng.random() < cfg.floor_prob:
        y = y + noise_floor(n, rng, cfg.floor_db)
    if cfg.overload_prob and rng.random() < cfg.overload_prob:
        y = overload(y, rng)
    if cfg.codec_prob and rng.random() < cfg.codec_prob:
        y = codec(y, rng)
    peak = np.max(np.abs(y))
    if peak > 0.99:  # keep the view unclipped: clipping would be an artefact, not an augmentation
        y = y * np.float32(0.99 / peak)
    return y.astype(np.float32)


def over_speech(
    y: np.ndarray, speech: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]
) -> np.ndarray:
    """`y` over a random stretch of real background speech, `snr_db` below it (RMS over the clip; a
    near-silent stretch, a pause, is left out rather than blown up)."""
    n = len(y)
    start = int(rng.integers(0, max(1, len(speech) - n)))
    seg = speech[start : start + n]
    rms_y, rms_s = np.sqrt(np.mean(y**2)) + 1e-9, np.sqrt(np.mean(seg**2))
    snr = rng.uniform(*snr_db)
    if rms_s < 1e-4 or len(seg) < n:
        return y
    return y + seg * np.float32(rms_y / rms_s / 10 ** (snr / 20))


def noise_floor(n: int, rng: np.random.Generator, level_db: tuple[float, float]) -> np.ndarray:
    """Microphone self-noise and room tone at an absolute level (dBFS RMS): real recordings are
    never digitally silent, synthetic clips are zero around the word."""
    kind = ("white", "pink", "brown")[int(rng.integers(3))]
    return coloured_noise(n, kind, rng) * np.float32(10 ** (rng.uniform(*level_db) / 20))


def view_rng(seed: int, clip_index: int, view: int) -> np.random.Generator:
    """The random stream for one (clip, view): views can be regenerated and cached independently."""
    return np.random.default_rng([seed, clip_index, view])
