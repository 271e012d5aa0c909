"""Scoring audio with every runtime of a build: the torch references plus each exported INT8 runtime.

One code path serves the build's verify stage (cached logits of its own test split), its holdout and
real-speech agreement stages, and `edgekd eval` (a finished build directory on any labelled folder):
all of them end in `runtime_logits`, so every table means the same thing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from edgekd.audio.frontend import compute_features, make_frontend
from edgekd.config import BuildConfig
from edgekd.data.corpus import Corpus, load_speech_commands
from edgekd.models.restore import load_qat_student, make_student, predict_float_twin
from edgekd.train.trainer import predict
from edgekd.verify import runtime_worker
from edgekd.verify.parity import RUNTIME_ROWS, Evidence, holdout_gates, parity_rows

SHOWN_SKIPPED = 20  # skipped file names kept in parity.json / --json; the counts cover every file
WORKER_MIN_CLIPS = 256  # below this, starting a worker process (~2 s) costs more than it hides


def make_runners(cfg: BuildConfig, model_dir: Path, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """One runner per `verify.runtimes` entry (except `skip`), on the artifacts in `model_dir`."""
    from edgekd.verify.runners import LiteRTRunner, OrtRunner, TFLMRunner

    made: dict[str, Any] = {}
    for name in cfg.verify.runtimes:
        if name in skip:
            continue
        if name == "tflm":
            made[name] = TFLMRunner(model_dir / "model.tflite")
        elif name == "litert":
            made[name] = LiteRTRunner(model_dir / "model.tflite", reference=True)
        else:
            made[name] = OrtRunner(model_dir / "model.onnx")
    return made


def runtime_logits(
    cfg: BuildConfig,
    x: np.ndarray,
    reference: Callable[[], dict[str, np.ndarray]],
    model_dir: Path,
    progress: bool,
) -> dict[str, np.ndarray]:
    """Logits of every parity row on the same clips: `reference()` (the torch rows) plus each runtime.

    On large inputs the interpreters with reference kernels (TFLite Micro, LiteRT) run in a worker
    process while this one computes the references (`edgekd.verify.runtime_worker`).
    """
    slow = [n for n in ("litert", "tflm") if n in cfg.verify.runtimes] if len(x) >= WORKER_MIN_CLIPS else []
    worker = runtime_worker.running(model_dir, x, slow, progress) if slow else contextlib.nullcontext(dict)
    with worker as elsewhere:
        logits = dict(reference())  # teacher_fp32, student_fp32_pre_qat, student_fp32, student_qat
        runners = make_runners(cfg, model_dir, skip=tuple(slow))
        done = {**{n: _batched(r, x, n, progress) for n, r in runners.items()}, **elsewhere()}
    logits |= {RUNTIME_ROWS[n]: done[n] for n in ("onnx", "litert", "tflm") if n in done}
    return logits


def _batched(runner: Any, x: np.ndarray, name: str, progress: bool, chunk: int = 64) -> np.ndarray:
    out = [
        runner.predict(x[i : i + chunk])
        for i in tqdm(
            range(0, len(x), chunk), desc=f"verify {name}", unit="batch", disable=not progress, leave=False
        )
    ]
    return np.concatenate(out)


def student_logits(cfg: BuildConfig, weights: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The student's torch rows, rebuilt from `float.pt` and `qat.pt`: pre-QAT float, the shipped
    weights in float (QAT graph, quantizers off) and the fake-quant model."""
    cpu = torch.device("cpu")
    student = make_student(cfg, x.shape[1:])
    student.load_state_dict(torch.load(weights / "float.pt", weights_only=True))
    prepared = load_qat_student(cfg, weights, torch.as_tensor(x[:2]))
    return {
        "student_fp32_pre_qat": predict(student, x, cpu),
        "student_fp32": predict_float_twin(prepared, x),
        "student_qat": predict(prepared, x, cpu),
    }


