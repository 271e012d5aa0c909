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

from edgekd.artifacts import sha256_file, write_json, write_text
from edgekd.config import BuildConfig
from edgekd.errors import GateError
from edgekd.pipeline import Stages
from edgekd.stages.data import stage_corpus, stage_features, stage_unlabeled, stage_views
from edgekd.stages.distill import distills, stage_baseline, stage_student
from edgekd.stages.export import stage_export
from edgekd.stages.holdout import stage_holdout
from edgekd.stages.real_agreement import POOL, stage_real_agreement
from edgekd.stages.teacher import stage_teacher
from edgekd.stages.verify import stage_verify
from edgekd.train.trainer import resolve_device
from edgekd.verify.parity import with_section


@dataclass
class BuildResult:
    out: Path
    passed: bool
    parity: dict[str, Any]
    summary: str


ARTIFACTS = ["model.tflite", "model.onnx", "model_data.h", "model_data.cc"]


def _promote(staging: Path, out: Path, passed: bool) -> Path:
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
    staging: Path,
    parity: dict[str, Any],
    manifest: dict[str, Any],
    training: dict[str, Any],
    features_dir: Path,
    log: Any,
) -> None:
    """report.md and the self-contained report.html, with a per-layer float-vs-INT8 comparison that
    names the layer where a failing build loses accuracy (shown for passing builds too, ~10 s)."""
    import numpy as np

    from edgekd.report.html import logit_diffs_from_logits, report_html
    from edgekd.report.markdown import report_md
    from edgekd.verify.layers import compare_layers, layers_md, worst_sentence

    layers = None
    if (staging / "model.tflite").exists():
        layers = compare_layers(staging, np.load(features_dir / "features.npz")["test"], max_clips=32)
        write_json(staging / "logs" / "layers.json", layers)
        if not parity["passed"]:
            log(f"per-layer comparison: {worst_sentence(layers)}")
    md = report_md(parity, manifest)
    if layers and not parity["passed"]:
        md += "\n## Per-layer float vs INT8\n\n" + layers_md(layers) + "\n"
    write_text(staging / "report.md", md)
    logits = dict(np.load(staging / "logs" / "parity_logits.npz"))
    html = report_html(parity, manifest, training, logit_diffs_from_logits(logits), layers=layers)
    write_text(staging / "report.html", html)


def check_teacher(
    cfg: BuildConfig, teacher_dir: Path, baseline_dir: Path, features_dir: Path, log: Any
) -> dict[str, Any]:
    """The teacher gate: distil only from a teacher that holds its own against the student trained without it.

    Both are scored on the validation split; the teacher passes when it beats the plain student by more
    than `distill.teacher_gate_margin` points (0: strictly better; the default -1.5 tolerates the noise
    of a few hundred clips, so a split the plain student saturates does not refuse a good teacher). A
    teacher clearly worse than that would mostly teach the student its own mistakes.
    """
    y = np.load(features_dir / "features.npz")["y_validation"]
    teacher = float((np.load(teacher_dir / "logits.npz")["validation"].argmax(1) == y).mean())
    plain = float((np.load(baseline_dir / "logits.npz")["validation"].argmax(1) == y).mean())
    d = cfg.distill
    passed = 100 * (teacher - plain) > d.teacher_gate_margin
    record = {
        "teacher_validation": teacher,
        "plain_student_validation": plain,
        "margin_pts": d.teacher_gate_margin,
        "mode": d.teacher_gate,
        "passed": passed,
    }
    verdict = (
        f"teacher gate: teacher {100 * teacher:.2f}% vs plain student {100 * plain:.2f}% on validation "
        f"(needs > {d.teacher_gate_margin:+g} points)"
    )
    if passed:
        log(f"{verdict}: PASS")
        return record
    advice = (
        "use a stronger teacher (teacher.source / teacher.epochs), set distill.teacher_gate=warn to "
        "distil anyway, or distill.alpha=0 and distill.feature_weight=0 to train without it"
    )
    if d.teacher_gate == "refuse":
        raise GateError(f"{verdict}: FAIL — distillation refused; {advice}")
    log(f"WARNING {verdict}: FAIL — distilling anyway (distill.teacher_gate=warn)")
    return record


