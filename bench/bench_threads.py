"""Training throughput idle and beside a busy process: how torch threading degrades under contention.

    python bench/bench_threads.py [--clips 3000] [--repeats 3] [--batch 64]

Users' machines sometimes run something else. This times one plain training epoch of the esp32s3
student (ds_cnn S on [98, 40] features, the target's batch of 64, through `trainer.fit`) for each torch
thread count and OpenMP wait policy (`unset` = the OpenMP runtime's default: spin ~3 ms, then sleep),
alone and with one competing process spinning on a core, each setting in a fresh interpreter (OpenMP
reads its policy once, when torch loads it). It prints the median epoch time and the slowdown under
load. `edgekd build` picks per build (`edgekd/runtime_env.py`): `unset` when the cores are free at its
start, PASSIVE when other work holds them; the two rows it would use are marked.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHILD = """
import json, sys, time
import numpy as np, torch
from edgekd.models.students import build_student
from edgekd.train.trainer import FitRun, FitSpec, TrainData, fit
threads, clips, repeats, batch = (int(a) for a in sys.argv[1:5])
torch.set_num_threads(threads)
rng = np.random.default_rng(0)
x = rng.normal(size=(clips, 98, 40)).astype(np.float32)
y = rng.integers(0, 12, clips)
times = []
for r in range(repeats):
    model = build_student("ds_cnn", 12, (98, 40), "S", 0.1)
    start = time.perf_counter()
    fit(model, TrainData(x, y, x[:256], y[:256]), FitSpec(epochs=1, lr=1e-3, batch_size=batch),
        FitRun(torch.device("cpu"), r, progress=False))
    times.append(time.perf_counter() - start)
print(json.dumps(sorted(times)[len(times) // 2]))
"""


def _spin(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _epoch(threads: int, policy: str, clips: int, repeats: int, batch: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "unset":  # "unset": the OpenMP runtime's own default (libgomp: spin a while, then sleep)
        env["OMP_WAIT_POLICY"] = policy
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads), str(clips), str(repeats), str(batch)],
        env={**env, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    from edgekd.fmt import table
    from edgekd.runtime_env import BUSY_POLICY

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64, help="the esp32s3 target's train.batch_size")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--policies", nargs="+", default=["unset", "ACTIVE", "PASSIVE"])
    args = ap.parse_args()
    picks = {"unset": " (edgekd, cores free)", BUSY_POLICY: " (edgekd, cores busy)"}
    rows = []
    for policy in args.policies:
        for threads in args.threads:
            idle = _epoch(threads, policy, args.clips, args.repeats, args.batch)
            stop = multiprocessing.Event()
            busy = multiprocessing.Process(target=_spin, args=(stop,))
            busy.start()
            time.sleep(0.5)
            try:
                loaded = _epoch(threads, policy, args.clips, args.repeats, args.batch)
            finally:
                stop.set()
                busy.join()
            mark = picks.get(policy, "") if threads == 2 else ""
            rows.append([f"{policy}{mark}", threads, f"{idle:.2f}", f"{loaded:.2f}", f"{loaded / idle:.2f}x"])
            print(rows[-1], flush=True)
    print(f"\none plain epoch, ds_cnn S, {args.clips} clips, batch {args.batch}; median of {args.repeats}\n")
    print(table(["OMP_WAIT_POLICY", "torch threads", "idle s", "1 busy process s", "slowdown"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
