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
from edgekd.fmt import pct  # noqa: E402
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


def frontend_check(build: Path, positives: Path, speech: list[Path], keywords: tuple[str, ...]) -> str:
    """Why recall in running audio differs from clip accuracy: each clip inserted into quiet noise and into
    real speech, scored on its aligned window with the frontend run continuously (the device), reset at
    the window (training) and reset 3 s before (a warm-up)."""

    from edgekd.audio.frontend import MicroFrontend
    from edgekd.stream import background_audio, insert_clips, read_positives
    from edgekd.verify.runners import TFLMRunner

    settings = load_settings(build)
    clips, _ = read_positives(positives, keywords)
    runner, fe = TFLMRunner(build / "model.tflite"), MicroFrontend()
    frames, rows = settings.frames, []
    for name, background, snr in (
        ("quiet noise", [], 20.0),
        (speech[0].stem, speech, 20.0),
        (speech[0].stem, speech, 10.0),
    ):
        audio, placed = insert_clips(background_audio(background, 4.5 * len(clips), 0), clips, 0, (snr, snr))
        continuous = fe(audio)
        hits = {"continuous": 0, "reset": 0, "warm": 0}
        for c in placed:
            end = int(c.end_s * SAMPLE_RATE)
            t = (end - fe.window) // fe.step + 1  # frames the device has at the clip's end
            views = {
                "continuous": continuous[t - frames : t],
                "reset": fe(audio[end - SAMPLE_RATE : end])[:frames],
                "warm": fe(audio[max(0, end - 4 * SAMPLE_RATE) : end])[-frames:],
            }
            for key, x in views.items():
                hits[key] += int(runner.predict(x[None])[0].argmax() == settings.labels.index(c.label))
        rows.append(
            [name, f"{snr:g}", *(pct(hits[k] / len(placed), 1) for k in ("continuous", "reset", "warm"))]
        )
    headers = [
        "background",
        "SNR dB",
        "continuous (device)",
        "reset at window (training)",
        "reset 3 s before",
    ]
    return table(headers, rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=20.0, help="minutes taken from each negative source")
    ap.add_argument("--positives", type=Path, help="a Speech Commands folder of real clips to insert")
    ap.add_argument("--snr", default="5:20")
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--target-fa-per-hour", type=float, default=0.5)
    ap.add_argument(
        "--frontend-check", action="store_true", help="aligned-window accuracy, 3 frontend states"
    )
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
    if args.positives and args.frontend_check:
        print("\nthe window that ends where each clip ends (training's view), argmax accuracy:\n")
        print(frontend_check(args.build, args.positives, negatives[1:2] or negatives[:1], keywords))
    points = sweep(settings, streamed, positives)
    chosen = best_point(points, args.target_fa_per_hour)
    print(f"\nDET sweep over all negatives ({sum(r.seconds for r in streamed) / 3600:.2f} h)\n")
    print(sweep_text(points, chosen, args.target_fa_per_hour))
    return 0


if __name__ == "__main__":
    sys.exit(main())
