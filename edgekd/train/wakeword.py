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
0.5. Three options on top, measured in docs/DESIGN.md: the temperature annealed from `temperature_start`
down to `temperature` over the float epochs, frame-level feature matching (`FrameFeatures`) and a critic
that keeps the student from telling real negatives from synthetic ones (`ChannelCritic`). SpecAugment on
the student's features (`spec_augment`, in the recipe) keeps it from leaning on what only synthetic voices
share: on real people it nearly doubled recall at the strictest point (docs/DESIGN.md).

Hard-negative mining (`hard_windows`, `fine_tune`): the trained student runs over hours of real speech as
one stream, the stretches where it fires become negatives, and the frozen QAT model is fine-tuned on the
examples with those stretches drawn into every epoch. Fixed 1 s windows rarely line up with what a stream
offers the model; a stream shows exactly where it fires.
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
from edgekd.train.domain import DomainCritic
from edgekd.train.losses import UNLABELED
from edgekd.train.spec_augment import SpecAugment


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
    domain_weight: float = 0.0  # critic between real and synthetic negatives (`ChannelCritic`; 0: off)
    spec_augment: SpecAugment = SpecAugment()  # on the student's features (default: none)
    mining_epochs: int = 4  # fine-tuning epochs per round of hard-negative mining
    mining_share: float = 0.25  # of each fine-tuning epoch's examples, drawn from the mined windows
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
    real: np.ndarray | None = None  # bool [N]: the clip is a window of real speech (a negative)


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


class ChannelCritic(nn.Module):
    """Domain-adversarial training (`edgekd.train.domain`) between the two kinds of negative clip. Real
    speech reaches the student only as negatives (the pool's windows) and the wake word only in synthetic
    voices, so "a real channel" is a cue for "not the phrase" that costs nothing on the training set and
    everything on people. The critic reads the student's state averaged over the steps that hear the clip
    and guesses whether the clip is real; the reversed gradient takes that cue away. Synthetic wake-word
    clips carry no weight: the real windows hold (almost) no wake word, so they are compared with the
    synthetic negatives only. Training-only: never exported."""

    def __init__(self, data: Examples, channels: int, stride: int, weight: float) -> None:
        super().__init__()
        if data.real is None or not data.real.any():
            raise ValueError("the channel critic needs real-speech windows among the examples")
        # the critic's labels: real windows are the "unlabelled" domain, synthetic clips their class
        self.labels = torch.from_numpy(np.where(data.real, UNLABELED, data.positive.astype(np.int64)))
        self.first_step = MicroFrontend().n_frames(data.clip_start) // stride
        self.critic = DomainCritic(channels, weight, np.array([1.0, 0.0], np.float32))

    def loss(self, hidden: torch.Tensor, idx: torch.Tensor, progress: float) -> torch.Tensor:
        return self.critic.loss(hidden[:, :, self.first_step :].mean(-1), self.labels[idx], progress)


