"""INT8-vs-float agreement on real speech, which needs no labels.

The parity gate on the synthetic test split is blind off that distribution: a build measured 99.78 %
TFLM-vs-float agreement there and 97.2 % on real recordings. Agreement is a property of two runtimes on
the same input, so any real audio measures it: this stage runs `verify.pool_windows` one-second windows
of the built-in pool of real speech (`edgekd.data.real_pool`, unpacked by scripts/setup.sh) through the
float students and every INT8 runtime and gates the device runtime on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.artifacts import write_json, write_npz
from edgekd.audio.frontend import compute_features, make_frontend
from edgekd.config import BuildConfig
from edgekd.models.restore import load_qat_student, make_student, predict_float_twin
from edgekd.pipeline import Stages
from edgekd.stages.verify import make_runners, runtime_logits
from edgekd.train.trainer import predict

POOL = "debian-speech"


def agreement_section(cfg: BuildConfig, logits: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every row's argmax agreement with the shipped float weights, and the gate on the device's."""
    from edgekd.verify.parity import RUNTIME_ROWS, check

    ref = logits["student_fp32"].argmax(1)
    agreement = {k: float((v.argmax(1) == ref).mean()) for k, v in logits.items() if k != "student_fp32"}
    name, limit = cfg.verify.primary, cfg.gates.pool_min_agreement
    value = agreement[RUNTIME_ROWS[name]]
    gates = [check(f"real_unlabeled_agreement_{name}_vs_student_fp32", value, limit, ">=")] if limit else []
    return {
        "source": f"builtin:{POOL}",
        "n_windows": len(ref),
        "agreement_with_student_fp32": agreement,
        "gates": gates,
    }


def stage_real_agreement(
    cfg: BuildConfig,
    student_dir: Path,
    student_key: str,
    export_dir: Path,
    export_key: str,
    stages: Stages,
    progress: bool,
) -> tuple[Path, str]:
    from edgekd.data.real_pool import pool_fingerprint, windows

    def produce(d: Path) -> dict[str, Any]:
        clips = windows(POOL, cfg.verify.pool_windows, cfg.seed).astype(np.float32) / 32768.0
        x = compute_features(make_frontend(cfg.frontend.name), clips, progress=progress)
        cpu = torch.device("cpu")
        student = make_student(cfg, x.shape[1:])
        student.load_state_dict(torch.load(student_dir / "float.pt", weights_only=True))
        prepared = load_qat_student(cfg, student_dir, torch.as_tensor(x[:2]))
        reference = {
            "student_fp32_pre_qat": predict(student, x, cpu),
            "student_fp32": predict_float_twin(prepared, x),
            "student_qat": predict(prepared, x, cpu),
        }
        logits = runtime_logits(cfg, x, reference, make_runners(cfg, export_dir), progress)
        write_npz(d / "logits.npz", **logits)
        write_json(d / "real_unlabeled.json", agreement_section(cfg, logits))
        return {"windows": len(x)}

    key = {
        **pool_fingerprint(POOL),
        "windows": cfg.verify.pool_windows,
        "student": student_key,
        "export": export_key,
        "gates": cfg.gates.model_dump(mode="json"),
        "runtimes": cfg.verify.runtimes,
        "seed": cfg.seed,
    }
    return stages.run("real_agreement", key, produce)
