"""The acoustic channel between a talker and the device: rooms, microphones, codecs, overload.

Synthetic voices arrive dry, full-band and clean; real recordings pass through a room (reverberation
whose colour depends on its size and materials and on where talker and microphone stand), a cheap
microphone or loudspeaker (a coloured, band-limited response with self-noise), sometimes a codec, and
sometimes an overloaded input stage. Each function here models one of those, deterministically from
the generator it is given, so a view is a pure function of (seed, clip, view).

Rooms are simulated with pyroomacoustics' image-source method. Simulating one per view would cost
~50 ms, so `room_bank(seed)` simulates a fixed bank of rooms once per seed and views pick from it.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.signal import sosfilt

from edgekd.audio.io import SAMPLE_RATE

ROOM_BANK_SIZE = 160
ROOM_RT60_S = (0.15, 0.9)
ROOM_DIMS_M = ((2.5, 9.0), (2.5, 8.0), (2.2, 3.5))  # width, depth, height
MAX_RIR_S = 0.6


@cache
def room_bank(seed: int, size: int = ROOM_BANK_SIZE) -> tuple[np.ndarray, ...]:
    """`size` room impulse responses (unit energy, direct path first) of shoebox rooms with random
    dimensions, RT60, talker and microphone positions (0.3-4 m apart), from one seed."""
    import pyroomacoustics as pra

    rng = np.random.default_rng([seed, 0x5EED])
    out = []
    while len(out) < size:
        dims = np.array([rng.uniform(*r) for r in ROOM_DIMS_M])
        rt60 = rng.uniform(*ROOM_RT60_S)
        try:
            absorption, order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # this RT60 is not reachable in this room: draw another
            continue
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(order, 12))
        mic = _inside(dims, rng)
        src = _inside(dims, rng)
        if not 0.3 <= np.linalg.norm(src - mic) <= 4.0:
            continue
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)
        rir = rir[np.argmax(np.abs(rir) > 0.1 * np.max(np.abs(rir))) :][: int(MAX_RIR_S * SAMPLE_RATE)]
        out.append((rir / np.sqrt(np.sum(rir**2))).astype(np.float32))
    return tuple(out)


def _inside(dims: np.ndarray, rng: np.random.Generator, margin: float = 0.4) -> np.ndarray:
    pos = rng.uniform(margin, dims - margin)
    pos[2] = rng.uniform(0.7, min(1.9, dims[2] - 0.2))  # heads and desks, not floors and ceilings
    return pos


def _biquad_peak(f0: float, gain_db: float, q: float) -> np.ndarray:
    """One peaking-EQ section (RBJ audio EQ cookbook) as a second-order section row."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / SAMPLE_RATE
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])


def _highpass(fc: float) -> np.ndarray:
    """Second-order Butterworth high-pass (the bass roll-off of small microphones and speakers)."""
    w0 = 2 * np.pi * fc / SAMPLE_RATE
    alpha = np.sin(w0) / np.sqrt(2)
    c = np.cos(w0)
    b = np.array([(1 + c) / 2, -(1 + c), (1 + c) / 2])
    den = np.array([1 + alpha, -2 * c, 1 - alpha])
    return np.concatenate([b / den[0], den / den[0]])


def mic_colour(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random microphone/loudspeaker response: bass roll-off at 60-400 Hz and 2-4 resonances or
    dips of +-9 dB between 200 Hz and 7 kHz."""
    sections = [_highpass(rng.uniform(60, 400))]
    for _ in range(int(rng.integers(2, 5))):
        f0 = float(np.exp(rng.uniform(np.log(200), np.log(7000))))
        sections.append(_biquad_peak(f0, rng.uniform(-9, 9), rng.uniform(0.7, 3.0)))
    out = sosfilt(np.stack(sections), y)
    # keep the level: colouring changes the timbre, gain is a separate augmentation
    return (out * (np.sqrt(np.mean(y**2)) / (np.sqrt(np.mean(out**2)) + 1e-12))).astype(np.float32)


def codec(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Narrow-band telephony: resample through 8 kHz (or 11.025 kHz), then G.711 mu-law 8-bit."""
    from scipy.signal import resample_poly

    up, down = (1, 2) if rng.random() < 0.6 else (11025, 16000)
    narrow = resample_poly(y, up, down)
    mu = 255.0
    scale = max(1e-6, float(np.max(np.abs(narrow))))
    z = np.sign(narrow) * np.log1p(mu * np.abs(narrow / scale)) / np.log1p(mu)
    z = np.round(z * 127) / 127
    narrow = scale * np.sign(z) * np.expm1(np.abs(z) * np.log1p(mu)) / mu
    out = resample_poly(narrow, down, up)[: len(y)]
    return np.pad(out, (0, len(y) - len(out))).astype(np.float32)


def overload(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An overdriven input stage: 6-18 dB too much gain into a soft (tanh) or hard clipper."""
    drive = 10 ** (rng.uniform(6, 18) / 20)
    peak = float(np.max(np.abs(y))) + 1e-9
    z = y / peak * drive
    z = np.tanh(z) if rng.random() < 0.5 else np.clip(z, -1.0, 1.0)
    return (z * peak / np.max(np.abs(z) + 1e-9)).astype(np.float32)
