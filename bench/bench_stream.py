"""Benchmark `edgekd stream`: speed (x real time), false accepts per hour on real speech, recall.

    python bench/bench_stream.py --build build/esp32s3                          # the pool's check part
    python bench/bench_stream.py --build build/esp32s3 --part all --minutes 180  # 3 h of real speech
    python bench/bench_stream.py --build build/esp32s3 --positives DIR           # + recall of real clips

Negatives are the built-in Debian speech without English (`real_pool.NEGATIVE_SOURCES`: Czech and Dutch
acted dialogue, tuxpaint's descriptions in 12 languages), one long 16 kHz WAV per source written first
(decoding the pool's .ogg files is timed apart); `--part check` is what builds report on, `all` adds the
part they calibrate on. Positives (a Speech Commands folder) are inserted into the check part at the
build's SNR range. Measuring only: never pick thresholds on the positives you report.
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

from edgekd.audio.io import SAMPLE_RATE, write_wav  # noqa: E402
from edgekd.data.real_pool import negative_recordings  # noqa: E402
from edgekd.fmt import pct, table  # noqa: E402
from edgekd.report.stream_view import recall_text, sweep_text  # noqa: E402
from edgekd.stream import (  # noqa: E402
    best_point,
    false_accepts,
    load_settings,
    mixed_background,
    model_runner,
    positives_seconds,
    read_positives,
    run_stream,
    stream_positives,
    sweep,
)


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
    ap.add_argument("--part", choices=["check", "train", "all"], default="check")
    ap.add_argument("--minutes", type=float, default=0.0, help="negative audio in all (0: the whole part)")
    ap.add_argument("--positives", type=Path, help="a Speech Commands folder of real clips to insert")
    ap.add_argument("--snr", default="10:30")
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--target-fa-per-hour", type=float, default=0.5)
    ap.add_argument(
        "--frontend-check", action="store_true", help="aligned-window accuracy, 3 frontend states"
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekd-bench-stream"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    settings = load_settings(args.build, args.threshold)
    keywords = settings.keywords
    t0 = time.perf_counter()
    recordings = negative_recordings(args.part, args.minutes, seed=0)
    decode = time.perf_counter() - t0
    paths = [write_wav(args.work / f"{r.source}.wav", r.audio) for r in recordings]
    hours = sum(r.seconds for r in recordings) / 3600
    speed = 3600 * hours / decode
    print(f"decoded {hours:.2f} h of the pool's {args.part} part (.ogg) in {decode:.1f} s ({speed:.0f}x)")
    t0 = time.perf_counter()
    streamed = run_stream(args.build, paths, args.threshold, progress=False)  # one model, warmed up once
    wall = time.perf_counter() - t0
    rows = []
    for r, path in zip(streamed, paths, strict=True):
        fa = false_accepts([r], keywords)
        worst = max(fa["per_keyword"].items(), key=lambda kv: kv[1]["false_accepts"])
        rows.append([path.stem, f"{r.seconds / 60:.0f}", r.inferences, fa["false_accepts"],
                     f"{fa['fa_per_hour']:.2f}", f"{worst[0]} ({worst[1]['false_accepts']})"])  # fmt: skip
    total = false_accepts(streamed, keywords)
    rows.append(["all", f"{total['hours'] * 60:.0f}", total["inferences"], total["false_accepts"],
                 f"{total['fa_per_hour']:.2f}", ""])  # fmt: skip
    runtime = type(model_runner(args.build / "model.tflite")).__name__
    print(f"threshold {settings.threshold:g}, window {settings.window}, stride {settings.stride_frames} "
          f"frames, refractory {settings.refractory} inferences; runtime {runtime}\n")  # fmt: skip
    print(table(["negatives", "minutes", "inferences", "false accepts", "FA/h", "most (keyword)"], rows))
    print(
        f"\nedgekd stream over {hours:.2f} h (16 kHz WAV): {wall:.1f} s, {3600 * hours / wall:.0f}x real time"
    )
    positives = None
    if args.positives:
        low, high = (float(v) for v in args.snr.split(":"))
        check = recordings if args.part == "check" else negative_recordings("check", 0, seed=0)
        clips, _ = read_positives(args.positives, keywords)
        background = mixed_background([r.audio for r in check], positives_seconds(clips))
        about = {"path": str(args.positives), "background": "the pool's check part"}
        runner = model_runner(args.build / "model.tflite")
        positives = stream_positives(settings, runner, clips, background, (low, high), 0, about, False)
        print(f"\npositives {args.positives} inserted into the pool's check part\n")
        print(recall_text(positives.score()))
    if args.positives and args.frontend_check:
        print("\nthe window that ends where each clip ends (training's view), argmax accuracy:\n")
        print(frontend_check(args.build, args.positives, paths[1:2] or paths[:1], keywords))
    points = sweep(settings, streamed, positives)
    chosen = best_point(points, args.target_fa_per_hour)
    print(f"\nDET sweep over all negatives ({hours:.2f} h)\n")
    print(sweep_text(points, chosen, args.target_fa_per_hour))
    return 0


if __name__ == "__main__":
    sys.exit(main())