def missing_pool() -> str | None:
    """Why the built-in real-speech pool cannot be read here, or None. A default build does not need
    it to exist (setup fetches it where it can); the agreement it measures is then reported missing."""
    from edgekd.data.real_pool import resolve_pool
    from edgekd.errors import DataError

    try:
        resolve_pool(POOL)
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
    pool = builtin_name(cfg.data.unlabeled)
    if pool is not None:
        resolve_pool(pool)  # a pool not unpacked fails here, naming its packages and the setup command
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


def run_build(
    cfg: BuildConfig, out: Path, cache_root: Path, progress: bool = True, log: Any = print
) -> BuildResult:
    """Run every stage (cached), verify, and write the build directory."""
    from edgekd.data.real_pool import builtin_name, pool_licences
    from edgekd.export.manifest import build_manifest, file_hashes, model_io
    from edgekd.report.markdown import summary

    check_inputs(cfg)  # fail before any stage starts
    device = resolve_device(cfg.train.device)
    torch.set_num_threads(cfg.train.threads)
    stages = Stages(cache_root, log=log)
    corpus_dir, corpus_key = stage_corpus(cfg, stages, progress)
    views_dir, views_key = stage_views(cfg, corpus_dir, corpus_key, stages, progress)
    unlabeled_dir, unlabeled_key = (
        stage_unlabeled(cfg, corpus_dir, stages, progress) if cfg.data.unlabeled else (None, None)
    )
    features_dir, features_key = stage_features(
        cfg, corpus_dir, views_dir, views_key, stages, progress, unlabeled_dir, unlabeled_key
    )
    teacher_dir, teacher_key = stage_teacher(
        cfg, corpus_dir, views_dir, views_key, stages, device, progress, unlabeled_dir, unlabeled_key
    )
    teacher_info = json.loads((teacher_dir / "_done.json").read_text())
    log(
        f"teacher: {teacher_info['name']} ({teacher_info['why']}); held-out accuracy "
        f"{100 * teacher_info['accuracy']['test']:.1f}%"
    )
    baseline_dir, baseline_key, gate = None, None, None
    if distills(cfg) and cfg.distill.teacher_gate != "off":
        baseline_dir, baseline_key = stage_baseline(cfg, features_dir, features_key, stages, device, progress)
        gate = check_teacher(cfg, teacher_dir, baseline_dir, features_dir, log)
    student_dir, student_key = stage_student(
        cfg, features_dir, features_key, teacher_dir, teacher_key, stages, device, progress
    )
    export_dir, export_key = stage_export(cfg, student_dir, student_key, features_dir, stages)
    verify_dir, _ = stage_verify(
        cfg,
        export_dir,
        export_key,
        features_dir,
        features_key,
        student_dir,
        teacher_dir,
        teacher_key,
        stages,
        progress,
        baseline_dir,
        baseline_key,
    )
    holdout_dir = None
    if cfg.verify.holdout:
        holdout_dir, _ = stage_holdout(
            cfg,
            teacher_dir,
            teacher_key,
            student_dir,
            student_key,
            export_dir,
            export_key,
            tuple(teacher_info["features_shape"]),
            stages,
            progress,
        )
    agreement_dir = None
    if cfg.verify.pool_windows:
        if pool_missing := missing_pool():
            log(f"real-speech agreement skipped: {pool_missing}")
        else:
            agreement_dir, _ = stage_real_agreement(
                cfg, student_dir, student_key, export_dir, export_key, stages, progress
            )

    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "weights").mkdir(parents=True)
    for name in ARTIFACTS:
        if (export_dir / name).exists():
            shutil.copy2(export_dir / name, staging / name)
    parity = json.loads((verify_dir / "parity.json").read_text())
    (staging / "logs").mkdir()
    shutil.copy2(verify_dir / "logits.npz", staging / "logs" / "parity_logits.npz")
    for name, section_dir in (("holdout", holdout_dir), ("real_unlabeled", agreement_dir)):
        if section_dir is not None:
            parity = with_section(parity, name, json.loads((section_dir / f"{name}.json").read_text()))
            shutil.copy2(section_dir / "logits.npz", staging / "logs" / f"{name}_logits.npz")
    write_json(staging / "parity.json", parity)
    if (student_dir / "tensorboard").is_dir():
        shutil.copytree(student_dir / "tensorboard", staging / "logs" / "tensorboard")
    for src, name in ((student_dir, "float.pt"), (student_dir, "qat.pt"), (teacher_dir, "teacher_head.pt")):
        if (src / name).exists():
            shutil.copy2(src / name, staging / "weights" / name)
    if (teacher_dir / "teacher_hf").is_dir():
        shutil.copytree(teacher_dir / "teacher_hf", staging / "weights" / "teacher_hf")

    corpus_info = json.loads((corpus_dir / "_done.json").read_text())
    student_info = json.loads((student_dir / "_done.json").read_text())
    features_info = json.loads((features_dir / "_done.json").read_text())
    training = {
        "teacher": teacher_info.get("history"),
        "student_float": student_info["float"]["history"],
        "student_qat": student_info["qat"]["history"],
        "student_plain": json.loads((baseline_dir / "_done.json").read_text())["history"]
        if baseline_dir
        else None,
    }
    write_json(staging / "logs" / "training.json", training)
    manifest = build_manifest(
        target=cfg.target,
        recipe=cfg.recipe,
        seed=cfg.seed,
        classes=cfg.classes,
        frontend={
            **cfg.frontend.model_dump(mode="json"),
            **features_info["frontend"],
            "input_shape": features_info["shape"],
        },
        model_io=model_io(staging / "model.tflite"),
        arena={
            "measured_bytes": parity["budget"]["arena_bytes"],
            "with_headroom_bytes": parity["budget"]["arena_bytes_with_headroom"],
        },
        teacher={k: teacher_info.get(k) for k in ("name", "why", "accuracy", "identity", "features_shape")},
        student={
            "arch": cfg.student.arch,
            "width": cfg.student.width,
            "params": student_info["params"],
            "used_teacher": student_info["used_teacher"],
            "unlabeled_rows": student_info.get("unlabeled_rows", 0),
            "distill": cfg.distill.model_dump(mode="json"),
            "float_fit": {
                **{k: v for k, v in student_info["float"].items() if k != "history"},
                "epochs_run": len(student_info["float"]["history"]),
                "last_epoch": student_info["float"]["history"][-1],
            },
            "teacher_gate": gate,
        },
        data={
            "corpus_sha256": sha256_file(corpus_dir / "corpus.npz"),
            "source": cfg.data.path or f"synthetic ({', '.join(corpus_info.get('voices') or {})})",
            "voices": corpus_info.get("voices"),  # per engine: voices, speakers, licence
            **(
                {"real_speech_licences": pool_licences(pool)}
                if (pool := builtin_name(cfg.data.unlabeled))
                else {}
            ),
            "summary": corpus_info["summary"],
            "skipped": corpus_info["skipped"],
            "groups": corpus_info["groups"],
            "test_note": "speakers never seen in training"
            if cfg.data.path
            else "synthetic voices never seen in training",
        },
        timings=[t.__dict__ for t in stages.timings],
        cache_keys={
            "corpus": corpus_key,
            "views": views_key,
            "features": features_key,
            "unlabeled": unlabeled_key,
            "teacher": teacher_key,
            "baseline": baseline_key,
            "student": student_key,
            "export": export_key,
        },
        config=cfg.model_dump(mode="json"),
        files=file_hashes(staging, [*ARTIFACTS, "parity.json"]),
    )
    write_json(staging / "manifest.json", manifest)
    if "tflm" in cfg.verify.runtimes:  # MCU firmware package: model_settings.h (+ ESPHome manifest)
        from edgekd.export.firmware import write_firmware_package

        written = write_firmware_package(staging)
        manifest["files"].update(file_hashes(staging, [p.name for p in written]))
        write_json(staging / "manifest.json", manifest)
    write_json(staging / "config.json", cfg.model_dump(mode="json"))

    _write_reports(staging, parity, manifest, training, features_dir, log)
    final = _promote(staging, out, parity["passed"])
    return BuildResult(final, parity["passed"], parity, summary(parity))