class Objective:
    """The student's loss on a batch of examples: masked labels, frame-level distillation from the teacher's
    logits where it has them, and feature matching and the channel critic when they are on. One definition
    for training and fine-tuning, so that fine-tuning keeps the objective the student was trained with."""

    def __init__(
        self,
        model: StreamingStudent,
        data: Examples,
        cfg: WakeTrainConfig,
        features: bool,
        critic: bool = False,
    ) -> None:
        self.model, self.cfg = model, cfg
        self.x = torch.from_numpy(data.features)
        self.y = torch.from_numpy(data.targets)
        self.m = torch.from_numpy(data.mask)
        self.distil = data.teacher_logits is not None and cfg.alpha > 0
        if self.distil:
            self.tz = torch.from_numpy(data.teacher_logits.astype(np.float32))
            self.tm = torch.from_numpy(data.teacher_mask)
        self.features = FrameFeatures(data, model.spec.channels, model.spec.stride) if features else None
        self.critic = (
            ChannelCritic(data, model.spec.channels, model.spec.stride, cfg.domain_weight) if critic else None
        )
        self.masks = torch.Generator().manual_seed(cfg.seed)  # SpecAugment's draws, reproducible

    def parameters(self) -> list[nn.Parameter]:
        extra = [m for m in (self.features, self.critic) if m is not None]
        return [*self.model.parameters(), *(p for m in extra for p in m.parameters())]

    def __call__(self, idx: torch.Tensor, temperature: float, progress: float = 1.0) -> torch.Tensor:
        """The loss of examples `idx` at a distillation temperature; `progress` (0-1 through training)
        ramps the critic's reversal up."""
        x = self.x[idx]
        x = self.cfg.spec_augment(x, self.masks)
        hidden = self.model.hidden(x)
        logits = self.model.logits(hidden)
        loss = step_loss(logits, self.y[idx], self.m[idx], self.cfg.positive_weight)
        if self.distil:
            t = temperature
            soft = torch.sigmoid(self.tz[idx] / t)
            kd = step_loss(logits / t, soft, self.tm[idx], self.cfg.positive_weight) * t * t
            loss = (1 - self.cfg.alpha) * loss + self.cfg.alpha * kd
        if self.features is not None:
            loss = loss + self.cfg.feature_weight * self.features.loss(hidden, idx.numpy())
        if self.critic is not None:
            loss = loss + self.critic.loss(hidden, idx, progress)
        return loss


def run_epochs(
    objective: Objective,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    order: np.ndarray,
    batch: int,
    temperature: float,
    progress: float = 1.0,
) -> float:
    """One epoch over `order` (example indices) at `progress` through training; the mean loss per
    example."""
    objective.model.train()
    total = 0.0
    for i in range(0, len(order), batch):
        idx = torch.from_numpy(order[i : i + batch])
        loss = objective(idx, temperature, progress)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(idx)
    return total / max(1, len(order))


