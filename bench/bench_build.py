"""Benchmark a whole build: wall time and peak resident memory per stage, then the final accuracies.

    python bench/bench_build.py --target esp32s3            # cold build in a fresh cache + warm rebuild
    python bench/bench_build.py --target mobile --set train.epochs=10

The warm rebuild changes only a parity setting (verify.max_clips), which must re-run verify alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgekd import runtime_env  # noqa: E402

runtime_env.apply()  # quiets torch's and litert-torch's notices, as the CLI does

from edgekd.build import run_build  # noqa: E402
from edgekd.config import load_config  # noqa: E402
from edgekd.fmt import table  # noqa: E402
from edgekd.report.markdown import STAGE_HEADERS, stage_rows  # noqa: E402


def run(target: str, overrides: list[str], out: Path, cache: Path) -> tuple[float, object, list]:
    cfg = load_config(target, overrides=overrides)
    t0 = time.perf_counter()
    result = run_build(cfg, out, cache, progress=False, log=lambda _m: None)
    timings = json.loads((result.out / "manifest.json").read_text())["timings"]
    return time.perf_counter() - t0, result, timings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="esp32s3")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cache", help="reuse this cache (default: a fresh temporary one, i.e. a cold build)")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm rebuild")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "cache"
        out = Path(tmp) / "build"
        cold_s, result, timings = run(args.target, args.set, out, cache)
        print(f"## {args.target}: cold build {cold_s / 60:.1f} min ({cold_s:.0f} s)\n")
        print(table(STAGE_HEADERS, stage_rows(timings)))
        print()
        print(result.summary)
        if not args.no_warm:
            warm_s, warm, timings = run(args.target, [*args.set, "verify.max_clips=100000"], out, cache)
            reran = [t["name"] for t in timings if not t["cached"]]
            print(
                f"\n## warm rebuild after a parity-only change: {warm_s:.1f} s (re-ran: {', '.join(reran)})"
            )
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
