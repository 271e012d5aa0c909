"""Measuring a wake-word model as ESPHome runs it: false accepts on long negative streams and recall of
phrases placed in running audio, at any operating point from one pass of the model.

The model's uint8 outputs do not depend on the cutoff or the window, so each stream runs through
TFLite Micro once and the component's decision rule (`engine.detect`) is replayed for every point a
calibration tries. Used by the build (calibrate, verify) and by the benches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekd.audio.io import SAMPLE_RATE
from edgekd.esphome.engine import WakeWordEngine, detect, frame_end_s
from edgekd.stream import Detection, background_audio, insert_clips, positives_seconds, score_positives


@dataclass
class NegativeRuns:
    """The model's outputs over negative streams, by name, and their length."""

    probabilities: dict[str, np.ndarray]
    hours: dict[str, float]
    stride: int

    @classmethod
    def of(
        cls, engine: WakeWordEngine, streams: list[tuple[str, np.ndarray]], progress: bool = False
    ) -> NegativeRuns:
        return cls(
            {name: engine.run(audio, name if progress else None).probabilities for name, audio in streams},
            {name: len(audio) / SAMPLE_RATE / 3600 for name, audio in streams},
            engine.stride,
        )

    @property
    def total_hours(self) -> float:
        return sum(self.hours.values())

    def false_accepts(self, cutoff: int, window: int) -> dict[str, int]:
        """Detections per stream at (cutoff, window): each is a false accept, none holds the phrase."""
        return {name: len(detect(p, self.stride, cutoff, window)) for name, p in self.probabilities.items()}


@dataclass
class PositiveRun:
    """Clips of the phrase placed in running audio and the model's outputs over it."""

    word: str
    probabilities: np.ndarray
    placed: list
    stride: int

    @classmethod
    def of(
        cls,
        engine: WakeWordEngine,
        word: str,
        clips: list[np.ndarray],
        background: list,
        snr_db: tuple[float, float],
        seed: int = 0,
        progress: bool = False,
    ) -> PositiveRun:
        """`clips` inserted into `background` (`stream.background_audio`: quiet noise when empty, `builtin`
        the pool's check part) at `snr_db`, one pass through the engine."""
        labelled = [(word, c) for c in clips]
        audio, placed = insert_clips(
            background_audio(background, positives_seconds(labelled), seed), labelled, seed, snr_db
        )
        bar = f"{len(clips)} x {word!r}" if progress else None
        return cls(word, engine.run(audio, bar).probabilities, placed, engine.stride)

    def hits(self, cutoff: int, window: int) -> tuple[int, int]:
        """(clips heard, clips) at (cutoff, window): a detection within 1.5 s of a clip's end hears it."""
        found = [
            Detection("p", frame_end_s(f), self.word, 0.0)
            for f in detect(self.probabilities, self.stride, cutoff, window)
        ]
        scored = score_positives(self.placed, found, (self.word,))
        return round(scored["recall"] * scored["clips"]), scored["clips"]
