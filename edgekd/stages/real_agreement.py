"""INT8-vs-float agreement on real speech, which needs no labels.

The parity gate on the synthetic test split is blind off that distribution: a build measured 99.78 %
TFLM-vs-float agreement there and 97.2 % on real recordings. Agreement is a property of two runtimes on
the same input, so any real audio measures it: this stage runs `verify.pool_windows` one-second windows
of the built-in pool of real speech (`edgekd.data.real_pool`, unpacked by scripts/setup.sh) through the
float students and every INT8 runtime and gates each of them on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import write_json, write_npz
from edgekd.audio.frontend import compute_features, make_frontend
from edgekd.audio.io import from_pcm16
from edgekd.config import BuildConfig
from edgekd.data.real_pool import BUILD_POOL, pool_fingerprint, windows
from edgekd.pipeline import LOGITS, StageOutput, Stages


def agreement_section(cfg: BuildConfig, logits: dict[str, np.ndarray], step: float | None) -> dict[str, Any]:
    """Every row's argmax agreement with the shipped float weights, and a gate on each shipped runtime's
    (decided on its interval, like the build's own agreement gates)."""
    from edgekd.verify.parity import Evidence, agreement_gates

    ref = logits["student_fp32"].argmax(1)
    agreement = {k: float((v.argmax(1) == ref).mean()) for k, v in logits.items() if k != "student_fp32"}
    g = cfg.gates
    ev = Evidence.of(logits, np.zeros(len(ref), np.int64), step, "one-second windows of real speech")
    limit = g.min_agreement if g.pool_min_agreement is None else g.pool_min_agreement
    gates = agreement_gates(cfg, "real_unlabeled_", ev, limit) if limit else []
    return {
        "source": f"builtin:{BUILD_POOL}",
        "n_windows": len(ref),
        "agreement_with_student_fp32": agreement,
        "gates": gates,
    }


def stage_real_agreement(
    cfg: BuildConfig, student: StageOutput, export: StageOutput, stages: Stages, progress: bool
) -> StageOutput:
    from edgekd.verify.scoring import output_step, runtime_logits, student_logits

    def produce(d: Path) -> dict[str, Any]:
        clips = from_pcm16(windows(BUILD_POOL, cfg.verify.pool_windows, cfg.seed))
        x = compute_features(make_frontend(cfg.frontend.name), clips, progress=progress)
        logits = runtime_logits(cfg, x, lambda: student_logits(cfg, student.dir, x), export.dir, progress)
        write_npz(d / LOGITS, **logits)
        write_json(d / "real_unlabeled.json", agreement_section(cfg, logits, output_step(export.dir)))
        return {"windows": len(x)}

    key = {
        **pool_fingerprint(BUILD_POOL),
        "windows": cfg.verify.pool_windows,
        "student": student.key,
        "export": export.key,
        "gates": cfg.gates.model_dump(mode="json"),
        "runtimes": cfg.verify.runtimes,
        "seed": cfg.seed,
    }
    return stages.run("real_agreement", key, produce)
