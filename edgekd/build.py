"""`edgekd build`: run the stages of `edgekd.stages` in order, then assemble and promote the build dir.

Stage functions take their config slice and input artifacts and write their outputs into the stage
directory they are given; they never reach into each other's internals.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd import runtime_env
from edgekd.artifacts import write_json, write_text
from edgekd.build_dir import ARTIFACTS, BuildDir
from edgekd.config import BuildConfig
from edgekd.detect import operating_point
from edgekd.errors import GateError
from edgekd.export.firmware import write_firmware_package
from edgekd.export.manifest import build_manifest, file_hashes
from edgekd.pipeline import StageOutput, Stages
from edgekd.report.markdown import summary, teacher_gate_rule
from edgekd.stages.data import stage_calibration, stage_corpus, stage_features, stage_unlabeled, stage_views
from edgekd.stages.distill import distills, stage_baseline, stage_student
from edgekd.stages.export import stage_export
from edgekd.stages.holdout import stage_holdout
from edgekd.stages.real_agreement import stage_real_agreement
from edgekd.stages.stream import SECTION as STREAM_SECTION
from edgekd.stages.stream import stage_stream
from edgekd.stages.teacher import stage_teacher
from edgekd.stages.verify import VIEW_LOGITS, stage_verify
from edgekd.stats import paired_drop
from edgekd.train.trainer import resolve_device
from edgekd.verify.parity import with_section


@dataclass
class BuildResult:
    out: Path
    passed: bool
    parity: dict[str, Any]
    summary: str


def promote(staging: Path, out: Path, passed: bool) -> Path:
    """Move a finished build into place. Only a passing build replaces the previous one."""
    if not passed:
        rejected = out / "rejected"
        shutil.rmtree(rejected, ignore_errors=True)
        staging.rename(rejected)
        return rejected
    for item in sorted(staging.iterdir()):
        target = out / item.name
        if item.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        item.replace(target)  # atomic per artifact
    staging.rmdir()
    shutil.rmtree(out / "rejected", ignore_errors=True)
    return out


def _write_reports(
    staging: BuildDir,
    parity: dict[str, Any],
    manifest: dict[str, Any],
    training: dict[str, Any],
    features: StageOutput,
    log: Any,
) -> None:
    """report.md and the self-contained report.html, with a per-layer float-vs-INT8 comparison that
    names the layer where a failing build loses accuracy (shown for passing builds too, ~10 s)."""
    from edgekd.report.html import logit_diffs_from_logits, report_html
    from edgekd.report.layers import layers_md, worst_sentence
    from edgekd.report.markdown import report_md
    from edgekd.verify.layers import compare_layers

    layers = None
    if staging.tflite.exists():
        layers = compare_layers(staging.path, np.load(features.dir / "features.npz")["test"], max_clips=32)
        write_json(staging.logs / "layers.json", layers)
        if not parity["passed"]:
            log(f"per-layer comparison: {worst_sentence(layers)}")
    md = report_md(parity, manifest)
    if layers and not parity["passed"]:
        md += "\n## Per-layer float vs INT8\n\n" + layers_md(layers) + "\n"
    write_text(staging.path / "report.md", md)
    logits = dict(np.load(staging.logits("parity")))
    html = report_html(parity, manifest, training, logit_diffs_from_logits(logits), layers=layers)
    write_text(staging.path / "report.html", html)


def check_teacher(
    cfg: BuildConfig, teacher: StageOutput, baseline: StageOutput, features: StageOutput, log: Any
) -> dict[str, Any]:
    """The teacher gate: distil only from a teacher that holds its own against the student trained without it.

    A teacher clearly worse than the plain student would mostly teach it its own mistakes. Both are scored
    on the validation split (`teacher_gate_record`); the verdict is logged, and a failed gate stops the
    build in `refuse` mode.
    """
    y = np.load(features.dir / "features.npz")["y_validation"]
    record = teacher_gate_record(
        y,
        np.load(teacher.logits)["validation"].argmax(1),
        np.load(baseline.logits)["validation"].argmax(1),
        cfg.distill.teacher_gate_margin,
        cfg.gates.confidence,
    )
    record["mode"] = cfg.distill.teacher_gate
    verdict = (
        f"teacher gate: teacher {100 * record['teacher_validation']:.2f}% vs plain student "
        f"{100 * record['plain_student_validation']:.2f}% on {len(y):,} validation clips"
        f"{teacher_gate_rule(record)}"
    )
    if record["passed"]:
        log(f"{verdict}: PASS")
        return record
    advice = (
        "use a stronger teacher (teacher.source / teacher.epochs), set distill.teacher_gate=warn to "
        "distil anyway, or distill.alpha=0 and distill.feature_weight=0 to train without it"
    )
    if cfg.distill.teacher_gate == "refuse":
        raise GateError(f"{verdict}: FAIL — distillation refused; {advice}")
    log(f"WARNING {verdict}: FAIL — distilling anyway (distill.teacher_gate=warn)")
    return record


def teacher_gate_record(
    y: np.ndarray, teacher_pred: np.ndarray, plain_pred: np.ndarray, margin_pts: float, confidence: float
) -> dict[str, Any]:
    """Teacher against plain student on the same clips, decided on evidence like every other gate.

    The gate fails when even the high end of the paired interval of (teacher - plain) lies at or below
    `margin_pts`: the clips show the teacher worse by more than the margin, not a few clips' noise.
    A fixed cut on the point difference refused the `digits` recipe's seed-1 teacher at -1.67 points on
    419 clips, where one clip is 0.24 points (docs/DESIGN.md, stop 45).
    """
    teacher_ok, plain_ok = teacher_pred == y, plain_pred == y
    b, c = int((plain_ok & ~teacher_ok).sum()), int((~plain_ok & teacher_ok).sum())
    _, low, high = paired_drop(b, c, len(y), confidence)  # plain - teacher
    interval = (-100 * high, -100 * low)  # teacher - plain, points
    return {
        "teacher_validation": float(teacher_ok.mean()),
        "plain_student_validation": float(plain_ok.mean()),
        "margin_pts": margin_pts,
        "interval_pts": [interval[0], interval[1]],
        "discordant": [b, c],
        "passed": bool(interval[1] > margin_pts),
    }


def missing_pool() -> str | None:
    """Why the built-in real-speech pool cannot be read here, or None. The checks that only measure on
    it (real-speech agreement, the streaming check) are then reported missing; a build that learns or
    calibrates on it (`data.unlabeled: builtin:...`, `distill.fire_rate: teacher`) fails in `check_inputs`."""
    from edgekd.data.real_pool import BUILD_POOL, resolve_pool
    from edgekd.errors import DataError

    try:
        resolve_pool(BUILD_POOL)
    except DataError as err:
        return str(err)
    return None


def check_inputs(cfg: BuildConfig) -> None:
    """Every folder the config names exists (or the built-in pool is unpacked) before any stage runs."""
    from edgekd.data.real_pool import builtin_name, resolve_pool
    from edgekd.errors import DataError

    if cfg.data.path and not Path(cfg.data.path).is_dir():
        raise DataError(
            f"data.path {cfg.data.path!r} is not a directory; pass --data a folder in the Speech "
            "Commands layout (one folder per label with .wav files)"
        )
    if cfg.distill.fire_rate == "teacher" and (why := missing_pool()):
        raise DataError(
            f"distill.fire_rate=teacher chooses the student's operating point on the built-in speech pool: "
            f"{why}. Or build at the student's own operating point: --set distill.fire_rate=argmax"
        )
    pool = builtin_name(cfg.data.unlabeled)
    if pool is not None:
        try:  # a pool not unpacked fails here, naming its packages and the setup command
            resolve_pool(pool)
        except DataError as err:
            raise DataError(
                f"data.unlabeled={cfg.data.unlabeled}: {err}. Or train without real audio: --set "
                "data.unlabeled=null --set distill.domain_weight=0"
            ) from None
    elif cfg.data.unlabeled and not Path(cfg.data.unlabeled).expanduser().is_dir():
        raise DataError(
            f"data.unlabeled {cfg.data.unlabeled!r} is not a directory; pass --unlabeled a folder of "
            "recordings (any depth; .wav, .flac, .ogg, ...) or builtin:NAME, a built-in pool of real speech"
        )
    if cfg.data.extra and not Path(cfg.data.extra).expanduser().is_dir():
        raise DataError(
            f"data.extra {cfg.data.extra!r} is not a directory; pass --add-data a folder of your own "
            "recordings in the Speech Commands layout (a folder per word with .wav files)"
        )
    if cfg.verify.holdout and not Path(cfg.verify.holdout).expanduser().is_dir():
        raise DataError(
            f"verify.holdout {cfg.verify.holdout!r} is not a directory; pass --holdout a folder of your own "
            "real recordings in the Speech Commands layout (one folder per label with .wav files)"
        )


def streams(cfg: BuildConfig) -> bool:
    """Whether the build runs the streaming check: firmware on TFLite Micro with the micro frontend."""
    return cfg.verify.stream.enabled and "tflm" in cfg.verify.runtimes and cfg.frontend.name == "micro"


def run_build(
    cfg: BuildConfig, out: Path, cache_root: Path, progress: bool = True, log: Any = print
) -> BuildResult:
    """Run every stage (cached), verify, and write the build directory."""
    check_inputs(cfg)  # fail before any stage starts
    if cfg.wakeword is not None:  # a streaming wake word for ESPHome: its own stages
        from edgekd.build_wakeword import run_wakeword_build

        return run_wakeword_build(cfg, out, cache_root, progress, log)
    device = resolve_device(cfg.train.device)
    torch.set_num_threads(cfg.train.threads)
    log(f"threads: {cfg.train.threads}; {runtime_env.wait_policy()}")  # what the stage times ran under
    stages = Stages(cache_root, log=log)
    corpus = stage_corpus(cfg, stages, progress)
    views = stage_views(cfg, corpus, stages, progress)
    unlabeled = stage_unlabeled(cfg, corpus, stages, progress) if cfg.data.unlabeled else None
    features = stage_features(cfg, corpus, views, unlabeled, stages, progress)
    calibration = stage_calibration(cfg, stages, progress) if cfg.distill.fire_rate == "teacher" else None
    teacher = stage_teacher(cfg, corpus, views, unlabeled, calibration, stages, device, progress)
    info = teacher.info
    log(f"teacher: {info['name']} ({info['why']}); held-out accuracy {100 * info['accuracy']['test']:.1f}%")
    baseline, gate = None, None
    if distills(cfg) and cfg.distill.teacher_gate != "off":
        baseline = stage_baseline(cfg, views, features, stages, device, progress)
        gate = check_teacher(cfg, teacher, baseline, features, log)
    student = stage_student(cfg, features, teacher, calibration, stages, device, progress)
    export = stage_export(cfg, student, features, stages)
    verify = stage_verify(cfg, corpus, export, features, student, teacher, baseline, stages, progress)
    sections = {}  # parity sections measured on other audio, each with its own logits
    if cfg.verify.holdout:
        sections["holdout"] = stage_holdout(cfg, teacher, student, export, stages, progress)
    if cfg.verify.pool_windows:
        if pool_missing := missing_pool():
            log(f"real-speech agreement skipped: {pool_missing}")
        else:
            sections["real_unlabeled"] = stage_real_agreement(cfg, student, export, stages, progress)
    stream = None
    if streams(cfg):
        if pool_missing := missing_pool():
            log(f"streaming check skipped (operating point not calibrated): {pool_missing}")
        else:
            stream = stage_stream(cfg, corpus, features, export, stages, progress)

    out.mkdir(parents=True, exist_ok=True)
    staging = BuildDir(out / ".staging")
    shutil.rmtree(staging.path, ignore_errors=True)
    staging.weights.mkdir(parents=True)
    staging.logs.mkdir()
    for name in ARTIFACTS:
        if (export.dir / name).exists():
            shutil.copy2(export.dir / name, staging.path / name)
    parity = json.loads((verify.dir / BuildDir.PARITY).read_text())
    shutil.copy2(verify.logits, staging.logits("parity"))
    if (verify.dir / VIEW_LOGITS).exists():  # the gates' evidence beyond the clips
        shutil.copy2(verify.dir / VIEW_LOGITS, staging.logits("parity_views"))
    for name, section in sections.items():
        parity = with_section(parity, name, json.loads((section.dir / f"{name}.json").read_text()))
        shutil.copy2(section.logits, staging.logits(name))
    if stream is not None:
        parity = with_section(parity, "stream", json.loads((stream.dir / STREAM_SECTION).read_text()))
    write_json(staging.path / BuildDir.PARITY, parity)
    _copy_weights(student, teacher, staging)
    training = {
        "teacher": info.get("history"),
        "student_float": student.info["float"]["history"],
        "student_qat": student.info["qat"]["history"],
        "student_plain": baseline.info["history"] if baseline else None,
    }
    write_json(staging.logs / "training.json", training)
    outputs = {
        "corpus": corpus,
        "views": views,
        "features": features,
        "unlabeled": unlabeled,
        "calibration": calibration,
        "teacher": teacher,
        "baseline": baseline,
        "student": student,
        "export": export,
        "stream": stream,
    }
    point = (
        stream.info["operating_point"] if stream else operating_point({"config": cfg.model_dump(mode="json")})
    )
    manifest = build_manifest(cfg, staging, parity, outputs, stages.timings, gate, point)
    write_json(staging.path / BuildDir.MANIFEST, manifest)
    if "tflm" in cfg.verify.runtimes:  # MCU firmware package: model_settings.h (+ ESPHome manifest)
        written = write_firmware_package(staging.path)
        manifest["files"].update(file_hashes(staging.path, [p.name for p in written]))
        write_json(staging.path / BuildDir.MANIFEST, manifest)
    write_json(staging.path / BuildDir.CONFIG, cfg.model_dump(mode="json"))

    _write_reports(staging, parity, manifest, training, features, log)
    final = promote(staging.path, out, parity["passed"])
    return BuildResult(final, parity["passed"], parity, summary(parity))


def _copy_weights(student: StageOutput, teacher: StageOutput, staging: BuildDir) -> None:
    """Student weights (float, QAT), the fitted teacher and TensorBoard logs: what `eval` rebuilds from."""
    if (student.dir / "tensorboard").is_dir():
        shutil.copytree(student.dir / "tensorboard", staging.logs / "tensorboard")
    for src, name in ((student.dir, "float.pt"), (student.dir, "qat.pt"), (teacher.dir, "teacher_head.pt")):
        if (src / name).exists():
            shutil.copy2(src / name, staging.weights / name)
    if (teacher.dir / "teacher_hf").is_dir():
        shutil.copytree(teacher.dir / "teacher_hf", staging.weights / "teacher_hf")
