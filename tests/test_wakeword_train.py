"""Training the streaming wake-word student: examples in running audio, their per-step targets, the
frame teacher's timing against the real speech embedding, distillation that moves the student, and
hard-negative mining that silences it where a stream makes it fire."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import speech_like

from edgekd.audio.frontend import MicroFrontend
from edgekd.audio.io import SAMPLE_RATE
from edgekd.models.frame_teacher import embedding_end, step_end, teacher_steps
from edgekd.models.speech_embedding import SpeechEmbedding
from edgekd.models.streaming import StreamingSpec, StreamingStudent
from edgekd.train.wakeword import (
    ChannelCritic,
    FrameFeatures,
    WakeTrainConfig,
    distil_targets,
    fine_tune,
    fit_teacher,
    hard_windows,
    in_context,
    stream_probabilities,
    train,
)

T = np.arange(SAMPLE_RATE) / SAMPLE_RATE


def sweep(f0: float, f1: float, amp: float = 0.3) -> np.ndarray:
    """A 0.5 s linear frequency sweep inside 1 s: the stand-in phrase (300 -> 2100 Hz) and its look-alikes."""
    return (amp * np.sin(2 * np.pi * (f0 + (f1 - f0) / 2 * T) * T) * (T > 0.3) * (T < 0.8)).astype(np.float32)


def test_embedding_timing_matches_the_speech_embedding() -> None:
    """A click at sample p leaves every embedding that ended before p unchanged, and changes the first
    one that ends after it: the teacher's clock is the model's."""
    embedder = SpeechEmbedding(pad_ms=0)
    quiet = speech_like(2.0, 0) * 0.01
    base = embedder.embed(quiet[None])[0]
    p = 20000
    click = quiet.copy()
    click[p : p + 80] = 0.9
    changed = np.flatnonzero(np.abs(embedder.embed(click[None])[0] - base).max(axis=1) > 1e-4)
    ends = embedding_end(np.arange(len(base)))
    assert changed.min() == np.flatnonzero(ends > p).min()
    assert np.all(ends[: changed.min()] <= p + 400)  # up to one mel window (25 ms) of look-back


def test_student_steps_only_see_embeddings_they_have_heard() -> None:
    which = teacher_steps(66, 15)
    heard = which >= 0
    assert not heard[0] and heard[-1] and which[-1] == 14
    assert np.all(embedding_end(which[heard]) <= step_end(np.flatnonzero(heard)))
    assert np.all(np.diff(which) >= 0)


@pytest.fixture(scope="module")
def examples():
    """Wake-word stand-ins: a rising chirp is the phrase, noise bursts and silence are not."""
    rng = np.random.default_rng(0)
    chirp = sweep(300, 2100)
    clips, positive = [], []
    for i in range(48):
        noise = rng.normal(0, 0.005, SAMPLE_RATE).astype(np.float32)
        if i % 2:
            clips.append(noise + chirp * rng.uniform(0.5, 1.5))
        else:
            clips.append(noise + speech_like(1.0, i) * 0.3)
        positive.append(bool(i % 2))
    contexts = np.stack([speech_like(1.0, 100 + i) * 0.2 for i in range(8)])
    return in_context(
        np.stack(clips), np.array(positive), contexts, 3, 3, 0, SpeechEmbedding(pad_ms=0), False
    )


def test_examples_targets_and_masks(examples) -> None:
    n, steps = examples.targets.shape
    assert examples.features.shape == (n, steps * 3, 40) and steps == 66
    pos, neg = examples.positive, ~examples.positive
    assert np.all(examples.targets[neg] == 0) and np.all(examples.mask[neg] == 1)
    assert np.all(examples.targets[pos][:, -3:] == 1) and np.all(examples.targets[pos][:, :-3] == 0)
    clip_step = (SAMPLE_RATE - 480) // 160 // 3 + 1  # the first step that hears the clip
    assert np.all(examples.mask[pos][:, : clip_step - 1] == 1)  # context only: must stay quiet
    assert np.all(examples.mask[pos][:, clip_step:-3] == 0)  # the phrase under way: no loss
    assert examples.embeddings.shape == (n, 15, 96)


def test_frame_teacher_and_distillation_move_the_student(examples) -> None:
    cfg = WakeTrainConfig(epochs=30, quantize_epoch=15, freeze_epoch=25, batch=16, teacher_epochs=40)
    teacher = fit_teacher(examples, cfg, progress=False)
    distil_targets(examples, teacher)
    last = 1 / (1 + np.exp(-examples.teacher_logits[:, -1]))
    assert last[examples.positive].mean() > 0.8 > 0.2 > last[~examples.positive].mean()
    assert np.all(examples.teacher_mask[:, :20] == 0) and np.all(examples.teacher_mask[:, -1] == 1)
    torch.manual_seed(0)
    spec = StreamingSpec(channels=16)
    student = train(StreamingStudent(spec), examples, cfg, progress=False)
    with torch.no_grad():
        final = torch.sigmoid(student(torch.from_numpy(examples.features))[:, -1]).numpy()
    assert final[examples.positive].mean() > final[~examples.positive].mean() + 0.3
    assert all(q.enabled and not q.observing for q in student.act_quants())  # frozen fake-quant


def test_temperature_anneals_over_the_float_epochs() -> None:
    cfg = WakeTrainConfig(quantize_epoch=10, temperature=2.0, temperature_start=6.0)
    assert [cfg.temperature_at(e) for e in (0, 5, 10, 20)] == [6.0, 4.0, 2.0, 2.0]
    assert WakeTrainConfig(temperature=3.0).temperature_at(0) == 3.0


def test_feature_matching_learns_the_teachers_embeddings(examples) -> None:
    """With feature matching the student's state predicts the teacher's standardised embedding far better
    than the projection of a student trained on labels alone can (refitted, so the comparison is fair)."""
    cfg = WakeTrainConfig(epochs=40, quantize_epoch=40, freeze_epoch=40, batch=16, alpha=0.0)
    x = torch.from_numpy(examples.features)

    def error(feature_weight: float) -> float:
        torch.manual_seed(0)
        model = StreamingStudent(StreamingSpec(channels=16))
        student = train(model, examples, replace(cfg, feature_weight=feature_weight), progress=False)
        with torch.no_grad():
            hidden = student.hidden(x)
        probe = FrameFeatures(examples, 16, 3)  # a fresh projection, fitted by least squares
        target = probe.targets(np.arange(len(examples.features)))
        h = hidden.transpose(1, 2)[:, probe.valid].reshape(-1, 16).numpy()
        t = target[:, probe.valid.numpy()].reshape(-1, target.shape[-1])
        h1 = np.c_[h, np.ones(len(h))]
        coef, *_ = np.linalg.lstsq(h1, t, rcond=None)
        return float(((h1 @ coef - t) ** 2).mean())

    assert error(5.0) < 0.85 * error(0.0)  # measured: 0.40 vs 0.53


def test_a_stream_in_chunks_is_one_pass() -> None:
    """Chunks overlap by the receptive field, so every step's probability is the one-pass value."""
    torch.manual_seed(0)
    model = StreamingStudent(StreamingSpec(channels=16)).eval()
    features = np.random.default_rng(0).uniform(0, 26, (3000, 40)).astype(np.float32)
    with torch.no_grad():
        whole = torch.sigmoid(model(torch.from_numpy(features)[None]))[0].numpy()
    np.testing.assert_allclose(stream_probabilities(model, features, chunk_steps=70), whole, atol=1e-6)


