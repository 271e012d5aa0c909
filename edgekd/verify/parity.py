"""Parity: the same held-out clips through every runtime, compared, and checked against the target's gates.

`parity.json` (schema `edgekd.parity/2`) is the machine-readable record users diff between releases:

    schema, target, primary, classes, n_clips, evidence.{inputs, clips, views_per_clip},
    rows.<runtime>.{accuracy, macro_f1, keyword_accuracy, agreement_with_student_fp32,
                    agreement_with_teacher, max_abs_logit_diff, per_class_accuracy, confusion}
    budget.{model_bytes, arena_bytes, arena_bytes_with_headroom, ops, macs, latency_ms, fully_int8}
    gates[].{name, value, limit, op, passed, n, unit, interval, rule, detail}, passed
    holdout, real_unlabeled, stream: sections measured on other audio (`with_section`); `stream` (new in
    /2) holds the shipped operating point, FA/h on real speech and recall in running audio.

Runtimes: teacher_fp32; student_fp32_pre_qat (the float student before quantization-aware fine-tuning);
student_fp32 (the shipped weights in float32: the QAT graph with quantizers off — what the INT8 artifacts
must reproduce, so the agreement and drop gates measure conversion); student_qat (fake-quant torch);
student_int8_onnx, student_int8_litert (reference kernels) and student_int8_tflm (TFLite Micro on the
host). A second drop gate compares the device runtime with the pre-QAT float student, so QAT + INT8
together cannot cost accuracy unnoticed. Every runtime a target ships (`verify.runtimes`) has its own
agreement gate: the primary one alone once let an INT8 ONNX that agreed on 90 % of real clips ship.
`max_abs_logit_diff` of an INT8 runtime is measured against the fake-quant model it was converted from.

Statistical gates (agreement, accuracy drops, accuracy floors; issue 13) carry their sample size `n`, a
95 % `interval` (`gates.confidence`) and `rule: interval`: they fail only when the interval lies beyond
the limit, so one clip in 91 cannot fail a build while a conversion defect fails it on thousands of
inputs. Agreement and drops are decided on the clips *and* `verify.test_views` augmented views of each
(`Evidence`); the accuracy drops are paired (exact McNemar). Budget gates are measurements: `n` null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.config import BuildConfig
from edgekd.stats import clopper_pearson, inputs_to_decide, mcnemar_exact, mean_class_interval, paired_drop
from edgekd.verify.budget import Budget, budget_gates, check

SCHEMA = "edgekd.parity/2"
READABLE_SCHEMAS = ("edgekd.parity/1", SCHEMA)  # /1 is /2 without the `stream` section
WAKEWORD_SCHEMA = "edgekd.wakeword/1"  # parity.json of a wake-word build (edgekd.stages.wakeword)
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


@dataclass(frozen=True)
class Evidence:
    """Paired per-input predictions behind the gates: the held-out clips and, after them, augmented views
    of each (`verify.test_views`), every runtime on the same inputs.

    Agreement needs no labels and the drop gates compare paired predictions, so both are decided on
    thousands of inputs the model never trained on rather than on the clean clips alone; the views keep
    their clip's label. `margin` is the float student's gap between its two best logits per input and
    `step` the int8 output's quantization step: where the gap is a few steps, int8 rounding alone can
    flip the argmax (a near-tie), which is noise, not a conversion defect.
    """

    y: np.ndarray
    pred: dict[str, np.ndarray]
    margin: np.ndarray
    step: float | None
    n_clips: int
    views_per_clip: int = 0
    what: str = "held-out clips"

    @classmethod
    def of(
        cls, logits: dict[str, np.ndarray], y: np.ndarray, step: float | None, what: str = "held-out clips"
    ) -> Evidence:
        pred = {k: v.argmax(1) for k, v in logits.items()}
        return cls(np.asarray(y), pred, top2_margin(logits["student_fp32"]), step, len(y), what=what)

    def plus_views(self, logits: dict[str, np.ndarray], y: np.ndarray, views_per_clip: int) -> Evidence:
        """These inputs and views of them: the rows both have (views carry only the student rows)."""
        pred = {k: np.concatenate([p, logits[k].argmax(1)]) for k, p in self.pred.items() if k in logits}
        margin = np.concatenate([self.margin, top2_margin(logits["student_fp32"])])
        return Evidence(
            np.concatenate([self.y, y]), pred, margin, self.step, self.n_clips, views_per_clip, self.what
        )

    @property
    def n(self) -> int:
        return len(self.y)

    def describe(self) -> str:
        views = f" and {self.views_per_clip} augmented views of each" if self.views_per_clip else ""
        return f"{self.n_clips:,} {self.what}{views}"


def top2_margin(logits: np.ndarray) -> np.ndarray:
    top = np.sort(logits, axis=1)
    return top[:, -1] - top[:, -2] if logits.shape[1] > 1 else np.full(len(logits), np.inf)


def stat_gate(
    name: str,
    value: float,
    limit: float,
    op: str,
    n: int,
    interval: tuple[float, float],
    detail: str,
    confidence: float,
    unit: str = "inputs",
    meaning: str = "a real defect, not noise",
) -> dict[str, Any]:
    """A gate decided on its interval: `>=` fails only when even the interval's high end is below the
    limit, `<=` only when its low end is above: the evidence shows the limit crossed, not noise."""
    passed = interval[1] >= limit if op == ">=" else interval[0] <= limit
    crossed = value < limit if op == ">=" else value > limit
    if not passed:
        verdict = f"beyond the limit at {100 * confidence:g} % confidence: {meaning}"
    elif crossed:
        verdict = f"past the limit, but {n:,} {unit} cannot tell that from noise at {100 * confidence:g} %"
    else:
        verdict = "within the limit"
    return {
        **check(name, value, limit, op),
        "passed": bool(passed),
        "n": n,
        "unit": unit,
        "interval": [interval[0], interval[1]],
        "rule": "interval",
        "detail": f"{detail}; {verdict}",
    }


def agreement_gate(
    name: str, ev: Evidence, runtime: str, reference: str, limit: float, tie_steps: float, confidence: float
) -> dict[str, Any]:
    """Argmax agreement of `runtime` with `reference` (no labels involved), decided on the inputs the
    float student does not call a near-tie: its two best logits more than `tie_steps` int8 output steps
    apart. Near-ties are counted and reported; every flip among them could be rounding alone."""
    same = ev.pred[runtime] == ev.pred[reference]
    ties = ev.margin <= tie_steps * ev.step if ev.step and tie_steps else np.zeros(ev.n, bool)
    decisive = ~ties
    n, k = int(decisive.sum()), int(same[decisive].sum())
    differ = int((~same).sum())
    detail = f"{differ:,} of {ev.n:,} inputs differ ({ev.describe()})"
    if ties.any():
        detail += (
            f", {int((~same & ties).sum()):,} of them near-ties (float top-2 within {tie_steps:g} output "
            f"steps, {ev.step * tie_steps:.3g} logits); {n - k:,} of {n:,} decisive inputs differ"
        )
    gate = stat_gate(
        name, k / max(n, 1), limit, ">=", n, clopper_pearson(k, n, confidence), detail, confidence
    )
    return {**gate, "all_inputs": {"n": ev.n, "agree": ev.n - differ}, "near_ties": int(ties.sum())}


def drop_gate(
    name: str, ev: Evidence, reference: str, runtime: str, limit_pts: float, confidence: float
) -> dict[str, Any]:
    """Accuracy drop from `reference` to `runtime` in points, paired on the same inputs (exact McNemar)."""
    ref_ok, run_ok = ev.pred[reference] == ev.y, ev.pred[runtime] == ev.y
    b, c = int((ref_ok & ~run_ok).sum()), int((~ref_ok & run_ok).sum())
    drop, low, high = paired_drop(b, c, ev.n, confidence)
    detail = (
        f"paired on {ev.n:,} inputs ({ev.describe()}): {b} right in {reference} and wrong on {runtime}, "
        f"{c} the reverse; McNemar p = {mcnemar_exact(b, c):.3g}"
    )
    pts = (round(100 * drop, 3), 100 * low, 100 * high)
    gate = stat_gate(name, pts[0], limit_pts, "<=", ev.n, pts[1:], detail, confidence)
    return {**gate, "discordant": [b, c]}


def accuracy_gate(name: str, cm: list[list[int]], limit: float, confidence: float) -> dict[str, Any]:
    correct, n = int(np.trace(np.asarray(cm))), int(np.sum(cm))
    interval = clopper_pearson(correct, n, confidence)
    detail = f"{correct:,} of {n:,} clips right"
    meaning = "the model is below the floor, not unlucky"
    return stat_gate(
        name, correct / max(n, 1), limit, ">=", n, interval, detail, confidence, "clips", meaning
    )


def agreement_gates(cfg: BuildConfig, prefix: str, ev: Evidence, limit: float) -> list[dict[str, Any]]:
    """`{prefix}agreement_<runtime>_vs_student_fp32` for every runtime the target ships (`verify.runtimes`,
    the primary first) that `ev` holds: each artifact a user may run must reproduce the shipped weights."""
    g, primary = cfg.gates, cfg.verify.primary
    shipped = [primary] + [r for r in cfg.verify.runtimes if r != primary]
    return [
        agreement_gate(
            f"{prefix}agreement_{name}_vs_student_fp32",
            ev,
            RUNTIME_ROWS[name],
            "student_fp32",
            limit,
            g.tie_steps,
            g.confidence,
        )
        for name in shipped
        if RUNTIME_ROWS[name] in ev.pred
    ]


def gates(
    cfg: BuildConfig, rows: dict[str, dict[str, Any]], ev: Evidence, budget: Budget
) -> list[dict[str, Any]]:
    """The target's gates, each with its value, limit, sample size, interval and verdict."""
    name, g = cfg.verify.primary, cfg.gates
    device = RUNTIME_ROWS[name]
    out = [
        *agreement_gates(cfg, "", ev, g.min_agreement),
        drop_gate(f"accuracy_drop_pts_{name}", ev, "student_fp32", device, g.max_accuracy_drop, g.confidence),
    ]
    if "student_fp32_pre_qat" in ev.pred:  # QAT fine-tuning + INT8 together must not cost accuracy either
        out.append(
            drop_gate(
                f"accuracy_drop_pts_{name}_vs_pre_qat",
                ev,
                "student_fp32_pre_qat",
                device,
                g.max_accuracy_drop,
                g.confidence,
            )
        )
    if g.min_accuracy > 0:
        out.append(accuracy_gate(f"accuracy_{name}", rows[device]["confusion"], g.min_accuracy, g.confidence))
    return out + budget_gates(cfg, budget)


