"""`edgekd eval BUILD --data PATH`: score a finished build on any labelled folder.

Rebuilds every runtime of the build from its own directory (config, weights, artifacts) and runs the
same parity code as the build, so the table means exactly what the build's table means.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from edgekd.audio.frontend import compute_features, make_frontend
from edgekd.config import BuildConfig
from edgekd.data.corpus import load_speech_commands
from edgekd.errors import EdgekdError
from edgekd.models.teachers import build_teacher
from edgekd.stages.distill import load_qat_student, make_student, predict_float_twin
from edgekd.stages.verify import make_runners, measure_budget, parity_rows, runtime_logits
from edgekd.train.trainer import predict
from edgekd.verify.parity import parity_report


def load_build_config(build: Path) -> BuildConfig:
    """The merged config a build was made with (clear errors for a missing or corrupt file)."""
    path = build / "config.json"
    if not path.is_file():
        raise EdgekdError(
            f"{build}: not an edgekd build directory (no config.json); run `edgekd build` first"
        )
    try:
        return BuildConfig.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise EdgekdError(
            f"{path}: not a valid edgekd build config ({first}); re-run `edgekd build`"
        ) from None


def evaluate(build: Path, data: Path, progress: bool = True, max_clips: int = 0) -> dict[str, Any]:
    cfg = load_build_config(build)
    missing = [
        n for n in ("manifest.json", "weights/float.pt", "weights/qat.pt") if not (build / n).is_file()
    ]
    if missing:
        raise EdgekdError(f"{build}: incomplete build directory, missing {missing}; re-run `edgekd build`")
    # Every clip of the folder is held-out for this build: score them all.
    data_cfg = cfg.data.model_copy(update={"path": str(data), "max_clips_per_label": max_clips})
    cfg_eval = cfg.model_copy(update={"data": data_cfg})
    corpus = load_speech_commands(cfg_eval, data, progress=progress, held_out=True)
    clips = corpus.float_clips(np.arange(len(corpus.labels)))
    y = corpus.labels
    x = compute_features(make_frontend(cfg.frontend.name), clips, progress=progress)
    weights = build / "weights"
    cpu = torch.device("cpu")
    # the reference row is the fp32 teacher, on the CPU, whatever precision the build trained it in
    teacher_cfg = cfg.teacher.model_copy(update={"precision": "fp32", "device": "cpu"})
    teacher = build_teacher(teacher_cfg, cfg.classes, cfg.seed, cpu, load=False)
    manifest = json.loads((build / "manifest.json").read_text())
    teacher.restore(weights, tuple(manifest["teacher"]["features_shape"]))  # before features(): Whisper's
    teacher_logits = teacher.logits(teacher.features(clips))  # feature extractor comes from the checkpoint
    student = make_student(cfg, x.shape[1:])
    student.load_state_dict(torch.load(weights / "float.pt", weights_only=True))
    prepared = load_qat_student(cfg, weights, torch.as_tensor(x[:2]))
    reference = {
        "teacher_fp32": teacher_logits,
        "student_fp32_pre_qat": predict(student, x, cpu),
        "student_fp32": predict_float_twin(prepared, x),
        "student_qat": predict(prepared, x, cpu),
    }
    rows = parity_rows(cfg, runtime_logits(cfg, x, reference, make_runners(cfg, build), progress), y)
    budget = measure_budget(cfg, build, x)
    report = parity_report(cfg, rows, budget, len(y))
    report["data"] = {"path": str(data), "skipped": corpus.skipped}
    return report
