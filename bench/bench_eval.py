"""Benchmark `edgekd eval`: wall time and peak memory to score a folder with every runtime of a build.

    python bench/bench_eval.py --build build/esp32s3                   # 4,890 real-speech clips
    python bench/bench_eval.py --build build/esp32s3 --data DIR --sequential

Without --data, the clips are one-second windows of the built-in real-speech pool written into the
build's class folders round-robin, `_silence_/` and `_unknown_/` included so that nothing is synthesised
(labels are meaningless here: this measures time, not accuracy).
`--sequential` also times the run with every runtime in this process (no runtime worker).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgekd import runtime_env  # noqa: E402

runtime_env.apply()

from edgekd.audio.io import from_pcm16, write_wav  # noqa: E402
from edgekd.build_dir import BuildDir  # noqa: E402
from edgekd.data.real_pool import BUILD_POOL, windows  # noqa: E402
from edgekd.evaluate import evaluate  # noqa: E402
from edgekd.fmt import table  # noqa: E402
from edgekd.pipeline import PeakRSS  # noqa: E402
from edgekd.verify import scoring  # noqa: E402


def write_folder(build: Path, root: Path, n: int) -> None:
    classes = BuildDir(build).config().classes
    for i, clip in enumerate(windows(BUILD_POOL, n, seed=0)):
        write_wav(root / classes[i % len(classes)] / f"pool{i % 50}_nohash_{i}.wav", from_pcm16(clip))


def timed(build: Path, data: Path) -> tuple[float, float, int]:
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        report = evaluate(build, data, progress=False)
        seconds = time.perf_counter() - t0
    return seconds, mem.peak / 2**20, report["n_clips"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, required=True, help="a build directory (`edgekd build` output)")
    ap.add_argument("--data", type=Path, help="a labelled folder (default: real-speech pool windows)")
    ap.add_argument("--clips", type=int, default=4890)
    ap.add_argument("--sequential", action="store_true", help="also time without the runtime worker")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "clips"
            write_folder(args.build, data, args.clips)
        rows = []
        modes = [("runtime worker", scoring.WORKER_MIN_CLIPS)] + ([("sequential", 10**9)] * args.sequential)
        for name, threshold in modes:
            scoring.WORKER_MIN_CLIPS = threshold
            seconds, peak_mb, n = timed(args.build, data)
            rows.append([name, n, f"{seconds:.1f}", f"{n / seconds:.0f}", f"{peak_mb:.0f}"])
    print(table(["mode", "clips", "wall s", "clips/s", "peak RSS MB (this process)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
