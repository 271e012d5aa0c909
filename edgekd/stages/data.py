"""Data stages: the corpus, its augmented training views, unlabelled real speech (to learn from and to
calibrate on), and the target frontend's features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import write_npz
from edgekd.audio.frontend import compute_features, make_frontend
from edgekd.audio.io import SAMPLE_RATE, from_pcm16
from edgekd.config import BuildConfig
from edgekd.data.corpus import Corpus, build_corpus, voice_summary
from edgekd.data.real_pool import BUILD_POOL, NEGATIVE_SOURCES, pool_fingerprint, windows
from edgekd.data.views import augment_key, background_speech, make_views
from edgekd.pipeline import StageOutput, Stages, corpus_fingerprint, folder_fingerprint, labelled_features_key


def stage_corpus(cfg: BuildConfig, stages: Stages, progress: bool) -> StageOutput:
    def produce(d: Path) -> dict[str, Any]:
        corpus = build_corpus(cfg, progress=progress)
        corpus.save(d / "corpus.npz")
        return {
            "summary": corpus.summary(),
            "skipped": corpus.skipped,
            "groups": len(set(corpus.groups)),
            "voices": None if cfg.data.path else voice_summary(cfg),  # engines, speakers, licences
        }

    return stages.run("corpus", corpus_fingerprint(cfg), produce)


def stage_views(cfg: BuildConfig, corpus: StageOutput, stages: Stages, progress: bool) -> StageOutput:
    """Training audio: each train clip clean plus `augment.views` augmented views (deterministic per view)."""

    def produce(d: Path) -> dict[str, Any]:
        clips = Corpus.load(corpus.dir / "corpus.npz")
        train = clips.indices("train")
        weights = np.where(clips.extra_rows()[train], cfg.data.extra_weight, 1)
        audio, clip_idx, view_idx = make_views(
            clips.clips,
            train,
            cfg.data.augment,
            cfg.seed,
            clips.backgrounds,
            progress,
            weights=weights,
            speech=background_speech(cfg.data.augment, cfg.seed),
        )
        write_npz(d / "views.npz", audio=audio, clip=clip_idx, view=view_idx)
        return {"views": len(audio), "extra_train_clips": int(clips.extra_rows()[train].sum())}

    key = {"corpus": corpus.key, "augment": augment_key(cfg.data.augment, speech=True), "seed": cfg.seed}
    if cfg.data.augment.speech_prob:
        key["speech"] = [pool_fingerprint(name) for name in NEGATIVE_SOURCES]
    if cfg.data.extra:
        key["extra_weight"] = cfg.data.extra_weight
    return stages.run("views", key, produce)


def stage_unlabeled(cfg: BuildConfig, corpus: StageOutput, stages: Stages, progress: bool) -> StageOutput:
    """The unlabeled pool (`data.unlabeled`) and its augmented views, for the teacher to label."""
    from edgekd.data.real_pool import builtin_name
    from edgekd.data.unlabeled import load_unlabeled

    assert cfg.data.unlabeled is not None

    def produce(d: Path) -> dict[str, Any]:
        labelled = Corpus.load(corpus.dir / "corpus.npz")
        n = labelled.clips.shape[1]
        # a built-in pool's check files stay out (the build measures on them), and so do its calibration
        # files (the student's operating point is chosen on them: stage_calibration)
        pool = load_unlabeled(
            cfg.data.unlabeled,
            n,
            cfg.data.unlabeled_max_clips,
            cfg.seed,
            cfg.data.strict,
            progress,
            part="fit",
        )
        # a seed of its own so that pool views never repeat the labelled clips' augmentations
        audio, clip_idx, view_idx = make_views(
            pool.clips,
            np.arange(len(pool.clips)),
            cfg.data.augment,
            cfg.seed + 7919,
            labelled.backgrounds,
            progress,
            desc="augmenting unlabeled",
        )
        write_npz(d / "unlabeled.npz", audio=audio, clip=clip_idx, view=view_idx)
        return {
            "files": pool.files,
            "clips": len(pool.clips),
            "views": len(audio),
            "skipped": pool.skipped,
            "sources": pool.sources,  # windows per source of a built-in pool
        }

    name = builtin_name(cfg.data.unlabeled)
    if name is None:
        source = folder_fingerprint(Path(cfg.data.unlabeled).expanduser())
    else:
        source = {**pool_fingerprint(name), "part": "fit"}
    key = {
        **source,
        "max_clips": cfg.data.unlabeled_max_clips,
        "augment": augment_key(cfg.data.augment, speech=False),  # pool windows are speech already
        "clip_ms": cfg.frontend.clip_ms,
        "seed": cfg.seed,
    }
    return stages.run("unlabeled", key, produce)


def stage_calibration(cfg: BuildConfig, stages: Stages, progress: bool) -> StageOutput:
    """Windows of real speech the student's operating point is chosen on (`distill.fire_rate: teacher`),
    with their student features: the built-in pool's calibration part, which no build trains on, so the
    rate the student fires at there is the rate it fires at on speech it has never met."""

    def produce(d: Path) -> dict[str, Any]:
        samples = cfg.frontend.clip_ms * SAMPLE_RATE // 1000
        pcm = windows(BUILD_POOL, cfg.distill.calibration_windows, cfg.seed, "calibration", samples)
        features = compute_features(make_frontend(cfg.frontend.name), from_pcm16(pcm), progress=progress)
        write_npz(d / "calibration.npz", audio=pcm, features=features)
        return {"source": f"builtin:{BUILD_POOL}, calibration part", "windows": len(pcm)}

    key = {
        **pool_fingerprint(BUILD_POOL),
        "part": "calibration",
        "windows": cfg.distill.calibration_windows,
        "frontend": cfg.frontend.model_dump(mode="json"),
        "seed": cfg.seed,
    }
    return stages.run("calibration", key, produce)


def stage_features(
    cfg: BuildConfig,
    corpus: StageOutput,
    views: StageOutput,
    unlabeled: StageOutput | None,
    stages: Stages,
    progress: bool,
) -> StageOutput:
    """Student features through the target's frontend: one code path for train, eval and calibration."""

    def produce(d: Path) -> dict[str, Any]:
        clips = Corpus.load(corpus.dir / "corpus.npz")
        train = np.load(views.dir / "views.npz")
        fe = make_frontend(cfg.frontend.name)
        arrays = {
            "train": compute_features(fe, from_pcm16(train["audio"]), progress=progress),
            "y_train": clips.labels[train["clip"]],
        }
        for split in ("validation", "test"):
            idx = clips.indices(split)
            arrays[split] = compute_features(fe, from_pcm16(clips.clips[idx]), progress=progress)
            arrays[f"y_{split}"] = clips.labels[idx]
        if unlabeled is not None:
            pool = np.load(unlabeled.dir / "unlabeled.npz")["audio"]
            arrays["unlabeled"] = compute_features(fe, from_pcm16(pool), progress=progress)
        write_npz(d / "features.npz", **arrays)
        return {"shape": list(arrays["train"].shape[1:]), "frontend": fe.params()}

    key = {**labelled_features_key(cfg, views.key), "unlabeled": unlabeled and unlabeled.key}
    return stages.run("features", key, produce)