def test_mining_finds_look_alikes_and_fine_tuning_silences_them(examples) -> None:
    """A student that learned the rising chirp against speech fires on other sweeps in a negative stream;
    the mined windows are slices of that stream ending just after each peak, and fine-tuning on them
    quiets the stream while the phrase still fires."""
    cfg = WakeTrainConfig(
        epochs=30, quantize_epoch=15, freeze_epoch=25, batch=16, alpha=0.0, mining_epochs=10, mining_share=0.5
    )
    torch.manual_seed(0)
    student = train(StreamingStudent(StreamingSpec(channels=16)), examples, cfg, progress=False)
    rng = np.random.default_rng(1)
    parts = [
        part
        for i in range(20)
        for part in (
            speech_like(1.0, 200 + i) * 0.2,
            sweep(rng.uniform(200, 600), rng.uniform(1200, 2500)) + rng.normal(0, 0.005, SAMPLE_RATE),
        )
    ]
    stream = MicroFrontend()(np.concatenate(parts).astype(np.float32))
    frames = examples.features.shape[1]
    before = stream_probabilities(student, stream)
    mined = hard_windows(student, stream, frames, 0.5, seed=0)
    assert len(mined) >= 10 and mined.shape[1:] == (frames, 40)
    for window in mined:  # each is the stream's own features, and the model fired near its end
        end = next(
            e for e in range(frames, len(stream) + 1, 3) if np.array_equal(stream[e - frames : e], window)
        )
        assert before[end // 3 - 11 : end // 3].max() >= 0.5
    tuned = fine_tune(student, examples, mined, cfg, progress=False)
    after = stream_probabilities(tuned, stream)
    assert (after >= 0.5).sum() < 0.5 * (before >= 0.5).sum()  # measured: 263 -> 80 steps
    with torch.no_grad():
        last = torch.sigmoid(tuned(torch.from_numpy(examples.features))[:, -1]).numpy()
    assert last[examples.positive].mean() > 0.9 > 0.1 > last[~examples.positive].mean()
    assert all(q.enabled and not q.observing for q in tuned.act_quants())  # the ranges stayed frozen


def test_the_channel_critic_hides_which_negatives_are_real(examples) -> None:
    """Half the negatives carry a channel the others lack (their upper bands damped: a microphone), as the
    pool's real windows do. A student trained with the critic keeps less of that cue in the state its head
    reads than one trained without: the two kinds' mean states lie closer, measured in their spread. The
    wake word must still be heard."""
    real = np.zeros(len(examples.positive), bool)
    real[np.flatnonzero(~examples.positive)[::2]] = True
    features = examples.features.copy()
    features[real, :, 20:] *= 0.6
    data = replace(examples, features=features, real=real, teacher_logits=None, teacher_mask=None)
    cfg = WakeTrainConfig(epochs=30, quantize_epoch=30, freeze_epoch=30, batch=16, alpha=0.0)
    negatives = ~data.positive
    first = ChannelCritic(data, 16, 3, 1.0).first_step

    def separation(domain_weight: float) -> tuple[float, float]:
        """Squared distance of the real and synthetic negatives' mean states over their variance, and how
        much more the student fires on the wake word than on the rest at the last step."""
        torch.manual_seed(0)
        model = StreamingStudent(StreamingSpec(channels=16))
        student = train(model, data, replace(cfg, domain_weight=domain_weight), progress=False)
        with torch.no_grad():
            hidden = student.hidden(torch.from_numpy(data.features))
            final = torch.sigmoid(student.logits(hidden)[:, -1]).numpy()
        pooled = hidden[:, :, first:].mean(-1).numpy()[negatives]
        r, s = pooled[real[negatives]], pooled[~real[negatives]]
        spread = 0.5 * (r.var(0) + s.var(0)).sum() + 1e-9
        heard = final[data.positive].mean() - final[negatives].mean()
        return float(((r.mean(0) - s.mean(0)) ** 2).sum() / spread), float(heard)

    (plain, heard_plain), (critic, heard_critic) = separation(0.0), separation(1.0)
    assert critic < 0.5 * plain  # measured: 0.64 vs 4.2
    assert heard_critic > 0.3 and heard_plain > 0.3


def test_the_channel_critic_needs_real_negatives(examples) -> None:
    with pytest.raises(ValueError, match="real-speech windows"):
        ChannelCritic(replace(examples, real=np.zeros(len(examples.positive), bool)), 16, 3, 1.0)
