"""Human-readable views of `parity.json`: the terminal summary and `report.md`.

Both are rendered from the parity record alone (plus the manifest for context), so the report,
the terminal table and `edgekd eval` can never disagree about a figure.
"""

from __future__ import annotations

from typing import Any

from edgekd.fmt import kb, num, pct, table
from edgekd.report.stream_view import operating_point_line, stream_figures, stream_md

ROW_ORDER = [
    "teacher_fp32",
    "student_plain_fp32",
    "student_fp32_pre_qat",
    "student_fp32",
    "student_qat",
    "student_int8_onnx",
    "student_int8_litert",
    "student_int8_tflm",
]


STAGE_HEADERS = ["stage", "wall time", "peak RSS"]


def stage_rows(timings: list[dict[str, Any]]) -> list[list[str]]:
    """Per-stage wall time and peak memory rows, as the report, report.html and the bench show them."""
    return [
        [
            t["name"],
            "cached" if t["cached"] else f"{t['seconds']:.1f} s",
            "—" if t["cached"] else f"{t['peak_mb']:.0f} MB",
        ]
        for t in timings
    ]


def runtime_table(parity: dict[str, Any]) -> str:
    """One row per runtime; a "keywords" column (mean per-keyword accuracy) where the rows carry it."""
    keywords = any("keyword_accuracy" in r for r in parity["rows"].values())
    rows = []
    for name in ROW_ORDER:
        r = parity["rows"].get(name)
        if r is None:
            continue
        marker = " (device)" if name == parity["primary"] else ""
        diff = r.get("max_abs_logit_diff")
        rows.append(
            [
                name + marker,
                *([pct(r.get("keyword_accuracy"))] if keywords else []),
                pct(r["accuracy"]),
                pct(r["macro_f1"]),
                pct(r["agreement_with_student_fp32"]),
                pct(r["agreement_with_teacher"]),
                num(diff, ".4f"),
            ]
        )
    headers = ["runtime", *(["keywords"] if keywords else []), "accuracy", "macro-F1", "agree fp32"]
    return table([*headers, "agree teacher", "max |Δlogit| vs QAT"], rows)


def real_unlabeled_lines(parity: dict[str, Any]) -> list[str]:
    """INT8-vs-float agreement on real unlabelled speech (empty when the build did not measure it)."""
    r = parity.get("real_unlabeled")
    if not r:
        return []
    cells = ", ".join(f"{k} {pct(v)}" for k, v in r["agreement_with_student_fp32"].items())
    return [
        f"Agreement with student_fp32 on {r['n_windows']} windows of real speech ({r['source']}): {cells}",
        "",
    ]


def skipped_lines(section: dict[str, Any] | None, shown: int = 5) -> list[str]:
    """What reading a folder skipped: how many files, why, and the first few names (empty if none)."""
    skipped = (section or {}).get("skipped") or {}
    if not skipped:
        return []
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
    files = (section or {}).get("skipped_files") or []
    lines = [f"Skipped {sum(skipped.values())} files of `{section['path']}` ({why}); not scored:"]
    lines += [f"- {f}" for f in files[:shown]]
    if sum(skipped.values()) > min(len(files), shown):
        lines.append(f"- … (`--json` lists up to {len(files)}; `--strict` in a build fails on them instead)")
    return [*lines, ""]


def holdout_lines(parity: dict[str, Any]) -> list[str]:
    """The real-holdout section: every runtime on the user's own recordings (empty without one)."""
    h = parity.get("holdout")
    if not h:
        return []
    return [
        f"Real holdout `{h['path']}`: {h['n_clips']} clips never trained on "
        "(keywords = mean of the per-keyword accuracies).",
        "",
        runtime_table({"rows": h["rows"], "primary": parity["primary"]}),
        "",
        *skipped_lines(h),
    ]


def stream_lines(parity: dict[str, Any]) -> list[str]:
    """The streaming check in a few lines (empty when the build did not run it)."""
    section = parity.get("stream")
    if not section:
        return []
    return [
        operating_point_line(section),
        *(f"- {what}: {figure}" for what, figure in stream_figures(section)),
        "",
    ]


def show_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(map(str, v)) if len(v) <= 3 else f"{len(v)} ops"
    return str(v)


def show_interval(gate: dict[str, Any]) -> str:
    """A gate's interval in its own unit: points for drops, per hour for false accepts, else percent."""
    if not gate.get("interval"):
        return "—"
    lo, hi = gate["interval"]
    if gate.get("unit") == "hours":
        return f"[{lo:.2f}, {hi:.2f}] /h"
    if "drop_pts" in gate["name"]:
        return f"[{lo:.2f}, {hi:.2f}] pt"
    return f"[{100 * lo:.2f}, {100 * hi:.2f}] %"


def gate_rows(parity: dict[str, Any]) -> list[list[str]]:
    """gate, value, limit, n, interval: the cells both report formats show (result added by each)."""
    return [
        [
            g["name"],
            show_value(g["value"]),
            f"{g.get('op', '')} {show_value(g['limit'])}".strip(),
            "—" if g.get("n") is None else f"{g['n']:,} {g.get('unit', '')}".strip(),
            show_interval(g),
        ]
        for g in parity["gates"]
    ]