def train(
    model: StreamingStudent, data: Examples, cfg: WakeTrainConfig, progress: bool = True
) -> StreamingStudent:
    """Train in place through the QAT schedule; returns the model frozen and in eval mode."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    objective = Objective(model, data, cfg, features=cfg.feature_weight > 0, critic=cfg.domain_weight > 0)
    opt = torch.optim.AdamW(objective.parameters(), cfg.lr, weight_decay=1e-3)
    n = len(data.features)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, cfg.lr, total_steps=cfg.epochs * ((n + cfg.batch - 1) // cfg.batch)
    )
    bar = tqdm(range(cfg.epochs), desc="wake-word student", unit="epoch", disable=not progress)
    for epoch in bar:
        if epoch == cfg.quantize_epoch:
            model.quantize()
        if epoch == cfg.freeze_epoch:
            model.freeze()
        loss = run_epochs(
            objective,
            opt,
            sched,
            rng.permutation(n),
            cfg.batch,
            cfg.temperature_at(epoch),
            epoch / cfg.epochs,
        )
        bar.set_postfix(loss=f"{loss:.4f}")
    if cfg.quantize_epoch >= cfg.epochs:  # float training only: calibrate the ranges, then quantize
        model.quantize().train()
        with torch.no_grad():
            for i in range(0, min(n, 8 * cfg.batch), cfg.batch):
                model(objective.x[i : i + cfg.batch])
    return model.freeze().eval()


def stream_probabilities(
    model: StreamingStudent, features: np.ndarray, chunk_steps: int = 4096
) -> np.ndarray:
    """The model's probability at every step of one long stream of features [T, 40], run in chunks that
    overlap by the receptive field, so every step sees exactly the frames it would see in one pass."""
    stride = model.spec.stride
    overlap = -(-model.spec.receptive_frames // stride)  # steps of look-back a chunk needs
    steps = len(features) // stride
    out = np.empty(steps, np.float32)
    with torch.no_grad():
        for s in range(0, steps, chunk_steps):
            lo = max(0, s - overlap)
            x = torch.from_numpy(np.ascontiguousarray(features[lo * stride : (s + chunk_steps) * stride]))
            out[s : s + chunk_steps] = torch.sigmoid(model(x[None]))[0, s - lo :].numpy()
    return out


def hard_windows(
    model: StreamingStudent, features: np.ndarray, frames: int, cutoff: float, seed: int
) -> np.ndarray:
    """Where the model fires on a negative stream (features [T, 40]): every step at or above `cutoff`
    that is the highest within half a second either side, as a window of `frames` frames of the stream
    (the device's features: the frontend ran on, not restarted) that ends 0-10 steps after the peak, so
    the peak and what follows it must stay quiet. Returns float32 [K, frames, 40]."""
    from scipy.ndimage import maximum_filter1d

    stride = model.spec.stride
    p = stream_probabilities(model.eval(), features)
    half = 50 // stride  # steps in half a second
    peaks = np.flatnonzero((p >= cutoff) & (p == maximum_filter1d(p, 2 * half + 1)))
    if len(peaks):
        peaks = peaks[np.diff(peaks, prepend=-half - 1) > half]  # plateaus: their first step
    ends = (peaks + 1 + np.random.default_rng(seed).integers(0, 11, len(peaks))) * stride
    ends = ends[(ends >= frames) & (ends <= len(features))]
    return (
        np.stack([features[e - frames : e] for e in ends])
        if len(ends)
        else np.zeros((0, frames, features.shape[1]), np.float32)
    )


def with_negatives(data: Examples, negatives: np.ndarray) -> Examples:
    """The examples plus all-negative windows (target 0 at every step, no teacher target: the teacher's
    embeddings were never computed for them and a label of 0 is certain)."""
    n, steps = len(negatives), data.targets.shape[1]
    zeros = np.zeros((n, steps), np.float32)
    return Examples(
        features=np.concatenate([data.features, negatives]),
        targets=np.concatenate([data.targets, zeros]),
        mask=np.concatenate([data.mask, np.ones_like(zeros)]),
        positive=np.concatenate([data.positive, np.zeros(n, bool)]),
        clip_start=data.clip_start,
        teacher_logits=None if data.teacher_logits is None else np.concatenate([data.teacher_logits, zeros]),
        teacher_mask=None if data.teacher_mask is None else np.concatenate([data.teacher_mask, zeros]),
    )


def fine_tune(
    model: StreamingStudent, data: Examples, mined: np.ndarray, cfg: WakeTrainConfig, progress: bool = True
) -> StreamingStudent:
    """Fine-tune the trained (quantized, frozen) student on the examples and the mined windows: every
    epoch draws `mining_share` of its examples from the mined windows, the rest are the examples in a new
    order; a tenth of the training rate, cosine to zero. The activation ranges stay frozen, so the
    exported scales are those the weights were tuned against. Feature matching and the critic stay off
    here: the mined windows have no teacher embeddings, and both are opt-ins of the training, not of this
    step."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    n = len(data.features)
    both = with_negatives(data, mined)
    del data  # the examples live on in `both`: without this a caller's only copy stays alive beside it
    objective = Objective(model, both, cfg, features=False)
    extra = round(n * cfg.mining_share / (1 - cfg.mining_share)) if len(mined) else 0
    per_epoch = n + extra
    opt = torch.optim.AdamW(model.parameters(), cfg.lr / 10, weight_decay=1e-3)
    batches = cfg.mining_epochs * ((per_epoch + cfg.batch - 1) // cfg.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, batches))
    model.freeze()
    bar = tqdm(range(cfg.mining_epochs), desc="hard negatives", unit="epoch", disable=not progress)
    for _ in bar:
        order = np.concatenate([np.arange(n), n + rng.integers(0, max(1, len(mined)), extra)])
        loss = run_epochs(objective, opt, sched, rng.permutation(order), cfg.batch, cfg.temperature)
        bar.set_postfix(loss=f"{loss:.4f}")
    return model.eval()
