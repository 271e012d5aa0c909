"""Score a labelled folder of real recordings with every runtime of a build.

One function serves `edgekd eval` (a finished build directory) and the build's own holdout stage
(`verify.holdout`, `--holdout DIR`): the user's real recordings, never trained on, through the fp32
teacher, the float students, the fake-quant model and every exported INT8 runtime. Synthetic test
splits measure unseen *synthetic* voices; this is the figure that says whether the model hears people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.artifacts import write_json, write_npz
from edgekd.audio.frontend import compute_features, make_frontend
from edgekd.config import BuildConfig
from edgekd.data.corpus import Corpus, load_speech_commands
from edgekd.models.restore import load_qat_student, make_student, predict_float_twin
from edgekd.models.teachers import build_teacher
from edgekd.pipeline import Stages, folder_fingerprint
from edgekd.stages.verify import make_runners, parity_rows, runtime_logits
from edgekd.train.trainer import predict

SHOWN_SKIPPED = 20  # skipped file names kept in parity.json / --json; the counts cover every file


@dataclass
class Scored:
    """Every runtime's logits on a folder's clips, the labels and what was skipped reading it."""

    x: np.ndarray
    y: np.ndarray
    logits: dict[str, np.ndarray]
    skipped: dict[str, int]
    skipped_files: list[str]


def read_folder(cfg: BuildConfig, data: Path, progress: bool, max_clips: int = 0) -> Corpus:
    """Every clip of a Speech Commands folder as held-out test clips, under the build's labels."""
    data_cfg = cfg.data.model_copy(update={"path": str(data), "max_clips_per_label": max_clips})
    return load_speech_commands(cfg.model_copy(update={"data": data_cfg}), data, progress, held_out=True)


def score_folder(
    cfg: BuildConfig,
    data: Path,
    teacher_dir: Path,
    student_dir: Path,
    export_dir: Path,
    features_shape: tuple[int, ...],
    progress: bool = True,
    max_clips: int = 0,
) -> Scored:
    """Run a folder through every parity row, rebuilt from the build's own weights and artifacts.

    `teacher_dir` holds the fitted teacher (`teacher_head.pt` or `teacher_hf/`), `student_dir` the float
    and QAT student weights (`float.pt`, `qat.pt`), `export_dir` the exported models.
    """
    corpus = read_folder(cfg, data, progress, max_clips)
    clips = corpus.float_clips(np.arange(len(corpus.labels)))
    x = compute_features(make_frontend(cfg.frontend.name), clips, progress=progress)
    cpu = torch.device("cpu")
    # the reference row is the fp32 teacher, on the CPU, whatever precision the build trained it in
    teacher_cfg = cfg.teacher.model_copy(update={"precision": "fp32", "device": "cpu"})
    teacher = build_teacher(teacher_cfg, cfg.classes, cfg.seed, cpu, load=False)
    teacher.restore(teacher_dir, features_shape)  # before features(): Whisper's feature extractor
    teacher_logits = teacher.logits(teacher.features(clips))  # comes from the checkpoint
    student = make_student(cfg, x.shape[1:])
    student.load_state_dict(torch.load(student_dir / "float.pt", weights_only=True))
    prepared = load_qat_student(cfg, student_dir, torch.as_tensor(x[:2]))
    reference = {
        "teacher_fp32": teacher_logits,
        "student_fp32_pre_qat": predict(student, x, cpu),
        "student_fp32": predict_float_twin(prepared, x),
        "student_qat": predict(prepared, x, cpu),
    }
    logits = runtime_logits(cfg, x, reference, make_runners(cfg, export_dir), progress)
    return Scored(x, corpus.labels, logits, corpus.skipped, corpus.skipped_files)


def keyword_accuracy(row: dict[str, Any], labels: list[str]) -> float | None:
    """Mean of the per-class accuracies of the keywords present: the figure the field quotes for
    command sets, which neither `_unknown_`-heavy folders nor class imbalance can inflate."""
    values = [row["per_class_accuracy"].get(k) for k in labels]
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def holdout_section(cfg: BuildConfig, scored: Scored, path: str) -> dict[str, Any]:
    """`parity.json`'s `holdout`: every runtime on the user's real clips, and the holdout gates."""
    from edgekd.verify.parity import holdout_gates

    rows = parity_rows(cfg, scored.logits, scored.y)
    for r in rows.values():
        r["keyword_accuracy"] = keyword_accuracy(r, cfg.labels)
    return {
        "path": path,
        "n_clips": len(scored.y),
        "skipped": scored.skipped,
        "skipped_files": scored.skipped_files[:SHOWN_SKIPPED],
        "rows": rows,
        "gates": holdout_gates(cfg, rows),
    }


def stage_holdout(
    cfg: BuildConfig,
    teacher_dir: Path,
    teacher_key: str,
    student_dir: Path,
    student_key: str,
    export_dir: Path,
    export_key: str,
    features_shape: tuple[int, ...],
    stages: Stages,
    progress: bool,
) -> tuple[Path, str]:
    """The build's real holdout (`verify.holdout`): scored, gated, cached like any stage."""
    assert cfg.verify.holdout is not None
    root = Path(cfg.verify.holdout).expanduser()

    def produce(d: Path) -> dict[str, Any]:
        scored = score_folder(cfg, root, teacher_dir, student_dir, export_dir, features_shape, progress)
        write_npz(d / "logits.npz", y=scored.y, **scored.logits)
        write_json(d / "holdout.json", holdout_section(cfg, scored, str(root)))
        return {"clips": len(scored.y)}

    key = {
        **folder_fingerprint(root),
        "teacher": teacher_key,
        "student": student_key,
        "export": export_key,
        "gates": cfg.gates.model_dump(mode="json"),
        "runtimes": cfg.verify.runtimes,
        "classes": cfg.classes,
    }
    return stages.run("holdout", key, produce)
