"""`edgekd eval BUILD --data PATH`: score a finished build on any labelled folder.

Rebuilds every runtime of the build from its own directory (config, weights, artifacts) and runs the
same parity code as the build, so the table means exactly what the build's table means.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.build_dir import load_build_config
from edgekd.errors import EdgekdError
from edgekd.stages.holdout import SHOWN_SKIPPED, keyword_accuracy, score_folder
from edgekd.stages.verify import measure_budget, parity_rows
from edgekd.verify.parity import parity_report


def evaluate(build: Path, data: Path, progress: bool = True, max_clips: int = 0) -> dict[str, Any]:
    cfg = load_build_config(build)
    missing = [
        n for n in ("manifest.json", "weights/float.pt", "weights/qat.pt") if not (build / n).is_file()
    ]
    if missing:
        raise EdgekdError(f"{build}: incomplete build directory, missing {missing}; re-run `edgekd build`")
    manifest = json.loads((build / "manifest.json").read_text())
    weights = build / "weights"
    shape = tuple(manifest["teacher"]["features_shape"])
    scored = score_folder(cfg, data, weights, weights, build, shape, progress, max_clips)
    rows = parity_rows(cfg, scored.logits, scored.y)
    for r in rows.values():
        r["keyword_accuracy"] = keyword_accuracy(r, cfg.labels)
    report = parity_report(cfg, rows, measure_budget(cfg, build, scored.x), len(scored.y))
    report["data"] = {
        "path": str(data),
        "skipped": scored.skipped,
        "skipped_files": scored.skipped_files[:SHOWN_SKIPPED],
    }
    return report
