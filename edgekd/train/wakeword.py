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
targets per 80 ms, and its logit labels every student step that has heard a whole embedding; the
student's loss is `(1 - alpha) * labels + alpha * T^2 * BCE(student / T, sigmoid(teacher / T))`. On real
people it tripled recall at an eighth of the false accepts of labels alone (docs/DESIGN.md), hence alpha
0.5. Two options on top, measured in docs/DESIGN.md: the temperature annealed from `temperature_start` down
to `temperature` over the float epochs, and frame-level feature matching (`FrameFeatures`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from edgekd.audio.frontend import MicroFrontend
from edgekd.models.frame_teacher import FrameTeacher, embedding_end, teacher_steps
from edgekd.models.speech_embedding import EMBEDDING_DIM, SpeechEmbedding
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
    temperature_start: float | None = None  # annealed linearly down to `temperature` by quantize_epoch
    feature_weight: float = 0.0  # frame-level feature matching on the teacher's embeddings (0: off)
    seed: int = 0

    def temperature_at(self, epoch: int) -> float:
        """The distillation temperature of an epoch: `temperature_start` at epoch 0, `temperature` from
        the quantize epoch on (QAT adapts to the targets it will keep)."""
        if self.temperature_start is None or self.quantize_epoch == 0:
            return self.temperature
        f = min(1.0, epoch / self.quantize_epoch)
        return self.temperature_start + f * (self.temperature - self.temperature_start)


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
    teacher_logits: np.ndarray | None = None  # [N, T // stride], set by `distil_targets`
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


def distil_targets(data: Examples, teacher: FrameTeacher, stride: int = 3) -> None:
    """The teacher's logit at every student step that has heard a whole embedding (in place); logits, not
    probabilities, so the student's training can choose the temperature per epoch."""
    assert data.embeddings is not None
    with torch.no_grad():
        logits = teacher(torch.from_numpy(data.embeddings.astype(np.float32))).numpy()
    which = teacher_steps(data.targets.shape[1], logits.shape[1], stride)
    data.teacher_logits = logits[:, np.maximum(which, 0)]
    data.teacher_mask = np.broadcast_to((which >= 0).astype(np.float32), data.targets.shape).copy()


class FrameFeatures(nn.Module):
    """Frame-level feature matching (FitNets, step by step): a 1x1 projection of the student's hidden
    state at each step regresses the teacher's standardised embedding of the newest 775 ms that step has
    heard. The embedding is what makes the teacher hold on real voices; the logit alone carries one
    number of it per step. Training-only: the projection is never exported."""

    def __init__(self, data: Examples, channels: int, stride: int) -> None:
        super().__init__()
        if data.embeddings is None:
            raise ValueError("feature matching needs the teacher's embeddings in the examples")
        self.embeddings = data.embeddings  # float16 [N, E, 96], standardised per batch (memory)
        flat = data.embeddings.reshape(-1, EMBEDDING_DIM).astype(np.float32)
        self.mean, self.std = flat.mean(0), flat.std(0) + 1e-3
        which = teacher_steps(data.targets.shape[1], data.embeddings.shape[1], stride)
        self.which, self.valid = np.maximum(which, 0), torch.from_numpy(which >= 0)
        self.proj = nn.Conv1d(channels, EMBEDDING_DIM, 1)

    def targets(self, idx: np.ndarray) -> np.ndarray:
        """The standardised embedding each step of examples `idx` has heard: float32 [B, steps, 96]."""
        return (self.embeddings[idx][:, self.which].astype(np.float32) - self.mean) / self.std

    def loss(self, hidden: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        """Mean squared error per embedding dimension over the steps that have heard an embedding."""
        pred = self.proj(hidden).transpose(1, 2)  # [B, steps, 96]
        return ((pred - torch.from_numpy(self.targets(idx))) ** 2)[:, self.valid].mean()


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
    distil = data.teacher_logits is not None and cfg.alpha > 0
    if distil:
        tz, tm = torch.from_numpy(data.teacher_logits.astype(np.float32)), torch.from_numpy(data.teacher_mask)
    features = FrameFeatures(data, model.spec.channels, model.spec.stride) if cfg.feature_weight > 0 else None
    params = [*model.parameters(), *(features.parameters() if features is not None else [])]
    opt = torch.optim.AdamW(params, cfg.lr, weight_decay=1e-3)
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
        t = cfg.temperature_at(epoch)
        for i in range(0, len(order), cfg.batch):
            idx = torch.from_numpy(order[i : i + cfg.batch])
            hidden = model.hidden(x[idx])
            logits = model.logits(hidden)
            loss = step_loss(logits, y[idx], m[idx], cfg.positive_weight)
            if distil:
                kd = step_loss(logits / t, torch.sigmoid(tz[idx] / t), tm[idx], cfg.positive_weight) * t * t
                loss = (1 - cfg.alpha) * loss + cfg.alpha * kd
            if features is not None:
                loss = loss + cfg.feature_weight * features.loss(hidden, idx.numpy())
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
