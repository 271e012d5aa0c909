"""`edgekd build --target esphome --wake-word PHRASE`: the wake-word stages, then the build directory.

    build/esphome/
      <phrase>.tflite  <phrase>.json     what ESPHome's micro_wake_word loads (v2 manifest, calibrated)
      parity.json  manifest.json  config.json  report.md  report.html
      weights/{student.pt, frame_teacher.pt}

The directory is assembled in `<out>/.staging` and promoted like a classifier build (`build.promote`):
a build whose gates fail leaves the previous good one in place and puts itself in `<out>/rejected/`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgekd import __version__, runtime_env
from edgekd.artifacts import sha256_file, write_json, write_text
from edgekd.config import BuildConfig
from edgekd.data.real_pool import BUILD_POOL, HELD_OUT_POOL, pool_licences, resolve_pool
from edgekd.export.manifest import SCHEMA, file_hashes, versions
from edgekd.pipeline import StageOutput, Stages, StageTiming
from edgekd.stages.data import stage_corpus
from edgekd.stages.wakeword import (
    STUDENT,
    read_parity,
    stage_calibrate,
    stage_examples,
    stage_fine_tune,
    stage_frame_teacher,
    stage_mine,
    stage_wake_export,
    stage_wake_student,
    stage_wake_verify,
)
from edgekd.stream import audio_files
from edgekd.words import slug

if TYPE_CHECKING:
    from edgekd.build import BuildResult


def wakeword_manifest(
    cfg: BuildConfig, staging: Path, parity: dict[str, Any], outputs: dict[str, StageOutput | None],
    timings: list[StageTiming],
) -> dict[str, Any]:  # fmt: skip
    """edgekd's own manifest of a wake-word build: versions, config, voices and licences, the real speech
    it trained and calibrated on, what each stage recorded, timings and the artifacts' hashes."""
    corpus, examples, student = outputs["corpus"], outputs["examples"], outputs["student"]
    assert corpus and examples and student
    name = slug(cfg.labels[0])
    return {
        "schema": SCHEMA,
        "kind": "wakeword",
        "edgekd_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "target": cfg.target,
        "recipe": cfg.recipe,
        "seed": cfg.seed,
        "wake_word": cfg.labels[0],
        "esphome_manifest": f"{name}.json",
        "operating_point": parity["operating_point"],
        "student": {"arch": "streaming", **student.info},
        "hard_negatives": [o.info for k, o in outputs.items() if o is not None and k.startswith("mine_")],
        "data": {
            "corpus_sha256": sha256_file(corpus.dir / "corpus.npz"),
            "voices": corpus.info.get("voices"),
            "summary": corpus.info["summary"],
            "negatives": cfg.unknown_words,
            "examples": examples.info,
            "real_speech": "builtin:debian-speech: fit part trained on; its calibration part and half of "
            "builtin:held-out-speech (never trained on) chose the operating point; the check parts of both "
            "reported (disjoint by file)",
            "real_speech_licences": {**pool_licences(BUILD_POOL), **pool_licences(HELD_OUT_POOL)},
        },
        "timings": [t.__dict__ for t in timings],
        "openmp_wait_policy": runtime_env.wait_policy(),  # the timings depend on it, the bits do not
        "cache_keys": {k: v and v.key for k, v in outputs.items()},
        "config": cfg.model_dump(mode="json"),
        "files": file_hashes(staging, [f"{name}.tflite", f"{name}.json", "parity.json"]),
    }


def run_wakeword_build(
    cfg: BuildConfig, out: Path, cache_root: Path, progress: bool, log: Any
) -> BuildResult:
    """Every wake-word stage (cached), then the build directory; returns a `build.BuildResult`."""
    from edgekd.build import BuildResult, promote  # build.py dispatches here: imported when called
    from edgekd.report.wakeword import report_html, report_md, summary

    # negatives, calibration and FA/h need both pools: fail before any stage
    for pool in (BUILD_POOL, HELD_OUT_POOL):
        resolve_pool(pool)
    if cfg.verify.holdout:  # a folder without recordings fails now, not after an hour of training
        audio_files([Path(cfg.verify.holdout)])
    torch.set_num_threads(cfg.train.threads)
    log(f"threads: {cfg.train.threads}; {runtime_env.wait_policy()}")  # what the stage times ran under
    stages = Stages(cache_root, log=log)
    corpus = stage_corpus(cfg, stages, progress)
    examples = stage_examples(cfg, corpus, stages, progress)
    log(f"examples: {examples.info['examples']} ({examples.info['wake_word']} of the wake word)")
    teacher = stage_frame_teacher(cfg, examples, stages, progress)
    trained = student = stage_wake_student(cfg, examples, teacher, stages, progress)
    mined: list[StageOutput] = []  # every round's windows: each fine-tuning sees all of them so far
    mining: dict[str, StageOutput] = {}
    for n in range(1, cfg.wakeword.mining_rounds + 1):
        mined.append(stage_mine(cfg, examples, student, stages, progress))
        info = mined[-1].info
        log(f"mining round {n}: {info['windows']} windows fire in {info['hours']:.2f} h of real speech")
        student = stage_fine_tune(cfg, examples, teacher, student, mined, stages, progress)
        mining |= {f"mine_{n}": mined[-1], f"fine_tune_{n}": student}
    export = stage_wake_export(cfg, student, stages)
    calibration = stage_calibrate(cfg, corpus, export, stages, progress)
    verify = stage_wake_verify(cfg, corpus, export, calibration, stages, progress)
    parity = read_parity(verify)

    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "weights").mkdir(parents=True)
    for f in (verify.dir / "esphome").iterdir():  # the model and the manifest ESPHome reads, as verified
        shutil.copy2(f, staging / f.name)
    shutil.copy2(student.dir / STUDENT, staging / "weights" / STUDENT)
    if teacher is not None:
        shutil.copy2(teacher.dir / "frame_teacher.pt", staging / "weights" / "frame_teacher.pt")
    write_json(staging / "parity.json", parity)
    outputs = {"corpus": corpus, "examples": examples, "teacher": teacher, "student": trained, **mining,
               "export": export, "calibrate": calibration, "verify": verify}  # fmt: skip
    manifest = wakeword_manifest(cfg, staging, parity, outputs, stages.timings)
    write_json(staging / "manifest.json", manifest)
    write_json(staging / "config.json", cfg.model_dump(mode="json"))
    write_text(staging / "report.md", report_md(parity, manifest))
    write_text(staging / "report.html", report_html(parity, manifest))
    final = promote(staging, out, parity["passed"])
    return BuildResult(final, parity["passed"], parity, summary(parity))
