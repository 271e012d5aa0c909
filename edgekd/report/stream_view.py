"""The terminal view of `edgekd stream`: detections, false accepts per hour, recall and the DET sweep."""

from __future__ import annotations

from typing import Any

from edgekd.fmt import num, pct
from edgekd.report.markdown import table

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
            else f"\nno threshold and window meet {target:g} FA/h on this audio"
        )
    return text
