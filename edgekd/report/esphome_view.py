"""`edgekd esphome`'s terminal view: the contract clause by clause, the figures models are compared by,
and what the component detected in the audio given."""

from __future__ import annotations

from typing import Any

from edgekd.fmt import kb, table

SHOWN = 50


def contract_text(record: dict[str, Any]) -> str:
    rows = [[c["clause"], "ok" if c["ok"] else "FAIL", c["detail"]] for c in record["checks"]]
    verdict = "passes" if record["passed"] else "breaks"
    figures = (
        f"stride {record['stride']} frames, flash {kb(record['flash_bytes'])}, TFLite Micro arena "
        f"{kb(record['arena_bytes'])}, {record['variables']} state variables, "
        f"{record['macs_per_step']:,} MAC per invoke = {record['macs_per_second'] / 1e6:.2f} M MAC/s"
    )
    notes = "".join(f"\nnote: {n}" for n in record["notes"])
    return (
        table(["clause", "", "detail"], rows)
        + f"\n{record['model']} {verdict} ESPHome's micro_wake_word contract\n{figures}{notes}"
    )


def scan_text(scan: dict[str, Any]) -> str:
    """Files with detections (the first `SHOWN`; --json has all) and the rate over every file."""
    fired = [f for f in scan["files"] if f["detections_s"]]
    rows = [
        [f["file"], f"{f['seconds']:.1f}", ", ".join(f"{t:.2f}" for t in f["detections_s"])] for f in fired
    ]
    more = f"\nthe first {SHOWN} of {len(rows)} files with detections shown" if len(rows) > SHOWN else ""
    low, high = scan["fa_per_hour_interval"]
    return (
        (table(["file", "seconds", "detections at s"], rows[:SHOWN]) + f"{more}\n" if rows else "")
        + f"{scan['detections']} detections in {len(scan['files'])} files, {scan['hours']:.2f} h (cutoff "
        f"{scan['cutoff']}/255, window {scan['window']}): {scan['fa_per_hour']:.2f} per hour, 95 % interval "
        f"[{low:.2f}, {high:.2f}] if the audio holds no wake word; each file is a fresh start (1 s cool-off)"
    )