def holdout_gates(cfg: BuildConfig, rows: dict[str, dict[str, Any]], ev: Evidence) -> list[dict[str, Any]]:
    """Gates on the real holdout: every shipped runtime's agreement with the float student (no labels
    involved) and, when set, the device's mean per-keyword accuracy, each decided on its interval."""
    g = cfg.gates
    agreement = g.min_agreement if g.holdout_min_agreement is None else g.holdout_min_agreement
    return agreement_gates(cfg, "holdout_", ev, agreement) + real_floor_gates(cfg, rows)


def real_floor_gates(cfg: BuildConfig, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The accuracy floor for real recordings (`gates.holdout_min_accuracy`; none when 0): the device's
    mean per-keyword accuracy, decided on its interval. Real folders get this floor, never the synthetic
    test split's `min_accuracy`."""
    name, g = cfg.verify.primary, cfg.gates
    if g.holdout_min_accuracy <= 0:
        return []
    cm = rows[RUNTIME_ROWS[name]]["confusion"]
    mean = mean_class_interval(cm, cfg.classes, cfg.labels)
    value, low, high = mean if mean else (0.0, 0.0, 0.0)
    keywords = int(sum(np.sum(cm[cfg.classes.index(k)]) for k in cfg.labels))
    return [
        stat_gate(
            f"holdout_keyword_accuracy_{name}",
            value,
            g.holdout_min_accuracy,
            ">=",
            keywords,
            (low, high),
            f"mean of the per-keyword accuracies on {keywords:,} keyword clips",
            g.confidence,
            "keyword clips",
            "the model is below the floor, not unlucky",
        )
    ]


def parity_rows(cfg: BuildConfig, logits: dict[str, np.ndarray], y: np.ndarray) -> dict[str, dict[str, Any]]:
    """Every runtime's metrics; the fake-quant model is the reference for the exported runtimes' logits.
    `keyword_accuracy` is the mean of the keywords' per-class accuracies: the figure the field quotes for
    command sets, which neither `_unknown_`-heavy folders nor class imbalance can inflate."""
    s_pred, t_pred = logits["student_fp32"].argmax(1), logits["teacher_fp32"].argmax(1)
    qat = logits["student_qat"]
    rows = {
        name: row(values, y, cfg.classes, s_pred, t_pred, reference_logits=None if "fp32" in name else qat)
        for name, values in logits.items()
    }
    for r in rows.values():
        present = [v for v in (r["per_class_accuracy"].get(k) for k in cfg.labels) if v is not None]
        r["keyword_accuracy"] = float(np.mean(present)) if present else None
    return rows


def with_section(parity: dict[str, Any], name: str, section: dict[str, Any]) -> dict[str, Any]:
    """The build's parity record with a section measured on other audio (`holdout`: the user's real
    recordings; `real_unlabeled`: the built-in pool; `stream`: long recordings through the firmware's chain);
    the section's gates join the build's verdict."""
    gate_list = parity["gates"] + section["gates"]
    return {**parity, name: section, "gates": gate_list, "passed": all(x["passed"] for x in gate_list)}


def parity_report(
    cfg: BuildConfig,
    logits: dict[str, np.ndarray],
    y: np.ndarray,
    budget: Budget,
    evidence: Evidence | None = None,
    step: float | None = None,
) -> dict[str, Any]:
    """`parity.json` of labelled clips: every runtime's row on the clips, and the gates decided on
    `evidence` (default: the clips alone, `step` the int8 output step; the build adds augmented views)."""
    rows = parity_rows(cfg, logits, y)
    ev = evidence or Evidence.of(logits, y, step)
    gate_list = gates(cfg, rows, ev, budget)
    g = cfg.gates
    needed = inputs_to_decide(g.min_agreement, g.max_accuracy_drop / 100, g.confidence)
    return {
        "schema": SCHEMA,
        "target": cfg.target,
        "primary": RUNTIME_ROWS[cfg.verify.primary],
        "classes": cfg.classes,
        "n_clips": len(y),
        # `needed`: inputs at which a defect twice the limits cannot pass as noise (edgekd.stats)
        "evidence": {
            "inputs": ev.n,
            "clips": ev.n_clips,
            "views_per_clip": ev.views_per_clip,
            "needed": needed,
        },
        "rows": rows,
        "budget": budget.as_dict(cfg.budget.arena_headroom),
        "gates": gate_list,
        "passed": all(x["passed"] for x in gate_list),
    }


def stream_gates(cfg: BuildConfig, negatives: dict[str, Any], recall: float | None) -> list[dict[str, Any]]:
    """FA/h fails when even its 95 % interval's low end is above the limit (the audio shows a rate too
    high, not one it cannot rule out); recall, when a minimum is set, on the point estimate."""
    g = cfg.gates
    out = []
    if g.max_fa_per_hour is not None:
        low, high = negatives["fa_per_hour_interval"]
        gate = check("stream_fa_per_hour", round(negatives["fa_per_hour"], 3), g.max_fa_per_hour, "<=")
        hours = negatives["hours"]
        detail = (
            f"{negatives['false_accepts']} false accepts in {hours:.2f} h of real speech without keywords"
        )
        out.append(
            {
                **gate,
                "passed": low <= g.max_fa_per_hour,
                "n": round(hours, 3),
                "unit": "hours",
                "interval": [low, high],
                "rule": "interval",
                "hours": hours,
                "detail": detail,
            }
        )
    if g.min_stream_recall > 0:
        out.append(check("stream_recall", recall or 0.0, g.min_stream_recall, ">="))
    return out
