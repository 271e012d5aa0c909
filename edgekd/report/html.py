"""`report.html`: the build report as one self-contained page with plots.

Everything the page needs is inside the file: CSS inline, every plot a base64 PNG drawn with
matplotlib's Agg backend, no script, no font, image or style fetched from anywhere. It opens from
a CI artifact, an e-mail attachment or an air-gapped lab machine exactly as it does locally, and it
is readable without JavaScript (there is none) and with images off (every plot has alt text that
states its content, and the figures behind each plot are also in a table).

Like `report.md` it is rendered from `parity.json` and the manifest, so the two never disagree;
the plots additionally read `logs/training.json` (per-epoch loss components), the per-clip
|INT8 - float| logit differences (`logit_diffs_from_logits` turns `logs/parity_logits.npz` into
them) and, when given, the per-layer comparison of `edgekd.verify.layers.compare_layers`.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edgekd.fmt import kb, num, pct
from edgekd.report.layers import LAYER_HEADERS, LEGEND, layer_cells, worst_sentence
from edgekd.report.markdown import (
    GATE_HEADERS,
    ROW_ORDER,
    STAGE_HEADERS,
    distill_summary,
    gate_notes,
    gate_rows,
    stage_rows,
)
from edgekd.report.stream_view import operating_point_line, stream_figures

DPI = 110
INT8_ROWS = ("student_int8_tflm", "student_int8_litert", "student_int8_onnx")
# One colour per runtime, the same in every plot (Okabe-Ito: distinguishable with colour blindness).
RUNTIME_COLORS = {
    "teacher_fp32": "#7f7f7f",
    "student_plain_fp32": "#bcbd22",
    "student_fp32_pre_qat": "#CC79A7",
    "student_fp32": "#0072B2",
    "student_qat": "#56B4E9",
    "student_int8_onnx": "#E69F00",
    "student_int8_litert": "#009E73",
    "student_int8_tflm": "#D55E00",
}
RUNTIME_LABELS = {
    "teacher_fp32": "teacher (fp32)",
    "student_plain_fp32": "student without teacher (fp32)",
    "student_fp32_pre_qat": "student before QAT (fp32)",
    "student_fp32": "student (fp32, shipped weights)",
    "student_qat": "student (fake-quant)",
    "student_int8_onnx": "INT8 onnxruntime",
    "student_int8_litert": "INT8 LiteRT (ref)",
    "student_int8_tflm": "INT8 TFLite Micro",
}
PASS_COLOR, FAIL_COLOR = "#1a7f37", "#cf222e"

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #ffffff; --panel: #f6f8fa;
        --pass: #1a7f37; --fail: #cf222e; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; }
header { border-bottom: 1px solid var(--line); padding-bottom: 16px; margin-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 6px; display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
p { margin: 6px 0 10px; }
.meta { color: var(--muted); font-size: 14px; }
code { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
       background: var(--panel); padding: 1px 5px; border-radius: 4px; }
.badge { display: inline-block; font-size: 14px; font-weight: 700; letter-spacing: .04em;
         padding: 3px 12px; border-radius: 999px; color: #fff; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.chip { font-weight: 700; font-size: 12px; padding: 1px 8px; border-radius: 999px; }
.chip.pass { color: var(--pass); background: #dafbe1; }
.chip.fail { color: var(--fail); background: #ffebe9; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px;
         margin: 18px 0 4px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .05em; }
.card .v { font-size: 22px; font-weight: 650; margin-top: 2px; }
.card .s { color: var(--muted); font-size: 12px; }
.card.fail { border-color: var(--fail); } .card.fail .v { color: var(--fail); }
table { border-collapse: collapse; width: 100%; margin: 8px 0 14px; font-size: 14px; }
caption { text-align: left; color: var(--muted); font-size: 13px; padding: 4px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
thead th { background: var(--panel); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.primary > * { background: #fff8c5; }
tr.worst > * { background: #ffebe9; }
table.compact { font-size: 13px; } table.compact th, table.compact td { padding: 4px 6px; }
.scroll { overflow-x: auto; }
figure { margin: 12px 0 18px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line);
             border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 14px; }
.grid figure { margin: 0; }
details { margin: 6px 0 12px; } summary { cursor: pointer; color: var(--accent); }
.note { background: var(--panel); border-left: 4px solid var(--line); padding: 8px 12px; }
.note.fail { border-left-color: var(--fail); }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
@media print { main { max-width: none; } h2 { break-after: avoid; } figure { break-inside: avoid; } }
"""


# ----------------------------------------------------------------------------------------- helpers


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _label(runtime: str) -> str:
    return RUNTIME_LABELS.get(runtime, runtime)


def _runtimes(parity: Mapping[str, Any]) -> list[str]:
    rows = parity["rows"]
    return [r for r in ROW_ORDER if r in rows] + [r for r in rows if r not in ROW_ORDER]


