"""Streaming figures in words and tables: `edgekd stream`'s terminal view (detections, false accepts per
hour, recall, the DET sweep) and the streaming section of a build's report.md and summary."""

from __future__ import annotations

from typing import Any

from edgekd.fmt import num, pct, table
from edgekd.stats import wilson

SHOWN = 50  # detections listed in the terminal; --json has all


def detections_text(files: list[dict[str, Any]]) -> str:
    shown = [d for f in files for d in f["detections"]]
    rows = [
        [d["file"], f"{d['time_s']:.2f}", d["label"], f"{d['mean_probability']:.2f}"] for d in shown[:SHOWN]
    ]
    more = f" (first {SHOWN} shown)" if len(shown) > SHOWN else ""
    minutes = sum(f["seconds"] for f in files) / 60
    return (
        table(["file", "time s", "keyword", "mean p"], rows)
        + f"\n{len(shown)} detections in {minutes:.1f} min of audio, {len(files)} files{more}"
    )


def false_accepts_text(fa: dict[str, Any], threshold: float, window: int) -> str:
    rows = [[k, v["false_accepts"], f"{v['fa_per_hour']:.2f}"] for k, v in fa["per_keyword"].items()]
    rows.append(["total", fa["false_accepts"], f"{fa['fa_per_hour']:.2f}"])
    return (
        table(["keyword", "false accepts", "FA/h"], rows)
        + f"\nnegatives: {fa['hours']:.2f} h in {fa['files']} files, {fa['inferences']} inferences, "
        f"threshold {threshold:g}, window {window}"
    )


def recall_text(pos: dict[str, Any]) -> str:
    rows = [
        [k, v["clips"], pct(v["recall"], 1), v["wrong"], num(v["median_delay_s"], ".2f")]
        for k, v in pos["per_keyword"].items()
    ]
    rows.append(["all", pos["clips"], pct(pos["recall"], 1), pos["wrong_keyword"], ""])
    low, high = pos["snr_db"]
    return (
        table(["keyword", "clips", "recall", "wrong keyword", "median delay s"], rows)
        + f"\npositives: {pos['clips']} clips in {pos['stream_seconds'] / 60:.1f} min of running audio at "
        f"{low:g}-{high:g} dB SNR; {pos['false_accepts']} other detections"
    )


def sweep_text(points: list[dict[str, Any]], chosen: dict[str, Any] | None, target: float | None) -> str:
    """The DET table (one row per window and threshold) and, for a target FA/h, the point it picks."""
    has_fa, has_recall = "fa_per_hour" in points[0], "recall" in points[0]
    headers = [
        "window",
        "threshold",
        *(["FA/h"] if has_fa else []),
        *(["recall", "miss"] if has_recall else []),
    ]
    rows = []
    for p in points:
        row = [p["window"], f"{p['threshold']:g}"]
        if has_fa:
            row.append(f"{p['fa_per_hour']:.2f}")
        if has_recall:
            row += [pct(p["recall"], 1), pct(None if p["recall"] is None else 1 - p["recall"], 1)]
        rows.append(row)
    text = table(headers, rows)
    if target is not None:
        text += (
            f"\nfor <= {target:g} FA/h: threshold {chosen['threshold']:g}, window {chosen['window']} "
            f"({chosen['fa_per_hour']:.2f} FA/h"
            + (f", recall {pct(chosen.get('recall'), 1)})" if has_recall else ")")
            if chosen
            else f"\nno threshold and window meet {target:g} FA/h on this audio (median-unbiased rate)"
        )
    return text


def operating_point_line(section: dict[str, Any]) -> str:
    op = section["operating_point"]
    return (
        f"Operating point: threshold {op['threshold']:g}, window {op['window']} "
        f"(stride {op['stride_frames']} frames, refractory {op['refractory']} inferences): {op['chosen_by']}."
    )


def stream_figures(section: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, figure) lines of a build's streaming check: FA/h with its interval, and recall."""
    neg = section["negatives"]
    low, high = neg["fa_per_hour_interval"]
    out = [
        (
            "false accepts",
            f"{neg['false_accepts']} in {neg['hours']:.2f} h of real speech without keywords = "
            f"{neg['fa_per_hour']:.2f} FA/h (95 % interval {low:.2f}-{high:.2f}); {neg['audio']}",
        )
    ]
    for key, what in (("positives", "recall, synthetic"), ("holdout", "recall, real holdout")):
        pos = section.get(key)
        if pos:
            lo, hi = wilson(round(pos["recall"] * pos["clips"]), pos["clips"])
            where = ", ".join(x for x in (pos["path"], pos.get("about")) if x)
            low_db, high_db = pos["snr_db"]
            out.append(
                (
                    what,
                    f"{pct(pos['recall'], 1)} [{pct(lo, 1)}, {pct(hi, 1)}] of {pos['clips']} keyword clips "
                    f"({where}) in running real speech at {low_db:g}-{high_db:g} dB SNR; "
                    f"{pos['wrong_keyword']} fired as another keyword",
                )
            )
    return out


def stream_md(section: dict[str, Any]) -> list[str]:
    """The streaming section of report.md: operating point, figures, per-source FA/h, the DET table."""
    neg = section["negatives"]
    sources = [
        [name, s["files"], f"{s['hours'] * 60:.1f}", s["false_accepts"], f"{s['fa_per_hour']:.2f}"]
        for name, s in neg["per_source"].items()
    ]
    op = section["operating_point"]
    det = [p for p in section["det"] if p["window"] == op["window"]]
    return [
        operating_point_line(section),
        "",
        *(f"- {what}: {figure}" for what, figure in stream_figures(section)),
        "",
        table(["source", "files", "minutes", "false accepts", "FA/h"], sources),
        "",
        f"DET on the reported audio (window {op['window']}; recall of the {section['det_positives']}); "
        f"the operating point is threshold {op['threshold']:g}:",
        "",
        sweep_text(det, None, None),
        "",
    ]
