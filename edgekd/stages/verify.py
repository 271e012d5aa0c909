"""Verify stage: the held-out clips through every runtime, the measured budget and the target's gates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import write_json, write_npz
from edgekd.audio.frontend import compute_features, make_frontend
from edgekd.audio.io import from_pcm16
from edgekd.config import BuildConfig
from edgekd.data.corpus import Corpus
from edgekd.data.views import augment_key, background_speech, make_views
from edgekd.pipeline import LOGITS, StageOutput, Stages

TEST_VIEW_SEED = 15_485_863  # test views never repeat a training view's augmentation
VIEW_LOGITS = "view_logits.npz"  # the students' and device's logits on the test views (y = labels)


def view_features(
    cfg: BuildConfig, corpus: StageOutput, n: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of `verify.test_views` augmented views of each of the first `n` test clips:
    the training augmentation (rooms, microphones, noise, shifts) under a seed of its own."""
    clips = Corpus.load(corpus.dir / "corpus.npz")
    rows = clips.indices("test")[:n]
    augment = cfg.data.augment.model_copy(update={"views": cfg.verify.test_views})
    audio, clip_idx, view_idx = make_views(
        clips.clips,
        rows,
        augment,
        cfg.seed + TEST_VIEW_SEED,
        clips.backgrounds,
        progress,
        desc="augmenting test clips",
        speech=background_speech(cfg.data.augment, cfg.seed),
    )
    keep = view_idx > 0  # view 0 is the clean clip, already scored
    x = compute_features(make_frontend(cfg.frontend.name), from_pcm16(audio[keep]), progress=progress)
    return x, clips.labels[clip_idx[keep]]


def stage_verify(
    cfg: BuildConfig,
    corpus: StageOutput,
    export: StageOutput,
    features: StageOutput,
    student: StageOutput,
    teacher: StageOutput,
    baseline: StageOutput | None,
    stages: Stages,
    progress: bool,
) -> StageOutput:
    """The test split and augmented views of it through the cached torch rows (views: the students) and
    every exported runtime: the gates' evidence; `parity.json`."""
    from edgekd.verify.budget import measure_budget
    from edgekd.verify.parity import Evidence, parity_report
    from edgekd.verify.scoring import output_step, runtime_logits, student_logits

    def produce(d: Path) -> dict[str, Any]:
        f = np.load(features.dir / "features.npz")
        x, y = f["test"], f["y_test"]
        s = np.load(student.logits)
        n = len(y) if not cfg.verify.max_clips else min(len(y), cfg.verify.max_clips)
        reference = {
            "teacher_fp32": np.load(teacher.logits)["test"][:n],
            "student_fp32_pre_qat": s["pre_qat_test"][:n],
            "student_fp32": s["fp32_test"][:n],
            "student_qat": s["qat_test"][:n],
        }
        if baseline is not None:  # the student trained without the teacher: what distillation gained
            reference["student_plain_fp32"] = np.load(baseline.logits)["test"][:n]
        logits = runtime_logits(cfg, x[:n], lambda: reference, export.dir, progress)
        write_npz(d / LOGITS, y=y[:n], **logits)  # per-clip evidence behind every figure
        evidence = Evidence.of(logits, y[:n], output_step(export.dir))
        if cfg.verify.test_views:
            xv, yv = view_features(cfg, corpus, n, progress)
            views = runtime_logits(  # every shipped runtime: each has its agreement gate
                cfg,
                xv,
                lambda: student_logits(cfg, student.dir, xv),
                export.dir,
                progress,
            )
            write_npz(d / VIEW_LOGITS, y=yv, **views)
            evidence = evidence.plus_views(views, yv, cfg.verify.test_views)
        budget = measure_budget(cfg, export.dir)
        write_json(d / "parity.json", parity_report(cfg, logits, y[:n], budget, evidence))
        return {}

    key = {
        "corpus": corpus.key,
        "augment": augment_key(cfg.data.augment, speech=True),
        "seed": cfg.seed,
        "export": export.key,
        "features": features.key,
        "teacher": teacher.key,
        "baseline": baseline and baseline.key,
        "verify": cfg.verify.model_dump(mode="json"),
        "budget": cfg.budget.model_dump(mode="json"),
        "gates": cfg.gates.model_dump(mode="json"),
        "classes": cfg.classes,
        "target": cfg.target,
    }
    return stages.run("verify", key, produce)
