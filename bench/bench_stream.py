"""Benchmark `edgekd stream`: speed (x real time), false accepts per hour on real speech, recall.

    python bench/bench_stream.py --build build/esp32s3                       # the built-in pools
    python bench/bench_stream.py --build build/esp32s3 --positives DIR --minutes 60

Negatives are the built-in Debian speech pools without English (Czech and Dutch acted game dialogue;
`scripts/setup.sh` unpacks them); `--minutes` caps each source. Positives (a Speech Commands folder)
are inserted into the first negative source's audio. Measuring only: never pick thresholds on the
positives you report.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgekd import runtime_env  # noqa: E402

runtime_env.apply()

from edgekd.audio.io import (  # noqa: E402
    SAMPLE_RATE,
    read_wav,  # noqa: E402
    write_wav,
)
from edgekd.data.real_pool import SOURCES, pool_root  # noqa: E402
from edgekd.report.markdown import table  # noqa: E402
from edgekd.report.stream_view import recall_text, sweep_text  # noqa: E402
from edgekd.stream import best_point, false_accepts, load_settings, run_positives, run_stream, sweep  # noqa: E402

# no English: the command words occur only as other languages' words (Czech "no" is one)
NEGATIVE_SOURCES = ("fillets-cs", "fillets-nl")


def source_audio(name: str, minutes: float, out: Path) -> Path:
    """The first `minutes` of a built-in source, concatenated into one recording (long-form audio)."""
    parts, have = [], 0
    for f in SOURCES[name].files(pool_root()):
        parts.append(read_wav(f, allow_clipped=True, allow_silent=True))
        have += len(parts[-1])
        if have >= minutes * 60 * SAMPLE_RATE:
            break
    import numpy as np

    path = out / f"{name}.wav"
    write_wav(path, np.concatenate(parts)[: int(minutes * 60 * SAMPLE_RATE)])
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=20.0, help="minutes taken from each negative source")
    ap.add_argument("--positives", type=Path, help="a Speech Commands folder of real clips to insert")
    ap.add_argument("--snr", default="5:20")
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--target-fa-per-hour", type=float, default=0.5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekd-bench-stream"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    settings = load_settings(args.build, args.threshold)
    keywords = tuple(k for k, d in zip(settings.labels, settings.detectable, strict=True) if d)
    rows, streamed = [], []
    negatives = [source_audio(n, args.minutes, args.work) for n in NEGATIVE_SOURCES if n in SOURCES]
    for path in negatives:
        t0 = time.perf_counter()
        streamed += run_stream(args.build, [path], args.threshold, progress=False)
        wall = time.perf_counter() - t0
        fa = false_accepts(streamed[-1:], keywords)
        worst = max(fa["per_keyword"].items(), key=lambda kv: kv[1]["false_accepts"])
        speed = f"{fa['hours'] * 3600 / wall:.1f}x"
        most = f"{worst[0]} ({worst[1]['false_accepts']})"
        rows.append([path.stem, f"{fa['hours'] * 60:.0f}", f"{wall:.0f}", speed, fa["false_accepts"],
                     f"{fa['fa_per_hour']:.2f}", most])  # fmt: skip
    print(f"threshold {settings.threshold:g}, window {settings.window}, stride {settings.stride_frames} "
          f"frames, refractory {settings.refractory} inferences\n")  # fmt: skip
    print(table(["negatives", "minutes", "wall s", "speed", "false accepts", "FA/h", "most (keyword)"], rows))
    positives = None
    if args.positives:
        low, high = (float(v) for v in args.snr.split(":"))
        t0 = time.perf_counter()
        positives = run_positives(
            args.build, args.positives, negatives[:1], (low, high), 0, args.threshold, progress=False
        )
        pos = positives.score()
        wall = time.perf_counter() - t0
        print(f"\npositives {args.positives} inserted into {negatives[0].stem} ({wall:.0f} s)\n")
        print(recall_text(pos))
    points = sweep(settings, streamed, positives)
    chosen = best_point(points, args.target_fa_per_hour)
    print(f"\nDET sweep over all negatives ({sum(r.seconds for r in streamed) / 3600:.2f} h)\n")
    print(sweep_text(points, chosen, args.target_fa_per_hour))
    return 0


if __name__ == "__main__":
    sys.exit(main())
