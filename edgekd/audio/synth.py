"""Offline text-to-speech for building a labelled keyword corpus without recordings.

The engines live in `edgekd.audio.voices`, one registry entry each (espeak-ng, Piper, flite, festival,
Kokoro, and the opt-in RHVoice, MBROLA and SVOX pico). A `Voice` is one engine setting; its `id` is one
setting and its `speaker` the person heard, which a corpus keeps within one split. This module is the
front door: `Synthesizer` turns any engine's output into the same trimmed 16 kHz audio.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from edgekd.audio.io import SAMPLE_RATE, resample
from edgekd.audio.voices import (
    ENGINES,
    Engine,
    Voice,
    engine_licences,
    espeak_languages,
    espeak_variants,
    get_engine,
    list_voices,
)
from edgekd.errors import EdgekdError

__all__ = [
    "ENGINES",
    "Engine",
    "Synthesizer",
    "Voice",
    "engine_licences",
    "espeak_languages",
    "espeak_variants",
    "get_engine",
    "list_voices",
    "trim_silence",
]

# Trim below -40 dB relative to the clip's peak, keeping a short margin so onsets are not cut.
TRIM_REL_DB = -40.0
TRIM_MARGIN_S = 0.02
# Keep synthesized audio below full scale so resampling overshoot never clips.
MAX_PEAK = 0.95


class Synthesizer:
    """Turns (text, voice) into float32 16 kHz mono speech, trimmed, never clipped.

    Every clip is a pure function of (seed, text, voice, take), whatever was synthesized before it:
    `take` numbers repeated takes, which differ only where an engine samples noise (Piper).
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def synth(self, text: str, voice: Voice, take: int = 0) -> np.ndarray:
        if not text.strip():
            raise EdgekdError("cannot synthesize empty text")
        engine = get_engine(voice.engine)
        engine.require()
        key = f"{self.seed}|{voice.id}|{text}|{take}".encode()
        audio, sr = engine.synth(text, voice, int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak == 0.0:
            raise EdgekdError(f"voice {voice.id} produced no audio for {text!r}")
        # Scale before resampling so the filter's overshoot stays below full scale.
        audio = audio * min(1.0, MAX_PEAK / peak)
        return trim_silence(resample(audio, sr))

    def synth_many(self, items: Sequence[tuple[str, Voice, int]]) -> list[np.ndarray]:
        """`synth` over (text, voice, take) items: the unit of work a corpus hands to a worker process
        (pickled by reference to this light module, so a worker starts without the corpus's imports)."""
        return [self.synth(text, voice, take) for text, voice, take in items]


def trim_silence(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Drop leading/trailing audio quieter than TRIM_REL_DB below the peak, keeping a small margin."""
    loud = np.flatnonzero(np.abs(x) >= np.max(np.abs(x)) * 10 ** (TRIM_REL_DB / 20))
    margin = int(TRIM_MARGIN_S * sample_rate)
    return x[max(0, loud[0] - margin) : loud[-1] + margin + 1]
