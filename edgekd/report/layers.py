"""Rendering the per-layer float-vs-INT8 comparison (`edgekd.verify.layers.compare_layers`' rows):
the table both reports show, and the sentence that names the worst layer and what to try.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgekd.fmt import num, pct, table


def worst_layer(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The row that added the most relative error (marked `worst` by `compare_layers`)."""
    return next((r for r in rows if r.get("worst")), None)


LAYER_HEADERS = [
    "#",
    "layer",
    "op",
    "shape",
    "SQNR dB",
    "rel. error",
    "cosine",
    "error added",
    "vs QAT float dB",
    "vs fake-quant dB",
    "steps vs fake-quant",
    "clipped",
]


def layer_cells(r: Mapping[str, Any]) -> list[Any]:
    """One row of the per-layer table (`LAYER_HEADERS`), as report.md and report.html both show it."""
    return [
        r["index"],
        r["layer"],
        r["op"] + ("" if r.get("trained_quantizer") is not False else " ⚠ untrained grid"),
        "×".join(str(s) for s in r["shape"]),
        num(r["sqnr_db"], ".1f"),
        num(r["rel_error"], ".4f"),
        num(r["cosine"], ".4f"),
        f"{100 * r['error_added']:+.3f}%",
        num(r.get("sqnr_qat_float_db"), ".1f"),
        num(r.get("sqnr_fake_quant_db"), ".1f"),
        num(r.get("max_steps_fake_quant"), ".0f"),
        pct(r.get("clipped_fraction")),
    ]


def layers_md(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown for report.md: the per-layer table (worst layer in bold) and the sentence naming it."""
    cells = [layer_cells(r) for r in rows]
    for r, c in zip(rows, cells, strict=True):
        if r.get("worst"):
            c[1] = f"**{c[1]}**"
    return "\n".join([table(LAYER_HEADERS, cells), "", worst_sentence(rows), "", LEGEND])


LEGEND = (
    "SQNR, relative error and cosine compare the INT8 model's dequantized activations with the float "
    "student's, cumulatively (each layer runs on the INT8 model's own input); *error added* is how much "
    "the squared relative error grows at that layer. *vs QAT float*: the same network with the "
    "QAT-trained weights in float (quantization alone); *vs fake-quant*: the graph the INT8 model was "
    "converted from (converter and kernels alone), with the largest difference in output steps; "
    "*clipped*: share of the QAT-float values outside the layer's INT8 range; *untrained grid*: the QAT "
    "graph has no fake-quantizer on this tensor, so the converter chose its scale."
)


def _db(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} dB"


def worst_sentence(rows: Sequence[dict[str, Any]]) -> str:
    """One paragraph naming the layer where accuracy is lost, which kind of loss it is, and what to try."""
    w = worst_layer(rows)
    if w is None:
        return "No layers compared."
    i = rows.index(w)
    before = f"{rows[i - 1]['sqnr_db']:.1f} dB after `{rows[i - 1]['layer']}`" if i > 0 else "exact"
    text = (
        f"Worst layer: `{w['layer']}` ({w['op']}): SQNR against the float student falls from {before} "
        f"to {w['sqnr_db']:.1f} dB (relative error {w['rel_error']:.3f})."
    )
    fq, qf = (_db(w.get(k)) for k in ("sqnr_fake_quant_db", "sqnr_qat_float_db"))
    clipped = w.get("clipped_fraction") or 0.0
    rng = w.get("int8_range")
    if w.get("cause") == "conversion" and w.get("trained_quantizer") is False:
        text += (
            f" The QAT graph never quantized this tensor (no fake-quantizer), so the converter chose its "
            f"INT8 grid (scale {w['scale']:.4g}, range [{rng[0]:.3g}, {rng[1]:.3g}]) and "
            f"{100 * clipped:.1f}% of its values fall outside it ({fq} against the fake-quant graph): "
            "make the model quantize this tensor during QAT (an op the quantizer annotates, e.g. an "
            "activation, after it)."
        )
    elif w.get("cause") == "conversion":
        text += (
            f" Most of it is also there against the graph the INT8 model was converted from ({fq}): the "
            "INT8 model does not compute what was trained at this layer — a converter or kernel "
            "problem, or a damaged model file."
        )
    elif w.get("cause") == "quantization":
        text += (
            f" The INT8 kernels reproduce the trained graph ({fq} against fake-quant) but not the same "
            f"weights in float ({qf}): the 8-bit grid itself loses it here"
            + (f", {100 * clipped:.1f}% of values clipped" if clipped >= 0.001 else "")
            + " (a wide or outlier-dominated activation range; try a larger `student.width` or more "
            "`train.qat_epochs`)."
        )
    else:
        text += (
            f" Against the QAT-trained weights in float it is {qf}: most of the loss is QAT moving the "
            "weights away from the float student (raise `train.qat_self_distill`, lower `train.qat_lr` "
            "or use fewer `train.qat_epochs`)."
        )
    return text
