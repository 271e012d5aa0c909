"""Teacher stage: fit the teacher, then write its soft-label cache for every training row.

The cache (see `edgekd.train.soft_labels`) holds the teacher's logits — and pooled embeddings when
feature matching is on — for every augmented view of every training clip and every unlabeled
window, as memory-mappable `.npy`; validation and test logits go to `logits.npz` (`LOGITS`) for the parity
report, and its logits on the calibration windows (`stage_calibration`) to `CALIBRATION_LOGITS`: the
operating point the student is moved to. The stage key hashes the views, the unlabeled pool, the
calibration windows and the teacher config, so the cache is content-addressed: it is recomputed
exactly when one of them changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.artifacts import write_npz
from edgekd.audio.io import from_pcm16
from edgekd.config import SILENCE, BuildConfig
from edgekd.data.corpus import Corpus
from edgekd.pipeline import CALIBRATION_LOGITS, LOGITS, StageOutput, Stages
from edgekd.train.realism import domain_log_odds, engine_weights, voice_weights
from edgekd.train.soft_labels import SoftLabels, standardise


def stage_teacher(
    cfg: BuildConfig,
    corpus: StageOutput,
    views: StageOutput,
    unlabeled: StageOutput | None,
    calibration: StageOutput | None,
    stages: Stages,
    device: torch.device,
    progress: bool,
) -> StageOutput:
    """Fit the teacher on the train views; cache its outputs for every view, unlabeled clip, split and
    calibration window."""
    from edgekd.models.teachers import build_teacher

    with_embeddings = cfg.distill.feature_weight > 0

    def produce(d: Path) -> dict[str, Any]:
        clips = Corpus.load(corpus.dir / "corpus.npz")
        train = np.load(views.dir / "views.npz")
        teacher = build_teacher(cfg.teacher, cfg.classes, cfg.seed, device)
        y_train, groups = clips.labels[train["clip"]], clips.groups[train["clip"]]
        val, test = clips.indices("validation"), clips.indices("test")
        f_train = teacher.features(from_pcm16(train["audio"]))
        f_val = teacher.features(from_pcm16(clips.clips[val]))
        f_test = teacher.features(from_pcm16(clips.clips[test]))
        rows = {"train": f_train}
        if unlabeled is not None:
            rows["unlabeled"] = teacher.features(
                from_pcm16(np.load(unlabeled.dir / "unlabeled.npz")["audio"])
            )
        weights = None
        if cfg.teacher.voice_realism > 0:
            assert unlabeled is not None, "config validation requires data.unlabeled"
            log_odds = domain_log_odds(teacher.embeddings(f_train), teacher.embeddings(rows["unlabeled"]))
            silence = cfg.classes.index(SILENCE) if SILENCE in cfg.classes else -1
            speech = y_train != silence  # silence rows keep weight 1: they have no voice
            weights = voice_weights(log_odds, groups, speech, cfg.teacher.voice_realism)
        result = teacher.fit(f_train, y_train, f_val, clips.labels[val], progress=progress, weights=weights)
        logits = {"validation": teacher.logits(f_val), "test": teacher.logits(f_test)}
        write_npz(d / LOGITS, **logits)
        if calibration is not None:
            audio = np.load(calibration.dir / "calibration.npz")["audio"]
            np.save(d / CALIBRATION_LOGITS, teacher.logits(teacher.features(from_pcm16(audio))))
        embeddings = {k: teacher.embeddings(v) for k, v in rows.items()} if with_embeddings else {}
        for name, feats in rows.items():
            emb = embeddings.get(name)
            SoftLabels.from_logits(
                teacher.logits(feats),
                cfg.distill.top_k,
                None if emb is None else standardise(emb, embeddings["train"]),
            ).save(d, name)
        teacher.save(d)
        train_logits = np.load(d / "train_logits.npy")
        acc = {"train": float((train_logits.argmax(1) == y_train).mean())} if not cfg.distill.top_k else {}
        acc |= {k: float((v.argmax(1) == clips.labels[clips.indices(k)]).mean()) for k, v in logits.items()}
        return {
            "name": teacher.name,
            "why": teacher.why,
            "accuracy": acc,
            "identity": teacher.identity(),
            "features_shape": list(f_train.shape[1:]),
            "history": result.history,
            "best_epoch": result.best_epoch,
            "soft_labels": {k: len(v) for k, v in rows.items()},
            "voice_weights": None if weights is None else engine_weights(weights, groups),
        }

    return stages.run(
        "teacher",
        {
            "views": views.key,
            "unlabeled": unlabeled and unlabeled.key,
            "calibration": calibration and calibration.key,
            "teacher": cfg.teacher.model_dump(mode="json"),
            "top_k": cfg.distill.top_k,
            "embeddings": with_embeddings,
            "classes": cfg.classes,
            "seed": cfg.seed,
        },
        produce,
    )
