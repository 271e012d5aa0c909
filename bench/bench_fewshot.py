"""What a few real recordings add to the synthetic corpus: real clips per word -> real accuracy.

    python bench/bench_fewshot.py                       # digits, k = 0 1 3 10 30, esp32s3
    python bench/bench_fewshot.py --k 0 3 --json out.json

The one experiment allowed to train on `../shared/data/real-digits-fsdd` (its README): the folder's
speakers are split in two. k clips of each digit from the *train speakers* (taken round-robin over them)
go into the build with `--add-data` (`data.extra`), all in its training split; the build is then scored
on every clip of the *other* speakers, whom it never heard. One digits build per k, one shared stage
cache (the views, teacher and student stages rerun because the corpus changed; synthesis of the voices
does too). Prints one row per k: the real score of the teacher, the float student and INT8 on TFLite
Micro with 95 % intervals, the synthetic test split beside it, and the build's wall time.
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

from bench_real import REAL_DATA, ci, figures  # noqa: E402

from edgekd.build import run_build  # noqa: E402
from edgekd.config import load_config  # noqa: E402
from edgekd.data.corpus import speaker_of  # noqa: E402
from edgekd.evaluate import evaluate  # noqa: E402
from edgekd.fmt import table  # noqa: E402

TRAIN_SPEAKERS = ("george", "jackson", "nicolas")  # the other three (lucas, theo, yweweler) are scored


def fsdd_split(root: Path, k: int, extra: Path, scored: Path) -> tuple[int, int]:
    """Link k clips per word of the train speakers into `extra` and every clip of the others into
    `scored`; returns (clips linked for training, clips to score)."""
    n_train = n_scored = 0
    for word_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        wavs = sorted(word_dir.glob("*.wav"), key=lambda p: (int(p.stem.rsplit("_", 1)[1]), p.name))
        mine = [p for p in wavs if speaker_of(p) in TRAIN_SPEAKERS]
        chosen = round_robin(mine, k)
        others = [p for p in wavs if speaker_of(p) not in TRAIN_SPEAKERS]
        for dst, files in ((extra, chosen), (scored, others)):
            (dst / word_dir.name).mkdir(parents=True, exist_ok=True)
            for p in files:
                (dst / word_dir.name / p.name).symlink_to(p.resolve())
        n_train, n_scored = n_train + len(chosen), n_scored + len(wavs) - len(mine)
    # a non-empty testing list that names no clip puts every listed-out clip in the training split
    (extra / "testing_list.txt").write_text("none/none.wav\n")
    return n_train, n_scored


def round_robin(files: list[Path], k: int) -> list[Path]:
    """k files taking one from each train speaker in turn (lowest take numbers first)."""
    by_speaker = {s: [p for p in files if speaker_of(p) == s] for s in TRAIN_SPEAKERS}
    return [by_speaker[TRAIN_SPEAKERS[i % 3]][i // 3] for i in range(k)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="esp32s3")
    ap.add_argument("--k", type=int, nargs="+", default=[0, 1, 3, 10, 30], help="real clips per word")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cache", help="stage cache shared by the builds (default: a temporary one)")
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args()
    root = REAL_DATA / "real-digits-fsdd"
    rows, record = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "cache"
        for k in args.k:
            extra, scored = Path(tmp) / f"extra{k}", Path(tmp) / f"scored{k}"
            n_train, n_scored = fsdd_split(root, k, extra, scored)
            overrides = [*args.set, f"data.extra={extra}"] if k else list(args.set)
            cfg = load_config(args.target, "digits", overrides)
            t0 = time.perf_counter()
            result = run_build(cfg, Path(tmp) / f"build{k}", cache, progress=False, log=lambda _m: None)
            wall = time.perf_counter() - t0
            parity = json.loads((result.out / "parity.json").read_text())
            real = figures(evaluate(result.out, scored, progress=False), cfg.labels)
            synth = figures(parity, cfg.labels)
            record[k] = {
                "train_clips": n_train,
                "scored": n_scored,
                "real": real,
                "synthetic": synth,
                "s": wall,
            }
            rows.append(
                [
                    str(k),
                    str(n_train),
                    ci(*real["teacher_fp32"]["keywords"]),
                    ci(*real["student_fp32"]["keywords"]),
                    ci(*real[parity["primary"]]["keywords"]),
                    f"{100 * synth[parity['primary']]['keywords'][0]:.1f}",
                    f"{wall / 60:.1f}",
                ]
            )
            print(f"k={k} done in {wall / 60:.1f} min: {' | '.join(rows[-1])}", flush=True)
            if args.json:  # after every k: a long run stopped early keeps what it measured
                Path(args.json).write_text(json.dumps(record, indent=1))
    print(
        f"\n### real-digits-fsdd: trained on k clips per digit of {', '.join(TRAIN_SPEAKERS)}; scored on the"
    )
    print(f"other three speakers ({record[args.k[0]]['scored']} clips); keyword accuracy, 95 % intervals\n")
    headers = [
        "k / word",
        "real clips",
        "teacher",
        "student fp32",
        "INT8 TFLM",
        "synthetic test",
        "build min",
    ]
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