def _subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """A figure on its own Agg canvas: no pyplot, so no global backend switch and no figure registry
    to leak from (a build may render many reports in one process)."""
    figure_kw = {k: kwargs.pop(k) for k in ("figsize", "layout") if k in kwargs}
    fig = Figure(**figure_kw)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def det_figure(points: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any] | None = None) -> Figure:
    """The DET curve of `edgekd stream --sweep`: false accepts per hour (x) against miss rate (y), one
    line per smoothing window, each point labelled with its threshold; lower-left is better. `chosen`
    (a threshold and window) is ringed: the operating point the build ships."""
    fig, ax = _subplots(figsize=(6.4, 4.2), layout="constrained")
    for window in sorted({p["window"] for p in points}):
        line = sorted((p for p in points if p["window"] == window), key=lambda p: p["threshold"])
        xs = [p["fa_per_hour"] for p in line]
        ys = [100 * (1 - p["recall"]) for p in line]
        ax.plot(xs, ys, marker="o", markersize=3, label=f"window {window}")
        for p, x, y in zip(line, xs, ys, strict=True):
            ax.annotate(f"{p['threshold']:g}", (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    shipped = [
        p
        for p in points
        if chosen and (p["threshold"], p["window"]) == (chosen["threshold"], chosen["window"])
    ]
    for p in shipped:
        x, y = p["fa_per_hour"], 100 * (1 - p["recall"])
        ax.plot([x], [y], marker="o", markersize=11, fillstyle="none", color="black", label="shipped")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("false accepts per hour")
    ax.set_ylabel("miss rate (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """A figure as PNG bytes (no metadata pointing anywhere)."""
    buf = io.BytesIO()
    # metadata=None for Software: PNG text chunks would otherwise carry matplotlib's web address.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def png_figure(fig: Figure, alt: str, caption: str | None = None) -> str:
    """A figure as an inline PNG <figure> with alt text; the figure is closed."""
    png = png_bytes(fig)
    # The IHDR chunk holds the exact pixel size; declaring it lets the browser lay out before decoding.
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    data = base64.b64encode(png).decode("ascii")

    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""

    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}" width="{width}" '
        f'height="{height}" loading="eager">{cap}</figure>'
    )


def html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    numeric: Sequence[bool] | None = None,
    caption: str | None = None,
    row_classes: Sequence[str] | None = None,
    compact: bool = False,
) -> str:
    """An accessible HTML table (column and row headers scoped); cells are escaped unless `_Raw`.
    `compact` tightens wide tables (per-layer, per-class) so they fit without scrolling."""
    numeric = numeric or [False] * len(headers)
    head = "".join(
        f'<th scope="col"{" class=num" if n else ""}>{esc(h)}</th>'
        for h, n in zip(headers, numeric, strict=True)
    )
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = []
        for j, (c, n) in enumerate(zip(r, numeric, strict=True)):
            text = c.html if isinstance(c, _Raw) else esc(c)
            tag = "th scope=row" if j == 0 else "td"
            cells.append(f"<{tag}{' class=num' if n else ''}>{text}</{tag.split()[0]}>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        f'<div class="scroll"><table{" class=compact" if compact else ""}>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


class _Raw:
    """Trusted HTML for a table cell (built here from escaped parts)."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


def _emphasis(escaped: str) -> str:
    """Markdown `*x*` -> <em>x</em> in escaped text (the per-layer legend is shared with report.md)."""
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", escaped)


def _chip(passed: bool) -> _Raw:
    return _Raw(f'<span class="chip {"pass" if passed else "fail"}">{"PASS" if passed else "FAIL"}</span>')


def _style_axes(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e5e8eb", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=9)


# ----------------------------------------------------------------------------------------- plots


def _confusion_figure(cm: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    n = len(classes)
    size = 2.6 + 0.19 * n
    fig, ax = _subplots(figsize=(size, size * 0.95), layout="constrained")
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8 if n > 8 else 10,
                    color="white" if share[i, j] > 0.55 else ("#b3261e" if i != j else "#1f2328"),
                    fontweight="bold" if i != j else "normal",
                )
    ax.set_xticks(range(n), classes, rotation=60, ha="right", rotation_mode="anchor", fontsize=8.5)
    ax.set_yticks(range(n), classes, fontsize=8.5)
    ax.set_xlabel("predicted", fontsize=9)
    ax.set_ylabel("true", fontsize=9)
    ax.set_title(title, fontsize=10.5, fontweight="bold")
    return fig


def _per_class_figure(parity: Mapping[str, Any], runtimes: Sequence[str]) -> Figure:
    """Dot plot (not bars: accuracies near 1 need a zoomed axis, which bars would misrepresent)."""
    classes = parity["classes"]
    fig, ax = _subplots(figsize=(8.6, 0.34 * len(classes) + 1.3), layout="constrained")
    lows = []
    offsets = np.linspace(-0.22, 0.22, len(runtimes)) if len(runtimes) > 1 else [0.0]
    for off, rt in zip(offsets, runtimes, strict=True):
        acc = parity["rows"][rt]["per_class_accuracy"]
        ys = [i + off for i, c in enumerate(classes) if acc.get(c) is not None]
        xs = [acc[c] for c in classes if acc.get(c) is not None]
        lows += xs
        ax.scatter(xs, ys, s=30, color=RUNTIME_COLORS.get(rt), label=_label(rt), zorder=3)
    ax.set_yticks(range(len(classes)), classes)
    ax.invert_yaxis()
    lo = min(lows, default=0.0)
    ax.set_xlim(max(0.0, lo - 0.03 - 0.1 * (1 - lo)), 1.005)
    ax.xaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    ax.set_xlabel("accuracy on held-out clips of the class")
    _style_axes(ax)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(runtimes), fontsize=8.5, frameon=False)
    return fig


def _logit_diff_figure(diffs: Mapping[str, np.ndarray], reference: str) -> Figure:
    fig, ax = _subplots(figsize=(8.6, 3.3), layout="constrained")
    top = (
        max(float(np.max(v)) for v in diffs.values() if v.size)
        if any(v.size for v in diffs.values())
        else 1.0
    )
    bins = np.linspace(0.0, max(top, 1e-6) * 1.02, 50)
    # Runtimes often agree bit for bit (TFLite Micro and LiteRT): thinner lines on top keep all visible.
    widths = np.linspace(3.6, 1.4, len(diffs)) if len(diffs) > 1 else [1.8]
    for (rt, v), width in zip(diffs.items(), widths, strict=True):
        ax.hist(
            v, bins=bins, histtype="step", linewidth=width, color=RUNTIME_COLORS.get(rt), label=_label(rt)
        )

    ax.set_yscale("log")
    ax.set_xlabel(f"|INT8 logit − {_label(reference)} logit|   (every logit of every held-out clip)")
    ax.set_ylabel("count (log scale)")
    _style_axes(ax)
    ax.legend(fontsize=8)
    return fig


def _budget_figure(items: Sequence[tuple[str, float, float, str]]) -> Figure:
    """Horizontal bars: use as a share of the limit, the limit at 100%."""
    fig, ax = _subplots(figsize=(8.6, 0.62 * len(items) + 0.9), layout="constrained")
    shares = [used / limit for _, used, limit, _ in items]
    colors = [PASS_COLOR if s <= 1 else FAIL_COLOR for s in shares]
    ys = range(len(items))
    ax.barh(ys, [1.0] * len(items), color="#eaeef2", height=0.56, zorder=1)
    ax.barh(ys, shares, color=colors, height=0.56, zorder=2)
    ax.axvline(1.0, color="#1f2328", linewidth=1.2, zorder=3)
    for y, s, (_, _, _, text) in zip(ys, shares, items, strict=True):
        ax.text(
            min(s, 1.0) + 0.01 if s < 0.62 else 0.01,
            y,
            text,
            va="center",
            fontsize=9,
            color="#1f2328" if s < 0.62 else "white",
            zorder=4,
        )
    ax.set_yticks(list(ys), [name for name, *_ in items])
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.08, max(shares) * 1.05))
    ax.xaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    ax.set_xlabel("share of the target's limit (the line is the limit)")
    _style_axes(ax)
    ax.grid(False, axis="y")
    return fig


_PHASES = (
    ("teacher", "teacher head"),
    ("student_plain", "student without teacher"),
    ("student_float", "student (float, distilled)"),
    ("student_qat", "student (QAT)"),
)
_COMPONENTS = (
    ("loss", "total loss", "#1f2328", "-"),
    ("ce", "cross-entropy", "#0072B2", "--"),
    ("kd", "distillation (KL)", "#D55E00", ":"),
    ("feature", "feature matching", "#009E73", "-."),
)


def _training_figure(training: Mapping[str, Any]) -> Figure | None:
    phases = [(k, name, training[k]) for k, name in _PHASES if training.get(k)]
    if not phases:
        return None
    fig, axes = _subplots(
        2,
        len(phases),
        figsize=(3.0 * len(phases) + 1.2, 5.0),
        layout="constrained",
        squeeze=False,
        sharex="col",
    )
    for col, (_, name, hist) in enumerate(phases):
        epochs = [h["epoch"] for h in hist]
        ax = axes[0, col]
        for key, label, color, style in _COMPONENTS:
            values = [h.get(key) for h in hist]
            if all(v is None for v in values) or (key in ("kd", "feature") and not any(values)):
                continue
            ax.plot(
                epochs,
                [np.nan if v is None else v for v in values],
                style,
                color=color,
                label=label,
                linewidth=1.6,
                marker="o" if len(epochs) <= 6 else None,
                markersize=3,
            )
        ax.set_title(name, fontsize=10)
        if col == 0:
            ax.set_ylabel("training loss")
        _style_axes(ax)
        ax.legend(fontsize=7)
        ax2 = axes[1, col]
        acc = [h.get("val_accuracy") for h in hist]
        agree = [h.get("val_agreement") for h in hist]  # QAT keeps the epoch that agrees most
        for values, color, label in (
            (acc, "#009E73", "accuracy"),
            (agree, "#CC79A7", "agreement with the float student"),
        ):
            if any(a is not None for a in values):
                ax2.plot(
                    epochs,
                    [np.nan if a is None else a for a in values],
                    color=color,
                    label=label,
                    linewidth=1.6,
                    marker="o" if len(epochs) <= 6 else None,
                    markersize=3,
                )
        if any(a is not None for a in agree):
            ax2.legend(fontsize=7)
        if any(a is not None for a in acc):
            seen = [a for a in acc + agree if a is not None]
            mid, span = (max(seen) + min(seen)) / 2, max(seen) - min(seen)
            if span < 0.01:  # at least one point of accuracy tall, so 0.1-point tick labels stay distinct
                ax2.set_ylim(mid - 0.006, mid + 0.006)
        ax2.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=1))

        ax2.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax2.set_xlabel("epoch")
        if col == 0:
            ax2.set_ylabel("validation accuracy")
        _style_axes(ax2)
    return fig