def output_step(model_dir: Path) -> float | None:
    """The exported model's int8 output quantization step (near-ties are measured in it); None without
    a TFLite model. The ONNX model comes from the same QAT graph and shares it."""
    tflite = model_dir / "model.tflite"
    if not tflite.exists():
        return None
    from edgekd.verify.tflite_info import describe

    return describe(tflite).output.scale


@dataclass
class Scored:
    """Every runtime's logits on a folder's clips, the labels, what was skipped reading it and the
    model's output step."""

    x: np.ndarray
    y: np.ndarray
    logits: dict[str, np.ndarray]
    skipped: dict[str, int]
    skipped_files: list[str]
    step: float | None
    groups: np.ndarray | None = None  # each clip's group: `speaker:<id>` from `<id>_nohash_*.wav`


def read_folder(cfg: BuildConfig, data: Path, progress: bool, max_clips: int = 0) -> Corpus:
    """Every clip of a Speech Commands folder as held-out test clips, under the build's labels."""
    data_cfg = cfg.data.model_copy(update={"path": str(data), "max_clips_per_label": max_clips})
    return load_speech_commands(cfg.model_copy(update={"data": data_cfg}), data, progress, held_out=True)


def score_clips(
    cfg: BuildConfig,
    clips: np.ndarray,
    teacher_dir: Path,
    student_dir: Path,
    model_dir: Path,
    features_shape: tuple[int, ...],
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Float clips through every parity row, rebuilt from the build's own weights and artifacts: the
    student features and each row's logits.

    `teacher_dir` holds the fitted teacher (`teacher_head.pt` or `teacher_hf/`), `student_dir` the float
    and QAT student weights (`float.pt`, `qat.pt`), `model_dir` the exported models.
    """
    from edgekd.models.teachers import build_teacher

    x = compute_features(make_frontend(cfg.frontend.name), clips, progress=progress)
    # the reference row is the fp32 teacher, on the CPU, whatever precision the build trained it in
    teacher_cfg = cfg.teacher.model_copy(update={"precision": "fp32", "device": "cpu"})
    teacher = build_teacher(teacher_cfg, cfg.classes, cfg.seed, torch.device("cpu"), load=False)
    teacher.restore(teacher_dir, features_shape)  # before features(): Whisper's feature extractor

    def reference() -> dict[str, np.ndarray]:
        return {
            "teacher_fp32": teacher.logits(teacher.features(clips)),
            **student_logits(cfg, student_dir, x),
        }

    return x, runtime_logits(cfg, x, reference, model_dir, progress)


def score_folder(
    cfg: BuildConfig,
    data: Path,
    teacher_dir: Path,
    student_dir: Path,
    model_dir: Path,
    features_shape: tuple[int, ...],
    progress: bool = True,
    max_clips: int = 0,
) -> Scored:
    """Run a labelled folder through every parity row (`score_clips`)."""
    corpus = read_folder(cfg, data, progress, max_clips)
    clips = corpus.float_clips(np.arange(len(corpus.labels)))
    x, logits = score_clips(cfg, clips, teacher_dir, student_dir, model_dir, features_shape, progress)
    return Scored(
        x, corpus.labels, logits, corpus.skipped, corpus.skipped_files, output_step(model_dir), corpus.groups
    )


def skipped_record(scored: Scored) -> dict[str, Any]:
    return {"skipped": scored.skipped, "skipped_files": scored.skipped_files[:SHOWN_SKIPPED]}


def holdout_section(cfg: BuildConfig, scored: Scored, path: str) -> dict[str, Any]:
    """`parity.json`'s `holdout`: every runtime on the user's real clips, and the holdout gates."""
    rows = parity_rows(cfg, scored.logits, scored.y)
    return {
        "path": path,
        "n_clips": len(scored.y),
        **skipped_record(scored),
        "rows": rows,
        "gates": holdout_gates(
            cfg, rows, Evidence.of(scored.logits, scored.y, scored.step, "real holdout clips")
        ),
    }
