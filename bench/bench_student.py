"""Screen a change to the student's training in minutes, on people, along the whole curve.

    python bench/bench_student.py --build build/esp32s3 --cache ~/.cache/edgekd --seeds 0 1 2 \\
        --variant "no pool" data.unlabeled=null distill.domain_weight=0 \\
        --variant "critic 1" distill.domain_weight=1

A whole build takes 11-19 minutes on this machine; its float student alone 2-4. This bench trains the float
student of a finished build again from the build's cached features and teacher outputs, with the build's
own `fit_float_student`, once per seed for the control (the build's config; the pool's rows left out unless
that config trains on them; `--no-control` leaves it out) and for each `--variant NAME KEY=VALUE ...`
(the build's config with those overrides). Each student is scored as `bench_real.py --curve` scores a
build: held at pool fire rates of 1 to 20 % (the `_unknown_` bias chosen on windows of the pool's check
part, never trained on), keywords beside all clips of each real folder. One run of 77 keyword clips moves
by ±4 points between seeds; the summary averages each curve over 4-15 %, where builds ship, and several
seeds say what one cannot.

Float students before QAT: a change that wins here is then built and scored INT8 on TFLite Micro
(`bench_real.py`). Variants that train on the pool's rows (`data.unlabeled`) need a build whose features
hold them (the `kws12` and `digits` recipes' builds do). The real folders are for measuring only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_real's curve

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_real import REAL_DATA, REAL_SETS, HeldScores, curve_table  # noqa: E402

from edgekd.audio.frontend import compute_features, make_frontend  # noqa: E402
from edgekd.audio.io import from_pcm16  # noqa: E402
from edgekd.build_dir import BuildDir  # noqa: E402
from edgekd.config import BuildConfig, with_overrides  # noqa: E402
from edgekd.data.real_pool import BUILD_POOL, windows  # noqa: E402
from edgekd.errors import EdgekdError  # noqa: E402
from edgekd.fmt import table  # noqa: E402
from edgekd.stages.distill import fit_float_student, labelled, load_soft_labels, load_train_data  # noqa: E402
from edgekd.train.operating_point import fire_rate  # noqa: E402
from edgekd.train.soft_labels import SoftLabels  # noqa: E402
from edgekd.train.trainer import TrainData, predict  # noqa: E402
from edgekd.verify.scoring import Scored, read_folder  # noqa: E402

CPU = torch.device("cpu")
# the summary averages each curve over the range builds ship in (as built they fire on 6-14 % of the pool)
SUMMARY_RATES = (0.04, 0.06, 0.08, 0.10, 0.12, 0.15)


def training_rows(cfg: BuildConfig, features: Path, teacher: Path) -> tuple[TrainData, SoftLabels]:
    """The build's training rows and soft labels as `cfg` would train on them: the pool's rows only when
    `cfg.data.unlabeled` is set (they follow the labelled rows in both caches)."""
    data, soft = load_train_data(cfg, features), load_soft_labels(cfg, teacher)
    has_pool = bool((data.y_train < 0).any())
    if cfg.data.unlabeled is None:
        n = int((data.y_train >= 0).sum())

        def head(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[:n]

        return labelled(data), SoftLabels(
            soft.logits[:n], soft.n_classes, head(soft.index), head(soft.embeddings)
        )
    if not has_pool:
        raise EdgekdError(
            f"{features}: the build's features hold no pool rows for data.unlabeled={cfg.data.unlabeled}; "
            "build with --set data.unlabeled=builtin:debian-speech first"
        )
    return data, soft


def summary(record: dict[str, Any], folders: list[str]) -> list[str]:
    """Mean keywords and mean all clips over SUMMARY_RATES, per folder."""
    cells = []
    for name in folders:
        points = [p for p in record["student_fp32"] if p["rate"] in SUMMARY_RATES]
        kw = [p[name]["keywords"][0] for p in points if p[name]["keywords"]]
        cells += [
            f"{100 * np.mean(kw):.1f}" if kw else "—",
            f"{100 * np.mean([p[name]['all'][0] for p in points]):.1f}",
        ]
    return cells


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="a finished build directory")
    ap.add_argument("--cache", required=True, help="the stage cache the build used (its features, teacher)")
    ap.add_argument(
        "--variant", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE", help="a named change"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--no-control", action="store_true", help="only the variants (e.g. the control is one)")
    ap.add_argument("--real", nargs="+", help="real folders (default: by recipe, under ../shared/data)")
    ap.add_argument("--pool-windows", type=int, default=1500)
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args()
    build = Path(args.build)
    try:
        base = BuildDir(build).config()
        keys = json.loads((build / "manifest.json").read_text())["cache_keys"]
        variants = {} if args.no_control else {"control": base}
        variants |= {v[0]: with_overrides(base, v[1:]) for v in args.variant}
    except EdgekdError as e:
        ap.error(str(e))
    if not variants:
        ap.error("--no-control needs at least one --variant")
    if "_unknown_" not in base.classes:
        ap.error("the curve biases the `_unknown_` logit; this build has none")
    if not keys.get("teacher"):
        ap.error(f"{build} was built without a teacher (distillation off): no soft labels to re-train from")
    features = Path(args.cache) / "features" / keys["features"]
    teacher = Path(args.cache) / "teacher" / keys["teacher"]
    if not (features / "features.npz").is_file() or not teacher.is_dir():
        ap.error(f"{args.cache}: no cached features/teacher of {build}; pass the --cache the build used")
    torch.set_num_threads(base.train.threads)
    fe = make_frontend(base.frontend.name)
    x_pool = compute_features(fe, from_pcm16(windows(BUILD_POOL, args.pool_windows, base.seed)))
    real = {}
    for name in args.real or REAL_SETS.get(base.recipe, []):
        folder = Path(name) if Path(name).is_dir() else REAL_DATA / name
        clips = read_folder(base, folder, progress=False)
        real[folder.name] = (
            compute_features(fe, clips.float_clips(np.arange(len(clips.labels)))),
            clips.labels,
        )
    test = np.load(features / "features.npz")
    keywords, unknown = [base.classes.index(w) for w in base.labels], base.classes.index("_unknown_")

    rows, record = [], {}
    for vname, cfg in variants.items():
        try:
            data, soft = training_rows(cfg, features, teacher)
        except EdgekdError as e:
            ap.error(f"variant {vname}: {e}")
        for seed in args.seeds:
            t0 = time.perf_counter()
            model, fit = fit_float_student(
                cfg, data, soft, CPU, seed, progress=True, desc=f"{vname} seed {seed}"
            )
            took = time.perf_counter() - t0
            on_pool = {"student_fp32": predict(model, x_pool, CPU)}
            scored = {
                n: Scored(x, y, {"student_fp32": predict(model, x, CPU)}, {}, [], None)
                for n, (x, y) in real.items()
            }
            text, curve = curve_table(HeldScores(cfg, on_pool, scored))
            synth = float((predict(model, test["test"], CPU).argmax(1) == test["y_test"]).mean())
            fires = fire_rate(on_pool["student_fp32"], keywords, unknown)
            print(f"### {vname}, seed {seed}: {took:.0f} s, synthetic test {100 * synth:.1f} %\n\n{text}\n")
            rows.append(
                [
                    vname,
                    str(seed),
                    f"{took:.0f}",
                    f"{fit.best_epoch}/{len(fit.history)}",
                    f"{100 * synth:.1f}",
                    f"{100 * fires:.1f}",
                    *summary(curve, list(real)),
                ]
            )
            record[f"{vname}/{seed}"] = {
                "train_s": took,
                "epoch_kept": fit.best_epoch,
                "synthetic": synth,
                "pool_fire": fires,
                "curve": curve,
            }
    heads = ["variant", "seed", "train s", "epoch kept", "synthetic %", "pool fire % as trained"]
    for n in real:
        heads += [f"{n} keywords, mean", f"{n} all clips, mean"]
    rates = ", ".join(f"{100 * r:.0f}" for r in SUMMARY_RATES)
    print(f"### float students, each curve averaged over pool fire rates {rates} %\n")
    print(table(heads, rows))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
