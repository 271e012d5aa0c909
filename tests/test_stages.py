"""Stages alone, on a small in-memory corpus (no TTS): views, features, and the wav2vec2 teacher path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny

from edgekd.build import missing_pool
from edgekd.config import load_config
from edgekd.data.corpus import Corpus
from edgekd.data.real_pool import BUILD_POOL, windows
from edgekd.models.teachers import build_teacher
from edgekd.pipeline import StageOutput, Stages
from edgekd.stages.data import stage_calibration, stage_features, stage_views
from edgekd.stages.teacher import stage_teacher

CLASSES_CFG = ['labels=["yes", "no"]', "unknown_words=[]", "silence=false", "distill.fire_rate=argmax"]

pytestmark = pytest.mark.slow  # trains and converts real models: `pytest -m 'not slow'` skips them


def _corpus(tmp_path: Path) -> Path:
    """24 clips: 'yes' = 500 Hz burst, 'no' = 2 kHz burst, at varied onsets, 4 speakers per split."""
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    clips, labels, splits, groups = [], [], [], []
    for i in range(24):
        label = i % 2
        onset = rng.uniform(0.2, 0.5)
        burst = np.sin(2 * np.pi * (500 if label == 0 else 2000) * t) * ((t > onset) & (t < onset + 0.3))
        clips.append(np.round((0.5 * burst + 0.01 * rng.normal(size=t.size)) * 32767).astype(np.int16))
        labels.append(label)
        splits.append(("train", "train", "validation", "test")[(i // 2) % 4])
        groups.append(f"speaker:{i // 2}")
    folder = tmp_path / "corpus"
    folder.mkdir()
    Corpus(np.stack(clips), np.array(labels), np.array(splits), np.array(groups), ["yes", "no"]).save(
        folder / "corpus.npz"
    )
    return folder


def _stages(tmp_path: Path) -> Stages:
    return Stages(tmp_path / "cache", log=lambda _m: None)


def test_views_are_clean_plus_augmented_and_deterministic(tmp_path: Path) -> None:
    cfg = load_config("esp32s3", overrides=[*CLASSES_CFG, "data.augment.views=2"])
    corpus_dir = _corpus(tmp_path)
    first = stage_views(cfg, StageOutput(corpus_dir, "c"), _stages(tmp_path), progress=False)
    z = np.load(first.dir / "views.npz")
    corpus = Corpus.load(corpus_dir / "corpus.npz")
    train = corpus.indices("train")
    assert len(z["audio"]) == 3 * len(train) and set(z["view"]) == {0, 1, 2}
    assert np.array_equal(z["audio"][z["view"] == 0], corpus.clips[train])  # view 0 is the clean clip
    assert not np.array_equal(z["audio"][z["view"] == 1], z["audio"][z["view"] == 2])
    again = stage_views(
        cfg, StageOutput(corpus_dir, "c"), Stages(tmp_path / "other", log=lambda _m: None), progress=False
    )
    assert np.array_equal(np.load(again.dir / "views.npz")["audio"], z["audio"])


def test_extra_recordings_get_weighted_views(tmp_path: Path) -> None:
    """The user's own clips (group `real:...`, data.extra) get extra_weight times the augmented views."""
    cfg = load_config("esp32s3", overrides=[*CLASSES_CFG, "data.augment.views=2", "data.extra_weight=3"])
    corpus_dir = _corpus(tmp_path)
    corpus = Corpus.load(corpus_dir / "corpus.npz")
    corpus.groups[:4] = [f"real:{g}" for g in corpus.groups[:4]]  # rows 0, 1 train; 2, 3 train
    corpus.save(corpus_dir / "corpus.npz")
    d = stage_views(cfg, StageOutput(corpus_dir, "c"), _stages(tmp_path), progress=False)
    z = np.load(d.dir / "views.npz")
    per_clip = np.bincount(z["clip"], minlength=len(corpus.labels))
    train = corpus.indices("train")
    own = corpus.extra_rows()
    assert set(per_clip[train[own[train]]]) == {1 + 2 * 3} and set(per_clip[train[~own[train]]]) == {1 + 2}
    assert len(set(map(bytes, z["audio"][z["clip"] == train[0]]))) == 7  # every view is its own draw


