"""Training the streaming wake-word student on clips placed in running audio.

A wake-word model runs on an endless stream, so it learns from inputs that look like one: each
training example is `context_s` of other audio (a non-wake-word clip of the corpus, or noise) followed by
one corpus clip, run through the micro frontend as one piece. Targets are per output step (one step per
`stride` frames, as the device invokes the model):

- a wake-word clip: 1 on the last `positive_steps` steps (the phrase has been said), 0 on the steps that
  hear only the context, and no loss on the steps in between (the phrase is under way: firing there is
  neither right nor wrong);
- any other clip (other words, near-misses, silence): 0 on every step.

Negative steps outnumber positive ones by far, so the two kinds are averaged separately and weighted
(`positive_weight`). Quantization-aware training follows the usual schedule: float, then the observers
calibrate while fake-quant runs, then the ranges freeze for the last epochs.

Frame-level distillation (`fit_teacher`, `distil_targets`): a head on the speech embedding learns the same
targets per 80 ms, and its probability labels every student step that has heard a whole embedding; the
student's loss is `(1 - alpha) * labels + alpha * T^2 * BCE(student / T, teacher)`. On real people it
tripled recall at an eighth of the false accepts of labels alone (docs/DESIGN.md), hence alpha 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from edgekd.audio.frontend import MicroFrontend
from edgekd.models.frame_teacher import FrameTeacher, embedding_end, teacher_steps
from edgekd.models.speech_embedding import SpeechEmbedding
from edgekd.models.streaming import StreamingStudent


@dataclass(frozen=True)
class WakeTrainConfig:
    epochs: int = 30
    quantize_epoch: int = 10  # fake-quant on from here (observers keep calibrating)
    freeze_epoch: int = 25  # activation ranges frozen from here
    lr: float = 3e-3
    batch: int = 128
    positive_steps: int = 3
    positive_weight: float = 1.0
    teacher_epochs: int = 30
    alpha: float = 0.5  # weight of the frame-level distillation loss (0: labels only)
    temperature: float = 2.0
    seed: int = 0


@dataclass
class Examples:
    """Features [N, T, 40] of context + clip, per-step targets and loss masks [N, T // stride]; with a
    teacher, its speech embeddings [N, E, 96] and where each clip starts (samples)."""

    features: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    positive: np.ndarray  # bool [N]
    clip_start: int
    embeddings: np.ndarray | None = None
    teacher_probs: np.ndarray | None = None  # [N, T // stride], set by `distil_targets`
    teacher_mask: np.ndarray | None = None


BATCH = 64


def in_context(
    clips: np.ndarray,
    positive: np.ndarray,
    contexts: np.ndarray,
    stride: int,
    positive_steps: int,
    seed: int,
    embedder: SpeechEmbedding | None = None,
    progress: bool = True,
) -> Examples:
    """Each clip (float32 [N, S]) after a random context clip (float32 [M, S']), as features and targets
    (and the teacher's speech embeddings of the same audio when `embedder` is given)."""
    rng = np.random.default_rng(seed)
    frontend = MicroFrontend()
    picks = rng.integers(len(contexts), size=len(clips))
    frames = frontend.n_frames(contexts.shape[1] + clips.shape[1]) // stride * stride
    # written in place: a list of per-example arrays and its stack would hold the features twice
    features = np.empty((len(clips), frames, frontend.n_features), np.float32)
    embs = []
    for start in tqdm(range(0, len(clips), BATCH), disable=not progress, desc="features", unit="batch"):
        audio = np.concatenate([contexts[picks[start : start + BATCH]], clips[start : start + BATCH]], axis=1)
        for i, a in enumerate(audio):
            features[start + i] = frontend(a)[:frames]
        if embedder is not None:
            embs.append(embedder.embed(audio).astype(np.float16))
    steps = frames // stride
    clip_step = frontend.n_frames(contexts.shape[1]) // stride  # the first step that hears the clip
    targets = np.zeros((len(clips), steps), np.float32)
    mask = np.ones((len(clips), steps), np.float32)
    mask[positive, clip_step : steps - positive_steps] = 0.0
    targets[positive, steps - positive_steps :] = 1.0
    return Examples(
        features=features,
        targets=targets,
        mask=mask,
        positive=positive.astype(bool),
        clip_start=contexts.shape[1],
        embeddings=np.concatenate(embs) if embs else None,
    )


def teacher_labels(data: Examples) -> tuple[np.ndarray, np.ndarray]:
    """Per-embedding targets and masks, by the student's rule: 0 while only the context is heard, 1 on
    the last embedding of a wake-word example, no loss in between."""
    assert data.embeddings is not None
    n, e = data.embeddings.shape[:2]
    ends = embedding_end(np.arange(e))
    targets = np.zeros((n, e), np.float32)
    mask = np.ones((n, e), np.float32)
    mask[np.ix_(data.positive, np.flatnonzero(ends > data.clip_start))] = 0.0
    targets[data.positive, e - 1] = mask[data.positive, e - 1] = 1.0
    return targets, mask


def fit_teacher(data: Examples, cfg: WakeTrainConfig, progress: bool = True) -> FrameTeacher:
    """The frame teacher on the examples' embeddings and labels (the student's balanced loss)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    targets, mask = teacher_labels(data)
    x, y, m = (torch.from_numpy(np.asarray(a, np.float32)) for a in (data.embeddings, targets, mask))
    teacher = FrameTeacher()
    opt = torch.optim.AdamW(teacher.parameters(), 1e-3, weight_decay=1e-2)
    for _ in tqdm(range(cfg.teacher_epochs), desc="frame teacher", unit="epoch", disable=not progress):
        teacher.train()
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // cfg.batch)):
            loss = step_loss(teacher(x[idx]), y[idx], m[idx], cfg.positive_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return teacher.eval()


def distil_targets(data: Examples, teacher: FrameTeacher, temperature: float, stride: int = 3) -> None:
    """The teacher's probability at every student step that has heard a whole embedding (in place)."""
    assert data.embeddings is not None
    with torch.no_grad():
        logits = teacher(torch.from_numpy(data.embeddings.astype(np.float32))).numpy()
    which = teacher_steps(data.targets.shape[1], logits.shape[1], stride)
    data.teacher_probs = 1 / (1 + np.exp(-logits[:, np.maximum(which, 0)] / temperature))
    data.teacher_mask = np.broadcast_to((which >= 0).astype(np.float32), data.targets.shape).copy()


def step_loss(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, positive_weight: float
) -> torch.Tensor:
    """Masked BCE, positive steps and negative steps averaged apart (then weighted)."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * mask
    pos = targets * mask
    neg = (1 - targets) * mask
    pos_loss = (bce * pos).sum() / pos.sum().clamp_min(1)
    neg_loss = (bce * neg).sum() / neg.sum().clamp_min(1)
    return positive_weight * pos_loss + neg_loss


def train(
    model: StreamingStudent, data: Examples, cfg: WakeTrainConfig, progress: bool = True
) -> StreamingStudent:
    """Train in place through the QAT schedule; returns the model frozen and in eval mode."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x = torch.from_numpy(data.features)
    y = torch.from_numpy(data.targets)
    m = torch.from_numpy(data.mask)
    distil = data.teacher_probs is not None and cfg.alpha > 0
    if distil:
        ty, tm = torch.from_numpy(data.teacher_probs.astype(np.float32)), torch.from_numpy(data.teacher_mask)
    opt = torch.optim.AdamW(model.parameters(), cfg.lr, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, cfg.lr, total_steps=cfg.epochs * ((len(x) + cfg.batch - 1) // cfg.batch)
    )
    bar = tqdm(range(cfg.epochs), desc="wake-word student", unit="epoch", disable=not progress)
    for epoch in bar:
        if epoch == cfg.quantize_epoch:
            model.quantize()
        if epoch == cfg.freeze_epoch:
            model.freeze()
        model.train()
        order = rng.permutation(len(x))
        total = 0.0
        for i in range(0, len(order), cfg.batch):
            idx = torch.from_numpy(order[i : i + cfg.batch])
            logits = model(x[idx])
            loss = step_loss(logits, y[idx], m[idx], cfg.positive_weight)
            if distil:
                t = cfg.temperature
                kd = step_loss(logits / t, ty[idx], tm[idx], cfg.positive_weight) * t * t
                loss = (1 - cfg.alpha) * loss + cfg.alpha * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{total / len(x):.4f}")
    if cfg.quantize_epoch >= cfg.epochs:  # float training only: calibrate the ranges, then quantize
        model.quantize().train()
        with torch.no_grad():
            for i in range(0, min(len(x), 8 * cfg.batch), cfg.batch):
                model(x[i : i + cfg.batch])
    return model.freeze().eval()
