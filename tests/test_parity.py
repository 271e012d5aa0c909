"""Parity metrics and gates on hand-made logits, where the right answer is known."""

from __future__ import annotations

import numpy as np

from edgekd.config import load_config
from edgekd.report.markdown import report_md, summary
from edgekd.verify.budget import Budget
from edgekd.verify.parity import SCHEMA, confusion, macro_f1, parity_report, row


def _onehot(pred: list[int], n: int = 12) -> np.ndarray:
    out = np.zeros((len(pred), n), np.float32)
    out[np.arange(len(pred)), pred] = 5.0
    return out


def test_confusion_and_macro_f1() -> None:
    cm = confusion(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
    assert cm.tolist() == [[1, 1], [0, 2]]
    # class 0: p=1, r=.5, f1=2/3; class 1: p=2/3, r=1, f1=.8
    assert abs(macro_f1(cm) - (2 / 3 + 0.8) / 2) < 1e-9


def test_row_agreement_and_logit_difference() -> None:
    y = np.array([0, 1, 2, 3])
    ref = _onehot([0, 1, 2, 2])
    r = row(
        _onehot([0, 1, 2, 3]),
        y,
        [str(i) for i in range(12)],
        np.array([0, 1, 2, 2]),
        np.array([0, 1, 1, 3]),
        reference_logits=ref,
    )
    assert r["accuracy"] == 1.0
    assert r["agreement_with_student_fp32"] == 0.75 and r["agreement_with_teacher"] == 0.75
    assert r["max_abs_logit_diff"] == 5.0


def _report(
    int8_pred: list[int], model_bytes: int = 30_000, arena: int = 30_000, ops: list[str] | None = None
):
    cfg = load_config("esp32s3")
    y = np.arange(200) % 12
    good = _onehot(list(y))
    rows = {
        name: row(good, y, cfg.classes, y, y, good)
        for name in ("teacher_fp32", "student_fp32", "student_qat")
    }
    rows["student_int8_tflm"] = row(_onehot(int8_pred), y, cfg.classes, y, y, good)
    budget = Budget(
        model_bytes, arena, ops or ["CONV_2D", "FULLY_CONNECTED"], 1000, True, [], 1.0, "estimate"
    )
    return parity_report(cfg, rows, budget, len(y))


def test_all_gates_pass_for_a_faithful_int8_model() -> None:
    rep = _report(list(np.arange(200) % 12))
    assert rep["schema"] == SCHEMA and rep["passed"]
    names = {g["name"] for g in rep["gates"]}
    assert {
        "agreement_tflm_vs_student_fp32",
        "accuracy_drop_pts_tflm",
        "model_bytes",
        "arena_bytes_with_headroom",
        "ops_supported",
        "fully_int8",
    } <= names


def test_gates_fail_and_name_what_failed() -> None:
    pred = list(np.arange(200) % 12)
    pred[:3] = [(p + 1) % 12 for p in pred[:3]]  # 3 of 200 flipped: 98.5% agreement < 99%, drop 1.5 pt > 0.5
    rep = _report(pred, model_bytes=70_000, arena=46_000, ops=["CONV_2D", "LSTM"])
    failed = {g["name"] for g in rep["gates"] if not g["passed"]}
    assert failed == {
        "agreement_tflm_vs_student_fp32",
        "accuracy_drop_pts_tflm",
        "model_bytes",
        "arena_bytes_with_headroom",
        "ops_supported",
    }
    assert not rep["passed"]
    text = summary(rep)
    assert "result: FAIL: agreement_tflm_vs_student_fp32, accuracy_drop_pts_tflm, model_bytes" in text
    ops_gate = next(g for g in rep["gates"] if g["name"] == "ops_supported")
    assert ops_gate["value"] == ["LSTM"]


def test_report_renders_every_section() -> None:
    rep = _report(list(np.arange(200) % 12))
    md = report_md(
        rep,
        {
            "recipe": "kws12",
            "teacher": {"name": "t", "accuracy": {"test": 0.9}},
            "timings": [{"name": "corpus", "seconds": 1.0, "peak_mb": 10.0, "cached": False}],
        },
    )
    for heading in (
        "## Parity on held-out clips",
        "## Gates",
        "## Budget",
        "## Per-class accuracy",
        "## Confusion matrix",
        "## Teacher",
        "## Stages",
    ):
        assert heading in md
    assert "student_int8_tflm (device)" in md
