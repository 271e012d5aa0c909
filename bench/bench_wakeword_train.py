"""`edgekd build --target esphome --wake-word WORD` as a user runs it, then measured on real people.

    python bench/bench_wakeword_train.py --word computer                       # the shipped recipe
    python bench/bench_wakeword_train.py --word computer --variant "labels only" wakeword.alpha=0
    python bench/bench_wakeword_train.py --word snowboy --variant mined --variant no wakeword.mining_rounds=0
    python bench/bench_wakeword_train.py --word snowboy --set wakeword.epochs=40 --json out.json

Each variant is one full build (the `wakeword` recipe plus `--set`s and the variant's own settings; stages
shared between variants come from the cache): synthetic corpus, examples in running audio, frame teacher,
QAT student, export, calibration on the pools' calibration parts, verify on their check parts. Then, at the
operating point the build shipped (its manifest), through ESPHome's own loop on TFLite Micro:

- **recall on real people**: `../shared/data/real-wakewords-dev/<word>` (150 recordings, many speakers)
  inserted into quiet noise (20-30 dB) and into real speech (the pool's check part, 5-15 dB);
- **false accepts per hour on real speech**: the build's own figure on the pools' check parts (non-English)
  plus the English of `real-wakewords-dev` (its other phrases) and `real-commands-dev`, with exact 95 %
  intervals;
- the build's synthetic recall (test voices) beside them, and its wall time;
- the same real-people recall and FA/h at a few fixed points (`POINTS`), so that variants compare on their
  DET curves, not only where each one's calibration happened to land.

Measuring only: nothing here trains, calibrates or picks a threshold on `../shared/data`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edgekd import runtime_env

runtime_env.apply()  # quiets torch's and litert-torch's notices, as the CLI does

from bench_wakeword import REAL, negative_streams  # noqa: E402

from edgekd.audio.io import read_wav  # noqa: E402
from edgekd.build import run_build  # noqa: E402
from edgekd.config import load_config  # noqa: E402
from edgekd.esphome import contract  # noqa: E402
from edgekd.esphome.engine import WakeWordEngine  # noqa: E402
from edgekd.esphome.measure import NegativeRuns, PositiveRun  # noqa: E402
from edgekd.fmt import kb, pct, table  # noqa: E402
from edgekd.stats import clopper_pearson, poisson_rate_interval  # noqa: E402
from edgekd.stream import BUILTIN, audio_files  # noqa: E402


def interval(hits: int, total: int) -> str:
    lo, hi = clopper_pearson(hits, total)
    return f"{pct(hits / total, 1)} [{100 * lo:.0f}, {100 * hi:.0f}]"


POINTS = ((0.95, 5), (0.98, 8), (0.99, 8), (0.995, 12))  # (cutoff, window): fixed, never chosen here


def shipped_engine(out: Path) -> WakeWordEngine:
    """A build's model through ESPHome's loop at the operating point its manifest ships."""
    manifest = next(p for p in out.glob("*.json") if json.loads(p.read_text()).get("type") == "micro")
    return WakeWordEngine.from_manifest(manifest)


def measure(out: Path, word: str, people: Path | None = None) -> dict:
    """The shipped build on real people (`people`, default `real-wakewords-dev/<word>`) and on real
    speech, at its manifest's operating point and at `POINTS`."""
    parity = json.loads((out / "parity.json").read_text())
    engine = shipped_engine(out)
    k, w = engine.cutoff, engine.window
    folder = people or REAL / "real-wakewords-dev" / word
    real = [read_wav(f, allow_clipped=True) for f in audio_files([folder])]
    quiet = PositiveRun.of(engine, word, real, [], (20.0, 30.0))
    recall = {"real, quiet": quiet.hits(k, w)}
    recall["real, in speech"] = PositiveRun.of(engine, word, real, [BUILTIN], (5.0, 15.0)).hits(k, w)
    for name, key in (
        ("synthetic, quiet", "synthetic_quiet"),
        ("synthetic, in speech", "synthetic_in_speech"),
    ):
        r = parity["recall"][key]
        recall[name] = (r["hits"], r["clips"])
    negatives = NegativeRuns.of(engine, negative_streams(word))  # the build's check parts + English
    hours = negatives.total_hours
    fa = sum(negatives.false_accepts(k, w).values())
    points = {}
    for cutoff, window in POINTS:
        u8 = contract.cutoff_u8(cutoff)
        points[f"{cutoff:g}/{window}"] = {
            "fa_per_hour": sum(negatives.false_accepts(u8, window).values()) / hours,
            "real_quiet": quiet.hits(u8, window),
        }
    return {
        "operating_point": parity["operating_point"],
        "passed": parity["passed"],
        "fa": fa,
        "hours": hours,
        "fa_per_hour": fa / hours,
        "fa_interval": poisson_rate_interval(fa, hours),
        "recall": recall,
        "points": points,
        "contract": parity["contract"],
        "arena": parity["esphome_manifest"]["micro"]["tensor_arena_size"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--word", required=True, help="a folder name of real-wakewords-dev, e.g. computer")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE for every variant")
    ap.add_argument(
        "--variant", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"),
        help="a variant: its name and its --set overrides (default: the recipe as shipped)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("/tmp/edgekd-wakeword"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/edgekd-wakeword-cache"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not (REAL / "real-wakewords-dev" / args.word).is_dir():
        sys.exit(f"--word {args.word}: no folder {REAL / 'real-wakewords-dev' / args.word}")
    variants = args.variant or [["recipe"]]
    rows, records = [], {}
    for name, *sets in variants:
        started = time.perf_counter()
        cfg = load_config("esphome", None, [f'words=["{args.word}"]', *args.set, *sets])
        out = args.out / "_".join(name.split())
        result = run_build(cfg, out, args.cache, progress=True, log=lambda m: print(m, file=sys.stderr))
        r = measure(result.out, args.word)
        r["seconds"] = time.perf_counter() - started
        records[name] = r
        op, (lo, hi) = r["operating_point"], r["fa_interval"]
        rows.append(
            [name, f"{op['cutoff']:g}, {op['window']}", f"{op['fa_per_hour']:.2f}",
             f"{r['fa_per_hour']:.2f} [{lo:.2f}, {hi:.2f}] ({r['fa']} in {r['hours']:.2f} h)",
             *(interval(*hits) for hits in r["recall"].values()), f"{r['seconds'] / 60:.0f}"]
        )  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(records, indent=1, default=float))
    headers = ["variant", "cutoff, window", "FA/h calib.", "FA/h real speech [95 %]", "recall real quiet"]
    headers += ["recall real in speech", "recall synth. quiet", "recall synth. in speech", "min"]
    print(table(headers, rows))
    fixed = [
        [name, *(f"{pct(p['real_quiet'][0] / p['real_quiet'][1], 1)} @ {p['fa_per_hour']:.2f}"
                 for p in r["points"].values())]
        for name, r in records.items()
    ]  # fmt: skip
    print("\nreal people in quiet noise, recall @ FA/h on real speech, at fixed (cutoff/window) points:")
    print(table(["variant", *(f"{c:g}/{w}" for c, w in POINTS)], fixed))
    c = next(iter(records.values()))
    macs = c["contract"]["macs_per_second"] / 1e6
    print(
        f"step model: {kb(c['contract']['flash_bytes'])} flash, {kb(c['arena'])} tensor arena, "
        f"{macs:.2f} M MAC/s"
    )


if __name__ == "__main__":
    main()
