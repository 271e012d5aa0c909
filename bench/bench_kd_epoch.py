"""What a distillation epoch costs over a plain one, with the soft-label cache memory-mapped from disk.

    python bench/bench_kd_epoch.py [--target esp32s3] [--epochs 3]

Runs the build's own corpus, views, features and teacher stages (cached after the first run), then
trains the build's float student for a few epochs per mode and prints the median epoch time (the best
of `--repeats` cycles through the modes, one torch thread: stable on a shared machine):
plain (labels only), KD (dense soft labels), KD with top-k soft labels, KD + feature matching
(the default recipe).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgekd.config import load_config  # noqa: E402
from edgekd.fmt import table  # noqa: E402
from edgekd.pipeline import Stages, default_cache_root  # noqa: E402
from edgekd.stages.data import stage_corpus, stage_features, stage_views  # noqa: E402
from edgekd.stages.distill import fit_float_student, load_soft_labels, load_train_data  # noqa: E402
from edgekd.stages.teacher import stage_teacher  # noqa: E402

MODES = {
    "plain": ["distill.alpha=0", "distill.feature_weight=0"],
    "kd (memory-mapped soft labels)": ["distill.feature_weight=0"],
    "kd, top-3 soft labels": ["distill.feature_weight=0", "distill.top_k=3"],
    "kd + feature matching (the default)": [],
}
LABELLED_ONLY = ["data.unlabeled=null", "distill.domain_weight=0"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="esp32s3")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="cycles through all modes; the fastest counts")
    ap.add_argument("--threads", type=int, default=1, help="1: stable timings on a shared VM")
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args()
    cache = args.cache or default_cache_root()
    best: dict[str, float] = {}
    rows_n = 0
    for _ in range(args.repeats):  # cycling through the modes spreads the host's noise over all of them
        for name, extra in MODES.items():
            cfg = load_config(
                args.target,
                # the labelled rows alone: the recipe's real pool and critic are a cost of their own
                overrides=[
                    *extra,
                    *LABELLED_ONLY,
                    f"train.epochs={args.epochs}",
                    f"train.threads={args.threads}",
                ],
            )
            torch.set_num_threads(cfg.train.threads)
            stages = Stages(cache, log=lambda _m: None)
            corpus = stage_corpus(cfg, stages, False)
            views = stage_views(cfg, corpus, stages, False)
            data = load_train_data(cfg, stage_features(cfg, corpus, views, None, stages, False).dir)
            soft = None
            if name != "plain":
                cpu = torch.device("cpu")
                teacher = stage_teacher(cfg, corpus, views, None, None, stages, cpu, False)
                soft = load_soft_labels(cfg, teacher.dir)
                assert isinstance(soft.logits, np.memmap)
            _, result = fit_float_student(cfg, data, soft, torch.device("cpu"), cfg.seed, False)
            epoch_s = float(np.median([h["epoch_s"] for h in result.history]))
            best[name] = min(best.get(name, epoch_s), epoch_s)
            rows_n = len(data.x_train)
            print(f"  {name}: {epoch_s:.2f} s/epoch", flush=True)
    plain_s = best["plain"]
    rows = [[name, rows_n, f"{s:.2f}", f"{s / plain_s:.2f}×"] for name, s in best.items()]
    print()
    print(table(["mode", "rows", "s / epoch (median)", "vs plain"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
