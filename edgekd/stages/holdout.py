"""Holdout stage: the user's real recordings (`verify.holdout`, `--holdout DIR`) through every runtime.

Synthetic test splits measure unseen *synthetic* voices; this is the figure that says whether the model
hears people. Scoring is `edgekd.verify.scoring`, the same code as `edgekd eval`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.artifacts import write_json, write_npz
from edgekd.config import BuildConfig
from edgekd.pipeline import LOGITS, StageOutput, Stages, folder_fingerprint


def stage_holdout(
    cfg: BuildConfig,
    teacher: StageOutput,
    student: StageOutput,
    export: StageOutput,
    stages: Stages,
    progress: bool,
) -> StageOutput:
    """The build's real holdout: scored, gated, cached like any stage."""
    from edgekd.verify.scoring import holdout_section, score_folder

    assert cfg.verify.holdout is not None
    root = Path(cfg.verify.holdout).expanduser()

    def produce(d: Path) -> dict[str, Any]:
        shape = tuple(teacher.info["features_shape"])
        scored = score_folder(cfg, root, teacher.dir, student.dir, export.dir, shape, progress)
        write_npz(d / LOGITS, y=scored.y, **scored.logits)
        write_json(d / "holdout.json", holdout_section(cfg, scored, str(root)))
        return {"clips": len(scored.y)}

    key = {
        **folder_fingerprint(root),
        "teacher": teacher.key,
        "student": student.key,
        "export": export.key,
        "gates": cfg.gates.model_dump(mode="json"),
        "runtimes": cfg.verify.runtimes,
        "classes": cfg.classes,
    }
    return stages.run("holdout", key, produce)
