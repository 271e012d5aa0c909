"""A frame-level wake-word teacher: a small head on the frozen speech embedding, one output per 80 ms.

The speech embedding (`edgekd.models.speech_embedding`, Google's model trained on real speech) gives one
96-d vector per 80 ms, each over the last 775 ms; openWakeWord showed that a small head on a few of them,
trained on synthetic speech only, carries to real voices. This head reads the last `history`
embeddings and returns the wake word's logit for the moment the newest one ends, so it can label every
instant of a training example, including those the student's own labels leave open (while the phrase
is being said).

Timing, in samples at 16 kHz (derived from the embedding's chunking): embedding k ends at
``EMB_HOP * k + EMB_FIRST_END``; the streaming student's step n (frames 3n..3n+2 new) has heard audio up
to ``480 n + 800``. `teacher_steps` maps each student step to the newest embedding it may see.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.audio.frontend import frame_end_sample
from edgekd.models.speech_embedding import EMBEDDING_DIM

EMB_HOP = 1280  # samples between embeddings (80 ms)
EMB_FIRST_END = 12400  # samples heard by embedding 0 (76 mel frames: 160 * 75 + 400)


class FrameTeacher(nn.Module):
    """[N, E, 96] embeddings -> [N, E] logits, each from the last `history` embeddings (zeros before)."""

    def __init__(self, history: int = 8, hidden: int = 96, dropout: float = 0.2) -> None:
        super().__init__()
        self.history = history
        self.net = nn.Sequential(
            nn.Linear(history * EMBEDDING_DIM, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        padded = F.pad(emb, (0, 0, self.history - 1, 0))  # [N, E + h - 1, 96]
        windows = padded.unfold(1, self.history, 1)  # [N, E, 96, h]
        return self.net(windows.transpose(2, 3).flatten(2)).squeeze(-1)


def embedding_end(k: np.ndarray | int) -> np.ndarray:
    """Samples of audio embedding k has heard."""
    return EMB_HOP * np.asarray(k) + EMB_FIRST_END


def step_end(n: np.ndarray | int, stride: int = 3) -> np.ndarray:
    """Samples of audio the streaming student's step n has heard (its newest frame's window ends)."""
    return frame_end_sample(stride * np.asarray(n) + stride - 1)


def teacher_steps(steps: int, embeddings: int, stride: int = 3) -> np.ndarray:
    """For each student step, the newest embedding index it may see (-1: none yet)."""
    k = (step_end(np.arange(steps), stride) - EMB_FIRST_END) // EMB_HOP
    return np.where(k >= 0, np.minimum(k, embeddings - 1), -1)
