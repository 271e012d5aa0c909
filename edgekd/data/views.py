"""Augmented views of clips, deterministic per (seed, clip, view): the training views of the views stage,
the unlabelled pool's views and the test views the verify stage decides its gates on."""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm import tqdm

from edgekd.audio.augment import augment, view_rng
from edgekd.audio.io import from_pcm16, to_pcm16
from edgekd.config import AugmentConfig
from edgekd.data.real_pool import Part, negative_recordings

SPEECH_FIELDS = {"speech_prob", "speech_snr_db", "speech_minutes"}


def augment_key(cfg: AugmentConfig, speech: bool) -> dict[str, Any]:
    """The augmentation settings a stage's views depend on. The background-speech fields count only where
    speech is mixed in, so the stages of builds without it keep the keys they had before the option."""
    return cfg.model_dump(mode="json", exclude=None if speech and cfg.speech_prob else SPEECH_FIELDS)


def background_speech(cfg: AugmentConfig, seed: int, part: Part = "train") -> np.ndarray | None:
    """Real speech for `augment.speech_prob`: the pool's train part of the streaming negatives (never the
    check part the build reports false accepts on; a wake-word build passes `fit`, keeping its calibration
    audio unheard too), joined into one recording; None when unused."""
    if not cfg.speech_prob:
        return None
    return np.concatenate([r.audio for r in negative_recordings(part, cfg.speech_minutes, seed)])


def make_views(
    clips: np.ndarray,
    rows: np.ndarray,
    cfg: AugmentConfig,
    seed: int,
    backgrounds: list[np.ndarray],
    progress: bool,
    desc: str = "augmenting",
    weights: np.ndarray | None = None,
    speech: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each of `rows` clean (view 0) plus `cfg.views` augmented views (times the row's weight, when
    given), deterministic per (clip, view).

    Returns int16 audio [R, S] and, per row, the clip it came from and its view number.
    """
    clip_idx, view_idx, audio = [], [], []
    for k, i in enumerate(tqdm(rows, desc=desc, unit="clip", disable=not progress)):
        x = from_pcm16(clips[i])
        for v in range(cfg.views * (1 if weights is None else int(weights[k])) + 1):
            if v == 0:
                y = x
            else:
                rng = view_rng(seed, int(i), v)
                other = from_pcm16(clips[rows[rng.integers(len(rows))]]) if cfg.mix_prob else None
                y = augment(x, cfg, rng, backgrounds, other, speech)
            audio.append(to_pcm16(y))
            clip_idx.append(int(i))
            view_idx.append(v)
    n = clips.shape[1]
    return np.stack(audio) if audio else np.zeros((0, n), np.int16), np.array(clip_idx), np.array(view_idx)
