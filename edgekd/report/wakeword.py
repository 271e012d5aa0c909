"""Views of a wake-word build's `parity.json`: the terminal summary, `report.md` and `report.html`.

Rendered from the parity record (and the manifest for context) alone, like the classifier's reports;
the HTML shares their page style, gate table and DET plot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgekd.fmt import kb, pct, table
from edgekd.report.html import det_figure, esc, gates_section, html_table, page, png_figure
from edgekd.report.markdown import STAGE_HEADERS, gates_table, stage_rows

RECALL_HEADERS = ["recall of the phrase", "clips", "recall [95 %]"]


def recall_rows(parity: Mapping[str, Any]) -> list[list[str]]:
    return [
        [r["audio"], str(r["clips"]), f"{pct(r['recall'], 1)} [{100 * r['interval'][0]:.1f}, "
         f"{100 * r['interval'][1]:.1f}]"]
        for r in parity["recall"].values()
    ]  # fmt: skip


def figure_lines(parity: Mapping[str, Any]) -> list[str]:
    """Operating point, false accepts and the device figures, one line each."""
    op, neg, c = parity["operating_point"], parity["negatives"], parity["contract"]
    arena = parity["esphome_manifest"]["micro"]["tensor_arena_size"]
    lo, hi = neg["fa_per_hour_interval"]
    return [
        f"operating point: probability_cutoff {op['cutoff']:g} ({op['cutoff_u8']}/255), sliding window "
        f"{op['window']} — chosen on {op['chosen_on']}: {op['false_accepts']} false accepts there ("
        f"{op['fa_per_hour']:.2f} FA/h, bound {op['fa_per_hour_bound']:.2f}), validation recall "
        f"{pct(op['recall'], 1)}" + ("" if op["within_budget"] else " (no point met the FA/h budget)"),
        f"false accepts: {neg['false_accepts']} in {neg['hours']:.2f} h of {neg['audio']} = "
        f"{neg['fa_per_hour']:.2f} /h [95 %: {lo:.2f}, {hi:.2f}]",
        f"device: {kb(c['flash_bytes'])} flash, {kb(arena)} "
        f"tensor arena (TFLite Micro needs {kb(c['arena_bytes'])}), {c['variables']} resource variables, "
        f"{c['macs_per_second'] / 1e6:.2f} M MAC per second of audio; ESPHome contract "
        + ("passes" if c["passed"] else "FAILS: " + "; ".join(
            f"{x['clause']}: {x['detail']}" for x in c["checks"] if not x["ok"])),
    ]  # fmt: skip


def mining_lines(manifest: Mapping[str, Any]) -> list[str]:
    """One line per round of hard-negative mining (builds from before mining have none)."""
    return [
        f"hard negatives, round {i}: {m['windows']:,} windows where the student fired in {m['hours']:.2f} h "
        f"of the real-speech pool's fit part ({m['per_hour']:.0f}/h), fine-tuned on"
        for i, m in enumerate(manifest.get("hard_negatives", []), 1)
    ]


def summary(parity: Mapping[str, Any]) -> str:
    """The short table printed at the end of a wake-word build."""
    failed = [g["name"] for g in parity["gates"] if not g["passed"]]
    return "\n".join(
        [
            f"target {parity['target']} — wake word {parity['wake_word']!r}",
            *figure_lines(parity),
            "",
            table(RECALL_HEADERS, recall_rows(parity)),
            "",
            gates_table(dict(parity)),
            "",
            "result: " + ("PASS" if not failed else "FAIL: " + ", ".join(failed)),
        ]
    )


def esphome_yaml(name: str) -> str:
    """How ESPHome loads the build: the manifest from a local path (or the same files from a URL)."""
    return (
        "micro_wake_word:\n"
        "  models:\n"
        f"    - model: {name}.json   # beside {name}.tflite; or https://.../{name}.json\n"
    )


def calibration_rows(parity: Mapping[str, Any]) -> list[list[str]]:
    return [
        [f"{p['cutoff']:g}", str(p["window"]), str(p["false_accepts"]), f"{p['fa_per_hour']:.2f}",
         f"{p['fa_per_hour_bound']:.2f}", pct(p["recall"], 1)]
        for p in parity["calibration"]["points"]
    ]  # fmt: skip


def calibration_headers(parity: Mapping[str, Any]) -> list[str]:
    """The bound's column says at which confidence calibration compared it with the budget."""
    bound = f"FA/h bound ({100 * parity['calibration']['fa_confidence']:g} %)"
    return ["cutoff", "window", "false accepts", "FA/h", bound, "validation recall"]


def report_md(parity: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    name = manifest["esphome_manifest"].removesuffix(".json")
    return "\n".join(
        [
            f"# edgekd wake-word build — {parity['wake_word']!r} for {parity['target']}",
            "",
            f"**{'PASS' if parity['passed'] else 'FAIL'}** · edgekd {manifest['edgekd_version']} · "
            f"recipe `{manifest['recipe']}` · built {manifest['created_utc']}",
            "",
            *(f"- {line}" for line in [*figure_lines(parity), *mining_lines(manifest)]),
            "",
            "## Recall",
            "",
            table(RECALL_HEADERS, recall_rows(parity)),
            "",
            "## Gates",
            "",
            gates_table(dict(parity)),
            "",
            "## Calibration (every operating point tried)",
            "",
            table(calibration_headers(parity), calibration_rows(parity)),
            "",
            "## Load it in ESPHome",
            "",
            "```yaml",
            esphome_yaml(name).rstrip(),
            "```",
            "",
            "## Stages",
            "",
            table(STAGE_HEADERS, stage_rows(manifest["timings"])),
            "",
        ]
    )


def report_html(parity: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    """One self-contained page: verdict, figures, recall, gates, the calibration DET plot."""
    passed = bool(parity["passed"])
    verdict = "PASS" if passed else "FAIL"
    title = f"edgekd wake-word build — {parity['wake_word']} for {parity['target']}"
    op = parity["operating_point"]
    points = [{**p, "threshold": p["cutoff"]} for p in parity["calibration"]["points"]]
    name = manifest["esphome_manifest"].removesuffix(".json")
    body = [
        f'<header><h1>{esc(title)} <span class="badge {"pass" if passed else "fail"}">{verdict}</span></h1>',
        f'<p class="meta">recipe <code>{esc(manifest["recipe"])}</code> · edgekd '
        f"{esc(manifest['edgekd_version'])} · built {esc(manifest['created_utc'])}</p></header>",
        "<h2 id=figures>Figures</h2>",
        "".join(f"<p>{esc(line)}</p>" for line in [*figure_lines(parity), *mining_lines(manifest)]),
        html_table(RECALL_HEADERS, recall_rows(parity), [False, True, True]),
        gates_section(parity),
        "<h2 id=calibration>Calibration</h2>",
        png_figure(
            det_figure(points, {"threshold": op["cutoff"], "window": op["window"]}),
            "DET curve on the calibration audio: false accepts per hour against miss rate of the validation "
            f"clips, one line per sliding window, the shipped point (cutoff {op['cutoff']:g}, window "
            f"{op['window']}) ringed.",
            "Calibration: FA/h on real speech nobody trained on, misses of the synthetic validation clips.",
        ),
        html_table(calibration_headers(parity), calibration_rows(parity), [True] * 6),
        "<h2 id=esphome>Load it in ESPHome</h2>",
        f"<pre><code>{esc(esphome_yaml(name))}</code></pre>",
        "<h2 id=stages>Stages</h2>",
        html_table(STAGE_HEADERS, stage_rows(manifest["timings"]), [False, True, True]),
    ]
    return page(f"{title} — {verdict}", body)
