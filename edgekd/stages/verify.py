"""Verify stage: the held-out clips through every runtime, the measured budget and the target's gates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import write_json, write_npz
from edgekd.config import BuildConfig
from edgekd.pipeline import LOGITS, StageOutput, Stages


def stage_verify(
    cfg: BuildConfig,
    export: StageOutput,
    features: StageOutput,
    student: StageOutput,
    teacher: StageOutput,
    baseline: StageOutput | None,
    stages: Stages,
    progress: bool,
) -> StageOutput:
    """The test split through the cached torch rows and every exported runtime; `parity.json`."""
    from edgekd.verify.budget import measure_budget
    from edgekd.verify.parity import parity_report, parity_rows
    from edgekd.verify.scoring import runtime_logits

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
        budget = measure_budget(cfg, export.dir)
        write_json(d / "parity.json", parity_report(cfg, parity_rows(cfg, logits, y[:n]), budget, n))
        return {}

    key = {
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
