"""Parity metrics and gates on hand-made logits, where the right answer is known, and on a real student
with and without an injected conversion defect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import read_tflite, write_tflite

from edgekd.config import load_config
from edgekd.report.markdown import report_md, summary
from edgekd.verify.budget import Budget
from edgekd.verify.parity import SCHEMA, confusion, macro_f1, parity_report, real_floor_gates, row


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
    y = np.arange(len(int8_pred)) % 12
    good = _onehot(list(y))
    logits = {name: good for name in ("teacher_fp32", "student_fp32", "student_qat")}
    logits["student_int8_tflm"] = _onehot(int8_pred)
    budget = Budget(
        model_bytes, arena, ops or ["CONV_2D", "FULLY_CONNECTED"], 1000, True, [], 1.0, "estimate"
    )
    return parity_report(cfg, logits, y, budget)


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
    pred[:20] = [(p + 1) % 12 for p in pred[:20]]  # 20 of 200 flipped: 90 % agreement, a 10-point drop
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
    agree = next(g for g in rep["gates"] if g["name"] == "agreement_tflm_vs_student_fp32")
    assert agree["n"] == 200 and agree["interval"][1] < 0.99  # the evidence, not one clip, fails it
    assert "20 of 200 inputs differ" in agree["detail"] and "a real defect" in agree["detail"]
    assert "20 of 200 inputs differ" in text


def test_every_shipped_runtime_is_gated_not_only_the_device() -> None:
    """An INT8 ONNX that disagrees with its own weights fails the build even when TFLite Micro is faithful
    (it happened: 90 % agreement on real clips, reported and not gated); a runtime the target does not
    ship gets no gate."""
    cfg = load_config("esp32s3")
    y = np.arange(400) % 12
    good = _onehot(list(y))
    onnx = list(y)
    onnx[:40] = [(p + 1) % 12 for p in onnx[:40]]
    logits = {n: good for n in ("teacher_fp32", "student_fp32", "student_qat", "student_int8_tflm")}
    logits |= {"student_int8_litert": good, "student_int8_onnx": _onehot(onnx)}
    budget = Budget(30_000, 30_000, ["CONV_2D"], 1000, True, [], 1.0, "estimate")
    rep = parity_report(cfg, logits, y, budget)
    verdicts = {g["name"]: g["passed"] for g in rep["gates"] if "agreement" in g["name"]}
    assert verdicts == {
        "agreement_tflm_vs_student_fp32": True,
        "agreement_litert_vs_student_fp32": True,
        "agreement_onnx_vs_student_fp32": False,
    }
    assert not rep["passed"] and "FAIL: agreement_onnx_vs_student_fp32" in summary(rep)
    tflm_only = cfg.model_copy(update={"verify": cfg.verify.model_copy(update={"runtimes": ["tflm"]})})
    assert parity_report(tflm_only, logits, y, budget)["passed"]


def test_one_flip_in_91_cannot_fail_a_gate_and_the_report_says_why() -> None:
    pred = list(np.arange(91) % 12)
    pred[5] = 0  # one clip of 91: 98.9 % agreement and a 1.1-point "drop", both below the fixed bars
    rep = _report(pred)
    assert rep["passed"]
    gates = {g["name"]: g for g in rep["gates"]}
    agree, drop = gates["agreement_tflm_vs_student_fp32"], gates["accuracy_drop_pts_tflm"]
    assert agree["value"] < 0.99 and agree["n"] == 91 and agree["rule"] == "interval"
    assert drop["value"] == pytest.approx(100 / 91, abs=1e-3) and drop["discordant"] == [1, 0]
    assert drop["interval"][0] < 0 < drop["interval"][1]
    assert "1 of 91 inputs differ" in agree["detail"]
    assert "cannot tell that from noise at 95 %" in drop["detail"]
    # and the report asks for the evidence a pass would need
    assert rep["evidence"] == {"inputs": 91, "clips": 91, "views_per_clip": 0, "needed": 1269}
    assert "Too little evidence" in summary(rep) and "Add at least 1,178 clips" in summary(rep)
    md = report_md(rep, {"recipe": "kws12"})
    assert "| 91 inputs |" in md and "McNemar p = 1" in md


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


def _mis_scaled_output(src: Path, dst: Path, factor: float) -> None:
    """The same model with its output tensor's quantization scale multiplied by `factor`: the kind of
    conversion defect (a wrong requantization of the last layer) the gates exist to catch."""
    model = read_tflite(src)
    graph = model.subgraphs[0]
    quant = graph.tensors[graph.outputs[0]].quantization
    quant.scale = [s * factor for s in quant.scale]
    write_tflite(model, dst)


def test_a_conversion_defect_fails_the_gates_by_name_and_a_faithful_model_passes(
    esp32s3_student: Path, tmp_path: Path
) -> None:
    from _models import realistic_features

    from edgekd.verify.runners import TFLMRunner
    from edgekd.verify.scoring import student_logits

    cfg = load_config("esp32s3")
    x = realistic_features(2000, seed=77).numpy()
    logits = student_logits(cfg, esp32s3_student / "weights", x)
    # a student QAT-trained for 3 steps has many near-ties; the inputs it decides by 0.3 logits or more
    # (~450) stand in for a trained model's test split
    top2 = np.sort(logits["student_fp32"], axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 0.3
    x, logits = x[decided], {k: v[decided] for k, v in logits.items()}
    logits["teacher_fp32"] = logits["student_fp32"]
    y = logits["student_fp32"].argmax(1)  # labels the float model gets right: any loss is the device's
    budget = Budget(30_000, 30_000, ["CONV_2D"], 1000, True, [], 1.0, "estimate")
    _mis_scaled_output(esp32s3_student / "model.tflite", tmp_path / "bad.tflite", 1 / 64)
    verdicts = {}
    for name, path in (("faithful", esp32s3_student / "model.tflite"), ("defect", tmp_path / "bad.tflite")):
        rep = parity_report(cfg, {**logits, "student_int8_tflm": TFLMRunner(path).predict(x)}, y, budget)
        verdicts[name] = {g["name"]: g for g in rep["gates"]}
    good, bad = verdicts["faithful"], verdicts["defect"]
    assert good["agreement_tflm_vs_student_fp32"]["passed"] and good["accuracy_drop_pts_tflm"]["passed"]
    agree = bad["agreement_tflm_vs_student_fp32"]
    assert not agree["passed"] and agree["n"] == len(x) > 300 and agree["interval"][1] < 0.99
    assert "a real defect, not noise" in agree["detail"]
    assert not bad["accuracy_drop_pts_tflm"]["passed"]


def test_flips_among_near_ties_are_counted_but_only_decisive_inputs_decide_agreement() -> None:
    cfg = load_config("esp32s3")
    y = np.arange(600) % 12
    fp32 = _onehot(list(y))  # every input decided by 5 logits
    fp32[np.arange(30), (y[:30] + 1) % 12] = 4.9  # 30 near-ties: 0.1 logits apart, under 8 steps of 0.07
    budget = Budget(30_000, 30_000, ["CONV_2D"], 1000, True, [], 1.0, "estimate")

    def agreement(int8: np.ndarray) -> dict:
        logits = {"teacher_fp32": fp32, "student_fp32": fp32, "student_qat": fp32, "student_int8_tflm": int8}
        rep = parity_report(cfg, logits, y, budget, step=0.07)
        return next(g for g in rep["gates"] if g["name"] == "agreement_tflm_vs_student_fp32")

    rounding = fp32.copy()
    rounding[np.arange(20), (y[:20] + 1) % 12] = 5.1  # int8 rounding tips 20 of the near-ties over
    gate = agreement(rounding)
    assert gate["passed"] and gate["value"] == 1.0 and gate["n"] == 570 and gate["near_ties"] == 30
    assert gate["all_inputs"] == {"n": 600, "agree": 580}
    assert "20 of 600 inputs differ" in gate["detail"] and "20 of them near-ties" in gate["detail"]
    defect = rounding.copy()
    defect[100:120] = np.roll(defect[100:120], 1, axis=1)  # 20 decisive inputs flipped: not rounding
    gate = agreement(defect)
    assert not gate["passed"] and "20 of 570 decisive inputs differ" in gate["detail"]


def test_real_recordings_get_the_real_floor_not_the_synthetic_one() -> None:
    """`edgekd eval` and `--holdout` score real folders: `gates.holdout_min_accuracy` is their floor (off
    by default), decided on the mean per-keyword accuracy's interval; `min_accuracy` is the synthetic
    test split's."""
    y = np.arange(240) % 12
    pred = np.where(np.arange(240) // 12 % 4 == 0, 10, y)  # a quarter of every class called _unknown_
    logits = {name: _onehot(list(y)) for name in ("teacher_fp32", "student_fp32", "student_qat")}
    logits["student_int8_tflm"] = _onehot(list(pred))
    cfg = load_config("esp32s3")
    rows = parity_report(cfg, logits, y, Budget(1, 1, ["CONV_2D"], 1, True, [], 1.0, "estimate"))["rows"]
    assert cfg.gates.min_accuracy == 0.9 and real_floor_gates(cfg, rows) == []
    strict = load_config("esp32s3", overrides=["gates.holdout_min_accuracy=0.95"])
    lenient = load_config("esp32s3", overrides=["gates.holdout_min_accuracy=0.7"])
    (fail,), (ok,) = real_floor_gates(strict, rows), real_floor_gates(lenient, rows)
    assert fail["name"] == ok["name"] == "holdout_keyword_accuracy_tflm"
    assert fail["value"] == ok["value"] == 0.75 and not fail["passed"] and ok["passed"]
    assert fail["n"] == 200  # the ten keywords' clips
