"""Verify stage: the held-out clips through every runtime, the measured budget and the target's gates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edgekd.artifacts import write_json, write_npz
from edgekd.config import BuildConfig
from edgekd.pipeline import Stages


def _host_latency_ms(cfg: BuildConfig, export_dir: Path, x: np.ndarray, repeats: int = 20) -> float:
    """Median batch-1 latency on this host, on the fast kernels a phone or server would run
    (XNNPACK LiteRT, onnxruntime) — not the reference kernels used for parity."""
    from edgekd.verify.runners import LiteRTRunner, OrtRunner, TFLMRunner, median_ms

    primary = cfg.verify.primary
    if primary == "onnx":
        runner: Any = OrtRunner(export_dir / "model.onnx")
    elif primary == "litert":
        runner = LiteRTRunner(export_dir / "model.tflite", reference=False)
    else:
        runner = TFLMRunner(export_dir / "model.tflite")
    return median_ms(lambda: runner.predict(x[:1]), repeats)


def measure_budget(cfg: BuildConfig, export_dir: Path, x: np.ndarray) -> Any:
    """Flash, arena, ops, MACs and latency of the artifact the target's device runs."""
    from edgekd.verify.parity import Budget

    tflite, onnx = export_dir / "model.tflite", export_dir / "model.onnx"
    model_bytes = (onnx if cfg.verify.primary == "onnx" else tflite).stat().st_size
    ops: list[str] = []
    macs, fully_int8, not_int8, arena = 0, True, [], None
    if tflite.exists():
        from edgekd.verify.tflite_info import describe, measure_arena

        info = describe(tflite)
        ops, macs, fully_int8, not_int8 = info.op_set, info.macs, info.is_fully_int8, info.not_int8
        arena = measure_arena(tflite) if "tflm" in cfg.verify.runtimes else None
    from edgekd.verify.inspect import build_latency_estimate

    estimate = build_latency_estimate(macs, cfg.budget)  # MCUs: MACs at the target clock; one formula
    if estimate is not None:
        latency, source = estimate
    else:
        latency = _host_latency_ms(cfg, export_dir, x)
        source = f"measured on this host ({cfg.verify.primary}, fast kernels, batch 1, median of 20)"
    return Budget(model_bytes, arena, ops, macs, fully_int8, not_int8, latency, source)


def make_runners(cfg: BuildConfig, export_dir: Path) -> dict[str, Any]:
    from edgekd.verify.runners import LiteRTRunner, OrtRunner, TFLMRunner

    made: dict[str, Any] = {}
    for name in cfg.verify.runtimes:
        if name == "tflm":
            made[name] = TFLMRunner(export_dir / "model.tflite")
        elif name == "litert":
            made[name] = LiteRTRunner(export_dir / "model.tflite", reference=True)
        else:
            made[name] = OrtRunner(export_dir / "model.onnx")
    return made


def runtime_logits(
    cfg: BuildConfig,
    x: np.ndarray,
    reference: dict[str, np.ndarray],
    runners: dict[str, Any],
    progress: bool,
) -> dict[str, np.ndarray]:
    """Logits of every parity row on the same clips: the torch references plus each exported runtime."""
    from edgekd.verify.parity import RUNTIME_ROWS

    logits = dict(reference)  # teacher_fp32, student_fp32_pre_qat, student_fp32, student_qat
    for name in ("onnx", "litert", "tflm"):
        if name in runners:
            logits[RUNTIME_ROWS[name]] = _batched(runners[name], x, name, progress)
    return logits


def parity_rows(cfg: BuildConfig, logits: dict[str, np.ndarray], y: np.ndarray) -> dict[str, dict[str, Any]]:
    """Every runtime's metrics; the fake-quant model is the reference for the exported runtimes' logits."""
    from edgekd.verify.parity import row

    s_pred, t_pred = logits["student_fp32"].argmax(1), logits["teacher_fp32"].argmax(1)
    qat = logits["student_qat"]
    return {
        name: row(values, y, cfg.classes, s_pred, t_pred, reference_logits=None if "fp32" in name else qat)
        for name, values in logits.items()
    }


def _batched(runner: Any, x: np.ndarray, name: str, progress: bool, chunk: int = 64) -> np.ndarray:
    out = [
        runner.predict(x[i : i + chunk])
        for i in tqdm(
            range(0, len(x), chunk), desc=f"verify {name}", unit="batch", disable=not progress, leave=False
        )
    ]
    return np.concatenate(out)


def stage_verify(
    cfg: BuildConfig,
    export_dir: Path,
    export_key: str,
    features_dir: Path,
    features_key: str,
    student_dir: Path,
    teacher_dir: Path,
    teacher_key: str,
    stages: Stages,
    progress: bool,
    baseline_dir: Path | None = None,
    baseline_key: str | None = None,
) -> tuple[Path, str]:
    from edgekd.verify.parity import parity_report

    def produce(d: Path) -> dict[str, Any]:
        f = np.load(features_dir / "features.npz")
        x, y = f["test"], f["y_test"]
        s = np.load(student_dir / "logits.npz")
        teacher = np.load(teacher_dir / "logits.npz")["test"]
        n = len(y) if not cfg.verify.max_clips else min(len(y), cfg.verify.max_clips)
        reference = {
            "teacher_fp32": teacher[:n],
            "student_fp32_pre_qat": s["pre_qat_test"][:n],
            "student_fp32": s["fp32_test"][:n],
            "student_qat": s["qat_test"][:n],
        }
        if baseline_dir is not None:  # the student trained without the teacher: what distillation gained
            reference["student_plain_fp32"] = np.load(baseline_dir / "logits.npz")["test"][:n]
        logits = runtime_logits(cfg, x[:n], reference, make_runners(cfg, export_dir), progress)
        write_npz(d / "logits.npz", y=y[:n], **logits)  # per-clip evidence behind every figure
        budget = measure_budget(cfg, export_dir, x)
        write_json(d / "parity.json", parity_report(cfg, parity_rows(cfg, logits, y[:n]), budget, n))
        return {}

    key = {
        "export": export_key,
        "features": features_key,
        "teacher": teacher_key,
        "baseline": baseline_key,
        "verify": cfg.verify.model_dump(mode="json"),
        "budget": cfg.budget.model_dump(mode="json"),
        "gates": cfg.gates.model_dump(mode="json"),
        "classes": cfg.classes,
        "target": cfg.target,
    }
    return stages.run("verify", key, produce)