GATE_HEADERS = ["gate", "value", "limit", "n", "95 % interval"]


def gates_table(parity: dict[str, Any]) -> str:
    rows = [
        [*cells, "PASS" if g["passed"] else "FAIL"]
        for cells, g in zip(gate_rows(parity), parity["gates"], strict=True)
    ]
    return table([*GATE_HEADERS, "result"], rows)


def evidence_line(parity: dict[str, Any]) -> str | None:
    """Says when the gates had too few inputs to catch a defect twice their limits, and what would do."""
    e = parity.get("evidence")
    if not e or e["inputs"] >= e["needed"]:
        return None
    per_clip = 1 + e["views_per_clip"]
    more = -(-(e["needed"] - e["inputs"]) // per_clip)
    return (
        f"Too little evidence: the gates decided on {e['inputs']:,} inputs; a defect twice their limits "
        f"shows only from {e['needed']:,} on. Add at least {more:,} clips to the test split "
        "(more test voices, or more speakers in your folder's test list) so that a pass means something."
    )


def gate_notes(parity: dict[str, Any]) -> list[str]:
    """One line per gate decided on evidence: what it counted and what that shows."""
    notes = [f"- `{g['name']}`: {g['detail']}" for g in parity["gates"] if g.get("detail")]
    line = evidence_line(parity)
    return [*notes, *([f"- {line}"] if line else [])]


def budget_lines(parity: dict[str, Any]) -> str:
    b = parity["budget"]
    lat = "—" if b.get("latency_ms") is None else f"{b['latency_ms']:.2f} ms ({b['latency_source']})"
    return "\n".join(
        [
            f"- model: {kb(b['model_bytes'])} ({b['model_bytes']} B), fully INT8: {b['fully_int8']}",
            f"- tensor arena (TFLite Micro, host): {kb(b['arena_bytes'])}; with headroom: "
            f"{kb(b['arena_bytes_with_headroom'])}",
            f"- ops: {', '.join(b['ops']) or '—'}; MACs/inference: {b['macs']:,}",
            f"- latency: {lat}",
        ]
    )


def summary(parity: dict[str, Any]) -> str:
    """The short table printed at the end of `build` and `eval`."""
    verdict = (
        "PASS"
        if parity["passed"]
        else "FAIL: " + ", ".join(g["name"] for g in parity["gates"] if not g["passed"])
    )
    return "\n".join(
        [
            f"target {parity['target']} — {parity['n_clips']} held-out clips",
            runtime_table(parity),
            "",
            *skipped_lines(parity.get("data")),
            *holdout_lines(parity),
            *real_unlabeled_lines(parity),
            *stream_lines(parity),
            budget_lines(parity),
            "",
            gates_table(parity),
            *gate_notes(parity),
            "",
            f"result: {verdict}",
        ]
    )


def per_class_table(parity: dict[str, Any]) -> str:
    names = [n for n in ROW_ORDER if n in parity["rows"]]
    rows = [
        [c] + [pct(parity["rows"][n]["per_class_accuracy"].get(c)) for n in names] for c in parity["classes"]
    ]
    return table(["class", *names], rows)


def confusion_table(parity: dict[str, Any], runtime: str) -> str:
    cm = parity["rows"][runtime]["confusion"]
    classes = parity["classes"]
    return table(["true \\ pred", *classes], [[c, *cm[i]] for i, c in enumerate(classes)])


def _sched(start: Any, end: Any, kind: str) -> str:
    return (
        f"{start:g}" if end is None or end == start or kind == "constant" else f"{start:g} → {end:g} ({kind})"
    )


def teacher_gate_rule(gate: dict[str, Any]) -> str:
    """What the teacher gate compared with its margin: the high end of the paired interval of teacher -
    plain, or the point difference in builds before stop 45, which recorded no interval."""
    need = f"needs > {gate['margin_pts']:+g} pts"
    if "interval_pts" not in gate:
        return f", {need}"
    low, high = gate["interval_pts"]
    return f", teacher - plain [{low:+.2f}, {high:+.2f}] pts: its high end {need}"


def distill_summary(parity: dict[str, Any], manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """What the teacher is, whether it passed its gate, what distillation gained, and how it trained.

    One list of (label, value) rows for both report.md and report.html.
    """
    t = manifest.get("teacher", {})
    student = manifest.get("student", {})
    acc = t.get("accuracy", {})
    rows = [("teacher", f"{t.get('name')} — {t.get('why')}")]
    rows.append(("teacher accuracy", f"validation {pct(acc.get('validation'))}, test {pct(acc.get('test'))}"))
    gate = student.get("teacher_gate")
    if gate:
        verdict = "PASS" if gate["passed"] else f"FAIL ({gate['mode']}: distilled anyway)"
        rows.append(
            (
                "teacher gate",
                f"{pct(gate['teacher_validation'])} vs plain student "
                f"{pct(gate['plain_student_validation'])} on validation{teacher_gate_rule(gate)}: {verdict}",
            )
        )
    r = parity.get("rows", {})
    if "student_plain_fp32" in r and "student_fp32_pre_qat" in r:
        plain, kd = r["student_plain_fp32"]["accuracy"], r["student_fp32_pre_qat"]["accuracy"]
        rows.append(
            (
                "distillation gain (test, float)",
                f"{100 * (kd - plain):+.2f} pts: {pct(kd)} distilled vs {pct(plain)} without the teacher",
            )
        )
    d = student.get("distill")
    if d and student.get("used_teacher"):
        recipe = [
            f"α {_sched(d['alpha'], d.get('alpha_end'), d['schedule'])}",
            f"T {_sched(d['temperature'], d.get('temperature_end'), d['schedule'])}",
        ]
        if d.get("feature_weight"):
            recipe.append(
                f"feature matching {d['feature_weight']:g}{' fading out' if d['feature_curriculum'] else ''}"
            )
        if d.get("top_k"):
            recipe.append(f"top-{d['top_k']} soft labels")
        if student.get("unlabeled_rows"):
            recipe.append(f"{student['unlabeled_rows']} unlabeled rows (weight {d['unlabeled_weight']:g})")
            if d.get("domain_weight"):
                recipe.append(f"domain-adversarial against them (reversal {d['domain_weight']:g})")
        rows.append(("recipe", ", ".join(recipe)))
    point = student.get("operating_point")
    if point:  # distill.fire_rate: teacher
        rows.append(
            (
                "operating point",
                f"`_unknown_` bias {point['unknown_bias']:+.2f}: the shipped student calls a keyword on "
                f"{pct(point['qat_fire_rate'])} of "
                f"{point['windows']} windows of unlabelled real speech ({point['source']}), its teacher on "
                f"{pct(point['teacher_fire_rate'])}; as trained {pct(point['student_fire_rate'])}",
            )
        )
    fit = student.get("float_fit")
    if fit:
        last = fit.get("last_epoch", {})
        rows.append(
            (
                "float training",
                f"{fit.get('epochs_run')} epochs{' (stopped early)' if fit.get('stopped_early') else ''}, "
                f"best epoch {fit.get('best_epoch')}, {fit.get('skipped_steps', 0)} non-finite steps "
                f"skipped; last epoch: loss {last.get('loss', 0):.3f} = CE {last.get('ce', 0):.3f} / "
                f"KD {last.get('kd', 0):.3f} / feature {last.get('feature', 0):.3f}, "
                f"grad norm {last.get('grad_norm', 0):.2f}"
                " (per step: `tensorboard --logdir logs/tensorboard`)",
            )
        )
    return rows


def report_md(parity: dict[str, Any], manifest: dict[str, Any]) -> str:
    t = manifest.get("teacher", {})
    student = manifest.get("student", {})
    data = manifest.get("data", {})
    parts = [
        f"# edgekd build report — {parity['target']}",
        "",
        f"**Result: {'PASS' if parity['passed'] else 'FAIL'}** · recipe `{manifest.get('recipe')}` · "
        f"student `{student.get('arch')}` ({student.get('params')} params) · "
        f"teacher `{t.get('name')}` · edgekd {manifest.get('edgekd_version')}",
        "",
        "## Parity on held-out clips",
        "",
        f"{parity['n_clips']} clips the model never trained on ({data.get('test_note', 'test split')}). "
        f"`{parity['primary']}` is what the device runs.",
        "",
        runtime_table(parity),
        "",
        *(["## Real holdout", "", *holdout_lines(parity)] if parity.get("holdout") else []),
        *(
            ["## Real speech, unlabelled", "", *real_unlabeled_lines(parity)]
            if parity.get("real_unlabeled")
            else []
        ),
        *(
            ["## Streaming: false accepts and recall in running audio", "", *stream_md(parity["stream"])]
            if parity.get("stream")
            else []
        ),
        "## Gates",
        "",
        "Agreement, drops and accuracy floors are decided on a 95 % interval: a gate fails when the "
        "evidence shows its limit crossed, and says how many inputs it counted.",
        "",
        gates_table(parity),
        "",
        *gate_notes(parity),
        "",
        "## Budget",
        "",
        budget_lines(parity),
        "",
        "## Per-class accuracy",
        "",
        per_class_table(parity),
        "",
        f"## Confusion matrix ({parity['primary']})",
        "",
        confusion_table(parity, parity["primary"]),
        "",
        "## Teacher and distillation",
        "",
        *[f"- {label}: {value}" for label, value in distill_summary(parity, manifest)],
        "",
        "## Data",
        "",
        table(
            ["split", *parity["classes"]],
            [
                [s, *[data.get("summary", {}).get(s, {}).get(c, 0) for c in parity["classes"]]]
                for s in ("train", "validation", "test")
            ],
        ),
        "",
        f"Skipped inputs: {data.get('skipped') or 'none'}",
        "",
        "## Stages",
        "",
        table(STAGE_HEADERS, stage_rows(manifest.get("timings", []))),
        "",
        *([f"OpenMP idle workers: {wait}", ""] if (wait := manifest.get("openmp_wait_policy")) else []),
    ]
    return "\n".join(parts)