@pytest.mark.parametrize(("target", "frontend"), [("esp32s3", "micro"), ("mobile", "logmel")])
def test_features_follow_the_target_frontend(tmp_path: Path, target: str, frontend: str) -> None:
    cfg = load_config(target, overrides=[*CLASSES_CFG, "data.augment.views=1"])
    corpus_dir = _corpus(tmp_path)
    stages = _stages(tmp_path)
    corpus = StageOutput(corpus_dir, "c")
    views = stage_views(cfg, corpus, stages, progress=False)
    f = np.load(stage_features(cfg, corpus, views, None, stages, progress=False).dir / "features.npz")
    assert f["train"].shape == (2 * 12, 98, 40) and f["test"].shape == (6, 98, 40)
    assert f["y_test"].tolist() == [0, 1] * 3
    assert cfg.frontend.name == frontend and np.isfinite(f["train"]).all()
    steps = f["train"] / 0.0390625  # the micro frontend's output unit (uint16 * 1/25.6)
    is_micro = f["train"].min() >= 0 and np.allclose(steps, np.round(steps), atol=1e-3)
    assert is_micro == (frontend == "micro")


def test_calibration_windows_are_unseen_real_speech_through_the_student_frontend(tmp_path: Path) -> None:
    """The operating point is chosen on the pool's calibration part: never a window `data.unlabeled`
    trains on (its `fit` part) or the build's checks measure on (`check`)."""
    if why := missing_pool():
        pytest.skip(why)
    cfg = load_config("esp32s3", overrides=["distill.fire_rate=teacher", "distill.calibration_windows=100"])
    z = np.load(stage_calibration(cfg, _stages(tmp_path), progress=False).dir / "calibration.npz")
    assert z["audio"].shape == (100, 16000) and z["features"].shape == (100, 98, 40)
    np.testing.assert_array_equal(z["audio"], windows(BUILD_POOL, 100, cfg.seed, "calibration"))
    for part in ("fit", "check"):
        other = windows(BUILD_POOL, 100, cfg.seed, part)
        assert not (z["audio"][:, None] == other[None]).all(-1).any(), part


def test_wav2vec2_teacher_stage_fine_tunes_caches_logits_and_restores(tmp_path: Path) -> None:
    ckpt = save_tiny(tmp_path / "w2v", "wav2vec2")
    cfg = load_config(
        "esp32s3",
        overrides=[
            *CLASSES_CFG,
            "data.augment.views=1",
            "teacher.kind=hf",
            f"teacher.source={ckpt}",
            "teacher.epochs=3",
            "teacher.batch_size=8",
            f'teacher.allowed_roots=["{tmp_path}"]',
        ],
    )
    corpus_dir = _corpus(tmp_path)
    stages = _stages(tmp_path)
    corpus = StageOutput(corpus_dir, "c")
    views = stage_views(cfg, corpus, stages, progress=False)
    teacher = stage_teacher(cfg, corpus, views, None, None, stages, torch.device("cpu"), progress=False)
    out = teacher.dir
    logits = np.load(teacher.logits)
    soft = np.load(out / "train_logits.npy", mmap_mode="r")  # the soft-label cache, memory-mapped
    assert isinstance(soft, np.memmap) and soft.shape == (24, 2) and logits["test"].shape == (6, 2)
    assert (out / "teacher_hf" / "model.safetensors").is_file()
    restored = build_teacher(cfg.teacher, cfg.classes, cfg.seed, torch.device("cpu"), load=False)
    restored.restore(out, (16000,))
    clips = Corpus.load(corpus_dir / "corpus.npz").float_clips(np.arange(24))
    test = Corpus.load(corpus_dir / "corpus.npz").indices("test")
    np.testing.assert_allclose(restored.logits(restored.features(clips[test])), logits["test"], atol=1e-5)
