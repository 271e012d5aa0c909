"""`edgekd eval BUILD --data PATH`: score a finished build on any labelled folder.

Rebuilds every runtime of the build from its own directory (config, weights, artifacts) and runs the
same scoring and parity code as the build (`edgekd.verify.scoring`), so the table means exactly what
the build's table means. Its gates are the build's, with the accuracy floor of real recordings
(`gates.holdout_min_accuracy`) in place of the synthetic test split's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.build_dir import BuildDir
from edgekd.verify.budget import measure_budget
from edgekd.verify.parity import parity_report, real_floor_gates
from edgekd.verify.scoring import score_folder, skipped_record


def evaluate(build: Path, data: Path, progress: bool = True, max_clips: int = 0) -> dict[str, Any]:
    b = BuildDir(build)
    cfg = b.config()  # first: a folder that is no build at all says so
    b.require(BuildDir.MANIFEST, "weights/float.pt", "weights/qat.pt")
    scored = score_folder(cfg, data, b.weights, b.weights, b.path, b.features_shape(), progress, max_clips)
    # A folder scored after the build is held-out audio, real as a rule: the synthetic test split's floor
    # (`gates.min_accuracy`) does not apply to it, the real-recording floor does (the build's --holdout gate).
    held_out = cfg.model_copy(update={"gates": cfg.gates.model_copy(update={"min_accuracy": 0.0})})
    report = parity_report(held_out, scored.logits, scored.y, measure_budget(cfg, b.path), step=scored.step)
    report["gates"] += real_floor_gates(cfg, report["rows"])
    report["passed"] = all(g["passed"] for g in report["gates"])
    report["data"] = {"path": str(data), **skipped_record(scored)}
    return report
