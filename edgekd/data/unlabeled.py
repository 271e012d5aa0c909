"""Unlabeled audio (`--unlabeled DIR`): recordings from the user's device, with no labels at all.

This is the usual way to adapt a keyword spotter to a real microphone and real voices: record a
few hours, let the teacher label it, and distil. Every audio file under the folder is read (any
soundfile format, resampled to 16 kHz mono); files up to one clip long are centred and padded,
longer recordings are cut into clip-length windows with 50% overlap. Unreadable or silent files
are skipped and counted (or fail with `data.strict`), like a labelled corpus.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgekd.audio.io import fix_length, read_wav, to_pcm16
from edgekd.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


@dataclass
class UnlabeledPool:
    clips: np.ndarray  # int16 [N, S]
    files: int
    skipped: dict[str, int] = field(default_factory=dict)


def windows(x: np.ndarray, n: int) -> list[np.ndarray]:
    """Clip-length windows of a recording: one padded clip if short, else 50%-overlapping windows."""
    if len(x) <= n:
        return [fix_length(x, n)]
    hop = n // 2
    starts = list(range(0, len(x) - n + 1, hop))
    if starts[-1] + n < len(x):
        starts.append(len(x) - n)  # the tail, so no speech at the end is dropped
    return [x[s : s + n] for s in starts]


def load_unlabeled(
    folder: str | Path, n_samples: int, max_clips: int, seed: int, strict: bool = False, progress: bool = True
) -> UnlabeledPool:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data.unlabeled {str(folder)!r}: not a directory; pass a folder of recordings (--unlabeled DIR)"
        )
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise DataError(
            f"data.unlabeled {str(folder)!r}: no audio files found (looked for {', '.join(AUDIO_SUFFIXES)} "
            "in the folder and its subfolders)"
        )
    skipped: Counter[str] = Counter()
    clips: list[np.ndarray] = []
    for path in tqdm(files, desc="reading unlabeled audio", unit="file", disable=not progress):
        try:
            clips.extend(windows(read_wav(path), n_samples))
        except DataError as err:
            if strict:
                raise DataError(f"{err} (data.strict: fix or remove the file)") from None
            skipped[getattr(err, "reason", "unreadable")] += 1
    if not clips:
        raise DataError(f"data.unlabeled {str(folder)!r}: none of the {len(files)} audio files is usable")
    pcm = to_pcm16(np.stack(clips))
    if max_clips and len(pcm) > max_clips:  # a seeded subset, in file order
        keep = np.sort(np.random.default_rng(seed).choice(len(pcm), max_clips, replace=False))
        pcm = pcm[keep]
    return UnlabeledPool(pcm, len(files), dict(skipped))
