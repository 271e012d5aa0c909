"""Parity: the same held-out clips through every runtime, compared, and checked against the target's gates.

`parity.json` (schema `edgekd.parity/2`) is the machine-readable record users diff between releases:

    schema, target, primary, classes, n_clips,
    rows.<runtime>.{accuracy, macro_f1, agreement_with_student_fp32, agreement_with_teacher,
                    max_abs_logit_diff, per_class_accuracy, confusion}
    budget.{model_bytes, arena_bytes, arena_bytes_with_headroom, ops, macs, latency_ms, fully_int8}
    gates[].{name, value, limit, passed}, passed
    holdout, real_unlabeled, stream: sections measured on other audio (`with_section`); `stream` (new in
    /2) holds the shipped operating point, FA/h on real speech and recall in running audio.

Runtimes: teacher_fp32; student_fp32_pre_qat (the float student before quantization-aware fine-tuning);
student_fp32 (the shipped weights in float32: the QAT graph with quantizers off — what the INT8 artifacts
must reproduce, so the agreement and drop gates measure conversion); student_qat (fake-quant torch);
student_int8_onnx, student_int8_litert (reference kernels) and student_int8_tflm (TFLite Micro on the
host). A second drop gate compares the device runtime with the pre-QAT float student, so QAT + INT8
together cannot cost accuracy unnoticed.
`max_abs_logit_diff` of an INT8 runtime is measured against the fake-quant model it was converted from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.config import BuildConfig
from edgekd.verify.budget import Budget, budget_gates, check

SCHEMA = "edgekd.parity/2"
READABLE_SCHEMAS = ("edgekd.parity/1", SCHEMA)  # /1 is /2 without the `stream` section
RUNTIME_ROWS = {"tflm": "student_int8_tflm", "litert": "student_int8_litert", "onnx": "student_int8_onnx"}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def macro_f1(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0
    )
    present = cm.sum(1) > 0
    return float(f1[present].mean()) if present.any() else 0.0


def row(
    logits: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    student_pred: np.ndarray,
    teacher_pred: np.ndarray,
    reference_logits: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics of one runtime's logits on the held-out clips."""
    pred = logits.argmax(1)
    cm = confusion(y, pred, len(classes))
    per_class = {c: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None) for i, c in enumerate(classes)}
    out: dict[str, Any] = {
        "accuracy": float((pred == y).mean()),
        "macro_f1": macro_f1(cm),
        "agreement_with_student_fp32": float((pred == student_pred).mean()),
        "agreement_with_teacher": float((pred == teacher_pred).mean()),
        "per_class_accuracy": per_class,
        "confusion": cm.tolist(),
    }
    if reference_logits is not None:
        out["max_abs_logit_diff"] = float(np.max(np.abs(logits - reference_logits)))
    return out


def gates(cfg: BuildConfig, rows: dict[str, dict[str, Any]], budget: Budget) -> list[dict[str, Any]]:
    """Evaluate the target's gates; each names its value, its limit and whether it passed."""
    primary = rows[RUNTIME_ROWS[cfg.verify.primary]]
    fp32 = rows["student_fp32"]
    g = cfg.gates
    out = [
        check(
            f"agreement_{cfg.verify.primary}_vs_student_fp32",
            primary["agreement_with_student_fp32"],
            g.min_agreement,
            ">=",
        ),
        check(
            f"accuracy_drop_pts_{cfg.verify.primary}",
            round(100 * (fp32["accuracy"] - primary["accuracy"]), 3),
            g.max_accuracy_drop,
            "<=",
        ),
    ]
    pre_qat = rows.get("student_fp32_pre_qat")
    if pre_qat is not None:  # QAT fine-tuning + INT8 together must not cost accuracy either
        drop = round(100 * (pre_qat["accuracy"] - primary["accuracy"]), 3)
        out.append(
            check(f"accuracy_drop_pts_{cfg.verify.primary}_vs_pre_qat", drop, g.max_accuracy_drop, "<=")
        )
    if g.min_accuracy > 0:
        out.append(check(f"accuracy_{cfg.verify.primary}", primary["accuracy"], g.min_accuracy, ">="))
    return out + budget_gates(cfg, budget)


def holdout_gates(cfg: BuildConfig, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Gates on the real holdout: device-vs-float agreement (no labels involved) and, when set, the
    device's mean per-keyword accuracy."""
    name = cfg.verify.primary
    primary = rows[RUNTIME_ROWS[name]]
    g = cfg.gates
    agreement = g.min_agreement if g.holdout_min_agreement is None else g.holdout_min_agreement
    out = [
        check(
            f"holdout_agreement_{name}_vs_student_fp32",
            primary["agreement_with_student_fp32"],
            agreement,
            ">=",
        )
    ]
    if g.holdout_min_accuracy > 0:
        value = primary.get("keyword_accuracy")
        out.append(check(f"holdout_keyword_accuracy_{name}", value or 0.0, g.holdout_min_accuracy, ">="))
    return out


def parity_rows(cfg: BuildConfig, logits: dict[str, np.ndarray], y: np.ndarray) -> dict[str, dict[str, Any]]:
    """Every runtime's metrics; the fake-quant model is the reference for the exported runtimes' logits."""
    s_pred, t_pred = logits["student_fp32"].argmax(1), logits["teacher_fp32"].argmax(1)
    qat = logits["student_qat"]
    return {
        name: row(values, y, cfg.classes, s_pred, t_pred, reference_logits=None if "fp32" in name else qat)
        for name, values in logits.items()
    }


def with_section(parity: dict[str, Any], name: str, section: dict[str, Any]) -> dict[str, Any]:
    """The build's parity record with a section measured on other audio (`holdout`: the user's real
    recordings; `real_unlabeled`: the built-in pool; `stream`: long recordings through the firmware's chain);
    the section's gates join the build's verdict."""
    gate_list = parity["gates"] + section["gates"]
    return {**parity, name: section, "gates": gate_list, "passed": all(x["passed"] for x in gate_list)}


def parity_report(
    cfg: BuildConfig, rows: dict[str, dict[str, Any]], budget: Budget, n_clips: int
) -> dict[str, Any]:
    gate_list = gates(cfg, rows, budget)
    return {
        "schema": SCHEMA,
        "target": cfg.target,
        "primary": RUNTIME_ROWS[cfg.verify.primary],
        "classes": cfg.classes,
        "n_clips": n_clips,
        "rows": rows,
        "budget": budget.as_dict(cfg.budget.arena_headroom),
        "gates": gate_list,
        "passed": all(x["passed"] for x in gate_list),
    }