def _layers_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    fig, ax = _subplots(figsize=(8.6, 3.6), layout="constrained")
    x = np.arange(len(rows))
    for key, label, color, style in (
        ("sqnr_db", "vs float student", "#0072B2", "-"),
        ("sqnr_qat_float_db", "vs QAT weights in float", "#009E73", "--"),
        ("sqnr_fake_quant_db", "vs fake-quant graph", "#E69F00", ":"),
    ):
        ys = [np.nan if r.get(key) is None else r[key] for r in rows]
        ax.plot(x, ys, style, marker="o", markersize=4, color=color, label=label, linewidth=1.6)
    worst = [i for i, r in enumerate(rows) if r.get("worst")]
    for i in worst:
        ax.axvspan(i - 0.4, i + 0.4, color="#ffd8d3", zorder=0)
        ax.text(
            i,
            1.0,
            "worst",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8.5,
            color=FAIL_COLOR,
            fontweight="bold",
        )
    ax.set_xticks(x, [r["layer"] for r in rows], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("SQNR of INT8 activations (dB)")
    _style_axes(ax)
    ax.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------------------------- sections


def logit_diffs_from_logits(
    logits: Mapping[str, np.ndarray], reference: str = "student_fp32"
) -> dict[str, np.ndarray]:
    """|INT8 logit - reference logit| per clip and class for every INT8 runtime present.

    `logits` is `logs/parity_logits.npz` (or the verify stage's `logits.npz`): one [N, C] array per
    parity row. The float student is the default reference because it is what the gates compare
    INT8 with; pass `reference="student_qat"` for the table's "max |Δlogit| vs QAT" figure.
    """
    if reference not in logits:
        return {}
    ref = np.asarray(logits[reference], dtype=np.float64)
    return {
        rt: np.abs(np.asarray(logits[rt], dtype=np.float64) - ref).ravel() for rt in INT8_ROWS if rt in logits
    }


def _cards(parity: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    primary = parity["rows"][parity["primary"]]
    budget = parity["budget"]
    limits = (manifest.get("config") or {}).get("budget") or {}
    gates = {g["name"]: g for g in parity["gates"]}

    def card(key: str, value: str, sub: str, failed: bool = False) -> str:
        return (
            f'<div class="card{" fail" if failed else ""}"><div class="k">{esc(key)}</div>'
            f'<div class="v">{esc(value)}</div><div class="s">{esc(sub)}</div></div>'
        )

    agree = next((g for n, g in gates.items() if n.startswith("agreement_")), None)
    out = [
        card("device accuracy", pct(primary["accuracy"], 1), _label(parity["primary"])),
        card(
            "agreement with float",
            pct(primary["agreement_with_student_fp32"], 2),
            f"clean clips; gate ≥ {pct(agree['limit'], 1)} on {agree.get('n') or 0:,} decisive inputs: "
            f"{pct(agree['value'], 2)}"
            if agree
            else "argmax, same clips",
            failed=bool(agree and not agree["passed"]),
        ),
        card(
            "model size",
            kb(budget["model_bytes"]),
            f"limit {kb(limits.get('model_bytes'))}" if limits.get("model_bytes") else "no limit",
            failed=not gates.get("model_bytes", {"passed": True})["passed"],
        ),
    ]
    if budget.get("arena_bytes_with_headroom") is not None:
        out.append(
            card(
                "tensor arena",
                kb(budget["arena_bytes_with_headroom"]),
                f"with headroom; limit {kb(limits.get('arena_bytes'))}" if limits.get("arena_bytes") else "",
                failed=not gates.get("arena_bytes_with_headroom", {"passed": True})["passed"],
            )
        )
    if budget.get("latency_ms") is not None:
        out.append(
            card(
                "latency",
                f"{budget['latency_ms']:.2f} ms",
                f"limit {limits['latency_ms']:g} ms" if limits.get("latency_ms") else "",
                failed=not gates.get("latency_ms", {"passed": True})["passed"],
            )
        )
    out.append(card("held-out clips", str(parity["n_clips"]), f"{len(parity['classes'])} classes"))
    return f'<div class="cards">{"".join(out)}</div>'


def _parity_section(parity: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    data = manifest.get("data") or {}
    rows, classes = [], []
    for rt in _runtimes(parity):
        r = parity["rows"][rt]
        diff = r.get("max_abs_logit_diff")
        rows.append(
            [
                rt + (" (device)" if rt == parity["primary"] else ""),
                pct(r["accuracy"]),
                pct(r["macro_f1"]),
                pct(r["agreement_with_student_fp32"]),
                pct(r["agreement_with_teacher"]),
                num(diff, ".4f"),
            ]
        )
        classes.append("primary" if rt == parity["primary"] else "")
    return (
        "<h2 id=parity>Parity on held-out clips</h2>"
        f"<p>{parity['n_clips']} clips the model never trained on "
        f"({esc(data.get('test_note', 'test split'))}). "
        f"<code>{esc(parity['primary'])}</code> is what the device runs (highlighted).</p>"
        + html_table(
            ["runtime", "accuracy", "macro-F1", "agree fp32", "agree teacher", "max |Δlogit| vs QAT"],
            rows,
            [False, True, True, True, True, True],
            caption="Every runtime on the same held-out clips; INT8 Δlogit is against the fake-quant model.",
            row_classes=classes,
        )
    )


def _real_section(parity: Mapping[str, Any]) -> str:
    """Real speech: the user's holdout through every runtime (with a per-class plot), and INT8-vs-float
    agreement on real unlabelled speech. Empty when the build measured neither."""
    h, r = parity.get("holdout"), parity.get("real_unlabeled")
    if not h and not r:
        return ""
    parts = ["<h2 id=real>Real speech</h2>"]
    if h:
        rts = [rt for rt in _runtimes(parity) if rt in h["rows"]]
        rows = [
            [
                rt + (" (device)" if rt == parity["primary"] else ""),
                pct(h["rows"][rt].get("keyword_accuracy")),
                pct(h["rows"][rt]["accuracy"]),
                pct(h["rows"][rt]["agreement_with_student_fp32"]),
            ]
            for rt in rts
        ]
        shown = [rt for rt in ("teacher_fp32", "student_fp32", parity["primary"]) if rt in h["rows"]]
        section = {"classes": parity["classes"], "rows": h["rows"]}
        parts += [
            f"<p>Holdout <code>{esc(h['path'])}</code>: {h['n_clips']} real clips never trained on. "
            "<em>keywords</em> is the mean of the per-keyword accuracies.</p>",
            html_table(
                ["runtime", "keywords", "accuracy", "agree fp32"],
                rows,
                [False, True, True, True],
                row_classes=["primary" if rt == parity["primary"] else "" for rt in rts],
            ),
            png_figure(
                _per_class_figure(section, shown),
                f"Per-class accuracy on the real holdout for {', '.join(_label(x) for x in shown)}.",
                "Per class on the real holdout: teacher, float student and the INT8 model the device runs.",
            ),
        ]
    if r:
        cells = ", ".join(f"{esc(k)} {pct(v)}" for k, v in r["agreement_with_student_fp32"].items())
        parts.append(
            f"<p>Agreement with the shipped float weights on {r['n_windows']} one-second windows of real, "
            f"unlabelled speech (<code>{esc(r['source'])}</code>): {cells}.</p>"
        )
    return "".join(parts)


def _stream_section(parity: Mapping[str, Any]) -> str:
    """The streaming check: operating point, FA/h with its interval, recall, and the DET curve on the
    reported audio with the shipped point ringed. Empty when the build did not run it."""
    section = parity.get("stream")
    if not section:
        return ""
    op = section["operating_point"]
    rows = [[what, figure] for what, figure in stream_figures(section)]
    sources = [
        [name, src["files"], f"{src['hours'] * 60:.1f}", src["false_accepts"], f"{src['fa_per_hour']:.2f}"]
        for name, src in section["negatives"]["per_source"].items()
    ]
    return "".join(
        [
            "<h2 id=stream>Streaming: false accepts and recall in running audio</h2>",
            f"<p>{esc(operating_point_line(section))}</p>",
            html_table(["figure", "measured"], rows, [False, False]),
            html_table(
                ["source", "files", "minutes", "false accepts", "FA/h"],
                sources,
                [False, True, True, True, True],
                caption="False accepts per source of real speech without keywords (the reported audio).",
            ),
            png_figure(
                det_figure(section["det"], op),
                "DET curve: false accepts per hour against miss rate, one line per smoothing window, "
                f"the shipped point (threshold {op['threshold']:g}, window {op['window']}) ringed.",
                f"DET on the reported audio (recall of the {section['det_positives']}); lower left is "
                "better. The ringed point is what model_settings.h ships.",
            ),
        ]
    )


def gates_section(parity: Mapping[str, Any]) -> str:
    rows = [
        [*cells, _chip(g["passed"])]
        for cells, g in zip(gate_rows(dict(parity)), parity["gates"], strict=True)
    ]
    failed = [g["name"] for g in parity["gates"] if not g["passed"]]
    note = (
        f'<p class="note fail">Failed: {", ".join(f"<code>{esc(n)}</code>" for n in failed)}.</p>'
        if failed
        else ""
    )
    return (
        "<h2 id=gates>Gates</h2>"
        + note
        + html_table(
            [*GATE_HEADERS, "result"],
            rows,
            [False, True, True, True, True, False],
            caption="Each gate of the target: the measured value, the limit, the inputs it counted, its "
            "95 % interval and the verdict. Agreement, drops and accuracy floors fail only when the "
            "interval lies beyond the limit.",
        )
        + "".join(f'<p class="note">{esc(line.removeprefix("- "))}</p>' for line in gate_notes(dict(parity)))
    )


def _budget_section(parity: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    b = parity["budget"]
    limits = (manifest.get("config") or {}).get("budget") or {}
    items: list[tuple[str, float, float, str]] = []
    missing: list[str] = []
    specs = [
        ("model (flash)", b.get("model_bytes"), limits.get("model_bytes"), kb),
        ("tensor arena + headroom", b.get("arena_bytes_with_headroom"), limits.get("arena_bytes"), kb),
        ("latency", b.get("latency_ms"), limits.get("latency_ms"), lambda v: f"{v:.3g} ms"),
    ]
    for name, used, limit, fmt in specs:
        if used is None or not limit:
            if limit:  # a limit the build could not check is worth saying; no limit and no figure is not
                missing.append(f"{name}: not measured (limit {fmt(limit)})")
            continue
        items.append(
            (name, float(used), float(limit), f"{fmt(used)} of {fmt(limit)} ({100 * used / limit:.0f}%)")
        )
    parts = ["<h2 id=budget>Budget</h2>"]
    if items:
        alt = "Budget bars, use as a share of each limit: " + "; ".join(
            text.replace(" of ", " used of ") + f" for {n}" for n, _, _, text in items
        )
        parts.append(
            png_figure(
                _budget_figure(items),
                alt,
                "Bars are what the model uses, the vertical line the target's limit; red is over it.",
            )
        )
    lat = "—" if b.get("latency_ms") is None else f"{b['latency_ms']:.2f} ms ({b.get('latency_source', '')})"
    lines = [
        f"model: {kb(b['model_bytes'])} ({b['model_bytes']:,} B), fully INT8: {b['fully_int8']}",
        f"tensor arena (TFLite Micro, host): {kb(b.get('arena_bytes'))}; with headroom: "
        f"{kb(b.get('arena_bytes_with_headroom'))}",
        f"ops: {', '.join(b['ops']) or '—'}; MACs per inference: {b['macs']:,}",
        f"latency: {lat}",
        *missing,
    ]
    parts.append("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul>")
    return "".join(parts)


def _per_class_section(parity: Mapping[str, Any]) -> str:
    classes = parity["classes"]
    shown = [rt for rt in ("teacher_fp32", "student_fp32", parity["primary"]) if rt in parity["rows"]]
    worst = []
    for c in classes:
        acc = [parity["rows"][rt]["per_class_accuracy"].get(c) for rt in shown]
        if None not in acc and acc[-1] < max(acc):
            worst.append(f"{c} ({pct(acc[-1], 1)} on the device vs {pct(max(acc), 1)})")
    alt = (
        f"Dot plot of per-class accuracy for {', '.join(_label(r) for r in shown)} "
        f"over {len(classes)} classes. "
        + (
            f"Classes where the device model is below the best: {'; '.join(worst)}."
            if worst
            else "The device model is as accurate as the best runtime on every class."
        )
    )
    all_rt = _runtimes(parity)
    table = html_table(
        ["class", *all_rt],
        [[c, *[pct(parity["rows"][rt]["per_class_accuracy"].get(c)) for rt in all_rt]] for c in classes],
        [False] + [True] * len(all_rt),
        compact=True,
    )
    return (
        "<h2 id=per-class>Per-class accuracy</h2>"
        + png_figure(
            _per_class_figure(parity, shown),
            alt,
            "Teacher, float student and the INT8 model the device runs, per class (the axis is zoomed).",
        )
        + f"<details><summary>Per-class accuracy of every runtime (table)</summary>{table}</details>"
    )


def _confusion_section(parity: Mapping[str, Any]) -> str:
    classes = parity["classes"]
    figs = []
    for rt in _runtimes(parity):
        cm = np.asarray(parity["rows"][rt]["confusion"], dtype=np.int64)
        errors = [
            (int(cm[i, j]), classes[i], classes[j])
            for i in range(len(classes))
            for j in range(len(classes))
            if i != j and cm[i, j]
        ]
        errors.sort(reverse=True)
        top = "; ".join(f"{n} × {t} predicted as {p}" for n, t, p in errors[:5])
        alt = f"Confusion matrix of {_label(rt)}: {int(np.trace(cm))} of {int(cm.sum())} clips correct. " + (
            f"Most frequent confusions: {top}." if errors else "No confusions."
        )
        title = _label(rt) + (" — device" if rt == parity["primary"] else "")
        figs.append(png_figure(_confusion_figure(cm, classes, title), alt, None))
    primary = parity["primary"]
    cm = parity["rows"][primary]["confusion"]
    table = html_table(
        ["true \\ pred", *classes],
        [[c, *cm[i]] for i, c in enumerate(classes)],
        [False] + [True] * len(classes),
        compact=True,
    )
    return (
        "<h2 id=confusion>Confusion matrices</h2><p>One per runtime; rows are the true class, colour is the "
        "share of that class, red numbers are mistakes.</p>"
        f'<div class="grid">{"".join(figs)}</div>'
        f"<details><summary>Confusion matrix of {esc(primary)} (table)</summary>{table}</details>"
    )


def _logit_section(
    parity: Mapping[str, Any], logit_diffs: Mapping[str, np.ndarray] | None, reference: str
) -> str:
    head = "<h2 id=logits>Float vs INT8 logits</h2>"
    diffs = {rt: np.abs(np.asarray(v, dtype=np.float64)).ravel() for rt, v in (logit_diffs or {}).items()}
    diffs = {rt: v for rt, v in diffs.items() if v.size}
    if not diffs:
        return head + '<p class="note">Per-clip logits were not available for this report.</p>'
    order = [rt for rt in INT8_ROWS if rt in diffs] + [rt for rt in diffs if rt not in INT8_ROWS]
    diffs = {rt: diffs[rt] for rt in order}
    stats = [
        [_label(rt), f"{np.median(v):.4f}", f"{np.percentile(v, 99):.4f}", f"{np.max(v):.4f}", f"{v.size:,}"]
        for rt, v in diffs.items()
    ]
    alt = "Histogram, log count scale, of absolute logit differences between INT8 runtimes and the " + (
        f"{_label(reference)}: "
        + "; ".join(f"{s[0]} median {s[1]}, 99th percentile {s[2]}, max {s[3]}" for s in stats)
    )
    return (
        head + f"<p>How far each INT8 runtime's logits are from the {esc(_label(reference))}'s "
        "on the same clips.</p>"
        + png_figure(_logit_diff_figure(diffs, reference), alt, None)
        + html_table(
            ["runtime", "median", "99th percentile", "max", "logits"],
            stats,
            [False, True, True, True, True],
            caption="|INT8 − float| logit differences per runtime.",
        )
    )


def _training_section(training: Mapping[str, Any] | None) -> str:
    head = "<h2 id=training>Training</h2>"
    fig = _training_figure(training or {})
    if fig is None:
        return head + '<p class="note">No training history was recorded.</p>'
    parts = []
    for key, name in _PHASES:
        hist = (training or {}).get(key)
        if hist:
            last = hist[-1]
            best = max((h.get("val_accuracy") or 0.0) for h in hist)
            agreement = max((h.get("val_agreement") or 0.0) for h in hist)
            parts.append(
                f"{name}: {len(hist)} epochs, final loss {last.get('loss', float('nan')):.3f}, "
                + (
                    f"kept by agreement with the float student: {100 * agreement:.1f}%"
                    if agreement
                    else f"best validation accuracy {100 * best:.1f}%"
                )
            )
    alt = (
        "Training curves: total loss, cross-entropy, distillation and feature-matching loss per epoch (top) "
        "and validation "
        "accuracy (bottom) for each phase. " + "; ".join(parts) + "."
    )
    return (
        head + "<p>Loss components per epoch (the total is (1−α)·CE + α·T²·KL + w·feature-matching MSE; QAT "
        "distils from the float student) and validation accuracy. Per step, with gradient norms, α and T: "
        "<code>tensorboard --logdir logs/tensorboard</code>.</p>" + png_figure(fig, alt, None)
    )


def _layers_section(layers: Sequence[Mapping[str, Any]] | None, failed: bool) -> str:
    """The per-layer comparison; first and flagged when parity failed, an appendix otherwise."""
    if not layers:
        return ""
    w = next((r for r in layers if r.get("worst")), None)
    alt = (
        "Per-layer SQNR of the INT8 model's activations against the float student, the QAT weights in float "
        "and the fake-quant graph. "
        + (f"The worst layer is {w['layer']} ({w['op']}) at {w['sqnr_db']:.1f} dB." if w else "")
    )
    sentence = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(worst_sentence(layers)))
    return (
        "<h2 id=layers>Per-layer float vs INT8</h2>"
        f'<p class="note{" fail" if failed else ""}">{sentence}</p>'
        + png_figure(_layers_figure(layers), alt, None)
        + html_table(
            LAYER_HEADERS,
            [layer_cells(r) for r in layers],
            [h not in ("layer", "op", "shape") for h in LAYER_HEADERS],
            row_classes=["worst" if r.get("worst") else "" for r in layers],
            compact=True,
        )
        + f"<p class=meta>{_emphasis(esc(LEGEND))}</p>"
    )


def _context_sections(parity: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    data = manifest.get("data") or {}
    summary = data.get("summary") or {}
    timings = manifest.get("timings") or []
    versions = manifest.get("versions") or {}
    trained_on = (manifest.get("student") or {}).get("trained_on")
    rows = [[k, v] for k, v in versions.items()]
    if trained_on:  # torch computes differently by instruction set and threads (runtime_env.machine)
        cpu = trained_on["torch_cpu_capability"]
        rows.append(["student trained on", f"{trained_on['cpu']} ({cpu}, {trained_on['threads']} threads)"])
    if manifest.get("openmp_wait_policy"):  # what the stage times were measured under (runtime_env)
        rows.append(["OpenMP idle workers", manifest["openmp_wait_policy"]])
    skipped = data.get("skipped")
    return "".join(
        [
            "<h2 id=teacher>Teacher and distillation</h2>",
            html_table(
                ["", ""], [[label, value] for label, value in distill_summary(dict(parity), dict(manifest))]
            ),
            "<h2 id=data>Data</h2>",
            f"<p>Source: {esc(data.get('source', '—'))}. Skipped inputs: {esc(skipped or 'none')}.</p>",
            html_table(
                ["split", *parity["classes"], "total"],
                [
                    [
                        s,
                        *[summary.get(s, {}).get(c, 0) for c in parity["classes"]],
                        sum(summary.get(s, {}).get(c, 0) for c in parity["classes"]),
                    ]
                    for s in ("train", "validation", "test")
                ],
                [False] + [True] * (len(parity["classes"]) + 1),
            ),
            "<h2 id=stages>Stages</h2>",
            html_table(
                STAGE_HEADERS,
                stage_rows(timings),
                [False, True, True],
            )
            if timings
            else "<p>—</p>",
            "<details><summary>Library versions and machine</summary>"
            + html_table(["library", "version"], rows, [False, False])
            + "</details>"
            if versions
            else "",
        ]
    )


def report_html(
    parity: Mapping[str, Any],
    manifest: Mapping[str, Any],
    training: Mapping[str, Any] | None,
    logit_diffs: Mapping[str, np.ndarray] | None = None,
    layers: Sequence[Mapping[str, Any]] | None = None,
    logit_reference: str = "student_fp32",
) -> str:
    """The whole report as one HTML document (no external resources, no script).

    `training` is `logs/training.json`; `logit_diffs` maps an INT8 runtime row name to its |logit
    difference| values (`logit_diffs_from_logits`), measured against `logit_reference`; `layers` is
    the per-layer comparison, shown (first, after the summary) when given.
    """
    passed = bool(parity["passed"])
    student = manifest.get("student") or {}
    t = manifest.get("teacher") or {}
    title = f"edgekd build report — {parity['target']}"
    meta = (
        f"recipe <code>{esc(manifest.get('recipe'))}</code> · student "
        f"<code>{esc(student.get('arch'))}</code> {esc(student.get('width', ''))} "
        f"({esc(student.get('params'))} params) · teacher "
        f"<code>{esc(t.get('name'))}</code> · edgekd {esc(manifest.get('edgekd_version'))}"
        + (f" · built {esc(manifest['created_utc'])}" if manifest.get("created_utc") else "")
    )
    failed = [g["name"] for g in parity["gates"] if not g["passed"]]
    verdict = "PASS" if passed else "FAIL"
    body = [
        "<header>",
        f'<h1>{esc(title)} <span class="badge {"pass" if passed else "fail"}">{verdict}</span></h1>',
        f'<p class="meta">{meta}</p>',
        "" if passed else f'<p class="note fail">Gates failed: {esc(", ".join(failed))}.</p>',
        _cards(parity, manifest),
        "</header>",
        _layers_section(layers, failed=True) if not passed else "",
        _parity_section(parity, manifest),
        _real_section(parity),
        _stream_section(parity),
        gates_section(parity),
        _budget_section(parity, manifest),
        _per_class_section(parity),
        _confusion_section(parity),
        _logit_section(parity, logit_diffs, logit_reference),
        _training_section(training),
        _layers_section(layers, failed=False) if passed else "",
        _context_sections(parity, manifest),
        f"<footer>Rendered from parity.json (schema {esc(parity.get('schema'))}) and manifest.json; "
        "self-contained: no scripts, no external resources.</footer>",
    ]
    return page(f"{title} — {verdict}", body)


def page(title: str, body: Sequence[str]) -> str:
    """A self-contained HTML document: inline style, no script, nothing fetched."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # Belt and braces: even a future edit that adds a remote URL cannot make the page fetch it.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
