"""What a few real recordings add to the synthetic corpus: real clips per word -> real accuracy.

    python bench/bench_fewshot.py                       # digits, k = 0 1 3 10 30, esp32s3
    python bench/bench_fewshot.py --k 0 3 --json out.json
    python bench/bench_fewshot.py --wake-word seven --k 0 30   # an ESPHome wake word (--target esphome)

The one experiment allowed to train on `../shared/data/real-digits-fsdd` (its README): the folder's
speakers are split in two. k clips of each digit from the *train speakers* (taken round-robin over them)
go into the build with `--add-data` (`data.extra`), all in its training split; the build is then scored
on every clip of the *other* speakers, whom it never heard. One digits build per k, one shared stage
cache (the views, teacher and student stages rerun because the corpus changed; synthesis of the voices
does too). Prints one row per k: the real score of the teacher, the float student and INT8 on TFLite
Micro with 95 % intervals, the synthetic test split beside it, and the build's wall time.

`--wake-word DIGIT` asks the same of a wake-word build (`--target esphome`): k recordings of that digit
from the train speakers go in with `--add-data`; the build, at the operating point it ships, is scored
through ESPHome's loop on TFLite Micro (`bench_wakeword_train.measure`) on the other speakers' recordings
of it in quiet and in real speech, with FA/h on the real speech of the pools' check parts and the English
folders; beside them, the other speakers' other nine digits (clips that fire: the price of having learnt
their voices and channel) and the Speech Commands speakers of `real-commands-dev/<digit>` (quiet).
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
from bench_wakeword_train import interval, measure, shipped_engine  # noqa: E402

from edgekd.audio.io import read_wav  # noqa: E402
from edgekd.build import run_build  # noqa: E402
from edgekd.config import load_config  # noqa: E402
from edgekd.data.corpus import speaker_of  # noqa: E402
from edgekd.esphome.measure import PositiveRun  # noqa: E402
from edgekd.evaluate import evaluate  # noqa: E402
from edgekd.fmt import table  # noqa: E402
from edgekd.stream import audio_files  # noqa: E402

TRAIN_SPEAKERS = ("george", "jackson", "nicolas")  # the other three (lucas, theo, yweweler) are scored


def fsdd_split(
    root: Path, k: int, extra: Path, scored: Path, words: tuple[str, ...] | None = None
) -> tuple[int, int]:
    """Link k clips per word (of `words`, default all) of the train speakers into `extra` and every clip
    of the others into `scored`; returns (clips linked for training, clips to score)."""
    n_train = n_scored = 0
    for word_dir in sorted(d for d in root.iterdir() if d.is_dir() and (words is None or d.name in words)):
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


def quiet_hits(out: Path, word: str, clips: list[Path]) -> tuple[int, int]:
    """How many of `clips`, each in quiet noise (20-30 dB), make the shipped build fire."""
    engine = shipped_engine(out)
    audio = [read_wav(f, allow_clipped=True) for f in clips]
    return PositiveRun.of(engine, word, audio, [], (20.0, 30.0)).hits(engine.cutoff, engine.window)


def wake_word(args: argparse.Namespace, root: Path) -> int:
    """`--wake-word`: one ESPHome wake-word build per k, measured on the speakers it never heard."""
    word = args.wake_word
    others = sorted(
        p
        for d in root.iterdir()
        if d.is_dir() and d.name != word
        for p in d.glob("*.wav")
        if speaker_of(p) not in TRAIN_SPEAKERS
    )
    commands = REAL_DATA / "real-commands-dev" / word
    rows, record = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "cache"
        for k in args.k:
            extra, scored = Path(tmp) / f"extra{k}", Path(tmp) / f"scored{k}"
            n_train, n_scored = fsdd_split(root, k, extra, scored, (word,))
            overrides = [f'words=["{word}"]', *args.set, *([f"data.extra={extra}"] if k else [])]
            cfg = load_config("esphome", None, overrides)
            t0 = time.perf_counter()
            result = run_build(cfg, Path(tmp) / f"build{k}", cache, progress=False, log=lambda _m: None)
            wall = time.perf_counter() - t0
            r = measure(result.out, word, scored / word)
            r |= {"train_clips": n_train, "scored": n_scored, "s": wall}
            r["other_digits_fire"] = quiet_hits(result.out, word, others)
            if commands.is_dir():
                r["speech_commands_quiet"] = quiet_hits(result.out, word, audio_files([commands]))
            record[k] = r
            op, (lo, hi) = r["operating_point"], r["fa_interval"]
            fires, n_others = r["other_digits_fire"]
            rows.append(
                [str(k), f"{op['cutoff']:g}, {op['window']}",
                 f"{r['fa_per_hour']:.2f} [{lo:.2f}, {hi:.2f}] ({r['fa']} in {r['hours']:.2f} h)",
                 interval(*r["recall"]["real, quiet"]), interval(*r["recall"]["real, in speech"]),
                 interval(*r["speech_commands_quiet"]) if commands.is_dir() else "-",
                 f"{fires} of {n_others}", interval(*r["recall"]["synthetic, quiet"]), f"{wall / 60:.1f}"]
            )  # fmt: skip
            print(f"k={k} done in {wall / 60:.1f} min: {' | '.join(rows[-1])}", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(record, indent=1, default=float))
    speakers = ", ".join(TRAIN_SPEAKERS)
    print(f"\n### `{word}` for ESPHome: trained on k recordings of it by {speakers}; recall of the other")
    print(f"three speakers' {n_scored} recordings at the shipped point (TFLite Micro, ESPHome's loop)\n")
    headers = ["k", "shipped point", "FA/h real speech [95 %]", "FSDD others, quiet"]
    headers += ["FSDD others, in speech", f"Speech Commands `{word}`, quiet", "other digits that fire"]
    headers += ["synthetic, quiet", "build min"]
    print(table(headers, rows))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="esp32s3")
    ap.add_argument("--k", type=int, nargs="+", default=[0, 1, 3, 10, 30], help="real clips per word")
    ap.add_argument("--wake-word", metavar="DIGIT", help="a digit as an ESPHome wake word (--target esphome)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cache", help="stage cache shared by the builds (default: a temporary one)")
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args()
    root = REAL_DATA / "real-digits-fsdd"
    if args.wake_word:
        if not (root / args.wake_word).is_dir():
            sys.exit(f"--wake-word {args.wake_word}: no folder {root / args.wake_word} (zero … nine)")
        return wake_word(args, root)
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
