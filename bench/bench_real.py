"""How a build does on real human speech: build a target, then score it on real recordings.

    python bench/bench_real.py --target esp32s3                      # kws12 on real-commands-dev
    python bench/bench_real.py --target esp32s3 --recipe digits      # digits on real-digits-fsdd
    python bench/bench_real.py --build build/esp32s3                 # score an existing build only
    python bench/bench_real.py --target esp32s3 --set data.synth.kokoro_voices=60 --json out.json
    python bench/bench_real.py --build build/esp32s3 --telephone     # + each folder through an 8 kHz band
    python bench/bench_real.py --build build/esp32s3 --fire-rate 0.1 # + keywords at a held false-fire rate
    python bench/bench_real.py --build build/esp32s3 --curve         # + keywords vs all clips, 1-20 % fires
    python bench/bench_real.py --build build/esp32s3 --by-speaker    # + keyword accuracy per real speaker
    python bench/bench_real.py --build build/esp32s3 --by-class      # + per keyword, and what it is heard as

Every runtime of the build (teacher, float students, fake-quant, INT8 ONNX / LiteRT / TFLite Micro)
on the real folder, with 95 % intervals: "keywords" is the mean of the per-keyword accuracies (Wilson
intervals per class, combined), "all" the accuracy over every clip including `_unknown_` words. The
synthetic test split's figures are printed beside them. The real folders are for measuring only
(`../shared/data/README.md`): nothing here trains, calibrates or picks a threshold on them.

`--telephone` also scores each folder as an 8 kHz channel delivers it (telephony, Bluetooth
hands-free, many web recordings): every clip resampled to 8 kHz, a copy in a temporary folder deleted
afterwards. `real-digits-fsdd` is recorded at 8 kHz already; the other folders are wideband, so the
pair of tables says how much of a build's real-speech figure depends on the band above 4 kHz.

`--fire-rate R` compares builds at one operating point. Argmax accuracy on keyword clips rewards a
model that calls more things a keyword; `real-digits-fsdd` holds no other words to charge it for that.
Windows of the built-in pool's check part (real speech in five languages, mostly none of the keywords, never
trained on) say how often a model fires on other speech: per runtime, the `_unknown_` logit gets the bias
at which it fires on exactly R of those windows (a share, or `teacher`: as often as the teacher does), and
the table gives keyword accuracy there. Only the pool chooses the bias; the real folder is scored, as ever.
`--curve` does the same at rates from 1 to 20 % and adds accuracy over all clips: on `real-commands-dev`
(172 of 249 clips are other words) the pair traces what a bias trades, keywords heard against other words
called keywords, so two builds compare along the whole curve instead of at the one point each was built at.

`--by-speaker` breaks each folder's keyword clips down by the person who spoke them (as shipped: argmax),
with the share each runtime calls `_unknown_`: whether a build fails everyone a little or some people
entirely, and whether the student fails the people its teacher fails. `--by-class` does the same per
keyword and names what the device most often hears instead: whether a word is lost to `_unknown_` or to
another keyword, and whether the teacher loses it too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgekd import runtime_env  # noqa: E402

runtime_env.apply()  # quiets torch's and litert-torch's notices, as the CLI does

import numpy as np  # noqa: E402

from edgekd.audio.io import SAMPLE_RATE, from_pcm16, read_wav, resample, write_wav  # noqa: E402
from edgekd.build import run_build  # noqa: E402
from edgekd.build_dir import BuildDir  # noqa: E402
from edgekd.config import BuildConfig, load_config  # noqa: E402
from edgekd.errors import EdgekdError  # noqa: E402
from edgekd.evaluate import evaluate  # noqa: E402
from edgekd.fmt import table  # noqa: E402
from edgekd.report.markdown import ROW_ORDER, STAGE_HEADERS, stage_rows  # noqa: E402
from edgekd.stats import mean_class_interval, wilson  # noqa: E402
from edgekd.train.operating_point import fire_rate, hold_fire_rate  # noqa: E402

REAL_DATA = Path(os.environ.get("EDGEKD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
# the real folder each recipe is scored on by default
REAL_SETS = {"kws12": ["real-commands-dev"], "digits": ["real-digits-fsdd"]}


def ci(mean: float, lo: float, hi: float) -> str:
    return f"{100 * mean:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def telephone_copy(folder: Path, dest: Path) -> Path:
    """`folder`'s layout with every WAV resampled to 8 kHz (what a narrow-band channel keeps)."""
    for wav in sorted(folder.rglob("*.wav")):
        out = dest / wav.relative_to(folder)
        out.parent.mkdir(parents=True, exist_ok=True)
        clip = read_wav(wav, allow_clipped=True, allow_silent=True)
        write_wav(out, resample(clip, SAMPLE_RATE, 8000), 8000)
    return dest


def figures(parity: dict[str, Any], labels: list[str]) -> dict[str, dict[str, Any]]:
    """Per runtime: keyword mean-per-class accuracy and overall accuracy with 95 % intervals."""
    out = {}
    for name, r in parity["rows"].items():
        cm = r["confusion"]
        n = sum(map(sum, cm))
        k = sum(cm[i][i] for i in range(len(cm)))
        kw = mean_class_interval(cm, parity["classes"], labels)
        out[name] = {
            "keywords": kw,
            "all": (k / n, *wilson(k, n)),
            "agree_fp32": r["agreement_with_student_fp32"],
            "n": n,
        }
    return out


def figures_table(figs: dict[str, dict[str, Any]], primary: str) -> str:
    rows = []
    for name in ROW_ORDER:
        f = figs.get(name)
        if f is None:
            continue
        rows.append(
            [
                name + (" (device)" if name == primary else ""),
                "—" if f["keywords"] is None else ci(*f["keywords"]),
                ci(*f["all"]),
                f"{100 * f['agree_fp32']:.2f}",
            ]
        )
    return table(["runtime", "keywords % [95% CI]", "all clips % [95% CI]", "agree fp32 %"], rows)


@dataclass
class HeldScores:
    """Every runtime's logits on windows of the pool's check part and on each real folder."""

    cfg: BuildConfig
    on_pool: dict[str, np.ndarray]
    real: dict[str, Any]  # folder name -> edgekd.verify.scoring.Scored

    @property
    def unknown(self) -> int:
        return self.cfg.classes.index("_unknown_")

    @property
    def keywords(self) -> list[int]:
        return [self.cfg.classes.index(w) for w in self.cfg.labels]

    def runtimes(self) -> list[str]:
        return [r for r in ROW_ORDER if r in self.on_pool]

    def bias_for(self, runtime: str, rate: float) -> float:
        """The `_unknown_` bias at which `runtime` fires on `rate` of the pool's windows."""
        return hold_fire_rate(self.on_pool[runtime], self.keywords, self.unknown, rate)

    def confusion(self, folder: str, runtime: str, bias: float) -> np.ndarray:
        """`runtime`'s confusion matrix on `folder` with `bias` added to its `_unknown_` logit."""
        s = self.real[folder]
        logits = s.logits[runtime].copy()
        logits[:, self.unknown] += bias
        cm = np.zeros((len(self.cfg.classes),) * 2, np.int64)
        np.add.at(cm, (s.y, logits.argmax(1)), 1)
        return cm


def held_scores(build: Path, folders: dict[str, Path], windows: int) -> HeldScores:
    """Score `windows` windows of the pool's check part (real speech, never trained on; 0: none) and
    `folders`."""
    from edgekd.data.real_pool import BUILD_POOL
    from edgekd.data.real_pool import windows as pool_windows
    from edgekd.verify.scoring import score_clips, score_folder

    b = BuildDir(build)
    cfg = b.config()
    on_pool: dict[str, np.ndarray] = {}
    if windows:
        clips = from_pcm16(pool_windows(BUILD_POOL, windows, cfg.seed))
        _, on_pool = score_clips(cfg, clips, b.weights, b.weights, b.path, b.features_shape(), progress=False)
    real = {
        name: score_folder(cfg, f, b.weights, b.weights, b.path, b.features_shape(), progress=False)
        for name, f in folders.items()
    }
    return HeldScores(cfg, on_pool, real)


def held_rate_table(h: HeldScores, rate: float | None) -> tuple[str, dict]:
    """Per runtime and folder: keyword accuracy with the `_unknown_` bias that makes the runtime fire on
    `rate` of the pool's windows (None: as often as the teacher does there)."""
    if rate is None:
        rate = fire_rate(h.on_pool["teacher_fp32"], h.keywords, h.unknown)
    rows, record = [], {"rate": rate}
    for rt in h.runtimes():
        bias = h.bias_for(rt, rate)
        as_built = fire_rate(h.on_pool[rt], h.keywords, h.unknown)
        cells = [rt, f"{100 * as_built:.1f}", f"{bias:+.2f}"]
        record[rt] = {"fire_rate": as_built, "bias": bias}
        for name in h.real:
            kw = mean_class_interval(h.confusion(name, rt, bias), h.cfg.classes, h.cfg.labels)
            cells.append("—" if kw is None else ci(*kw))
            record[rt][name] = kw
        rows.append(cells)
    heads = ["runtime", "pool fire % as built", "_unknown_ bias", *(f"{n} keywords %" for n in h.real)]
    return table(heads, rows), record


# pool fire rates the --curve table holds each runtime at
CURVE_RATES = (0.01, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20)
CURVE_RUNTIMES = ("teacher_fp32", "student_fp32", "student_int8_tflm")


def curve_table(h: HeldScores) -> tuple[str, dict]:
    """Keywords against everything else: per runtime and pool fire rate, keyword accuracy and accuracy
    over all clips of each real folder. One bias moves a model along this curve (more keywords heard,
    more other words called keywords); a better model lies above another's at every rate, which no single
    operating point shows."""
    heads = ["runtime", "pool fire %", "_unknown_ bias"]
    for name in h.real:
        heads += [f"{name} keywords %", f"{name} all clips %"]
    rows, record = [], {}
    for rt in [r for r in CURVE_RUNTIMES if r in h.on_pool]:
        record[rt] = []
        for rate in CURVE_RATES:
            bias = h.bias_for(rt, rate)
            cells, point = [rt, f"{100 * rate:.0f}", f"{bias:+.2f}"], {"rate": rate, "bias": bias}
            for name in h.real:
                cm = h.confusion(name, rt, bias)
                kw = mean_class_interval(cm, h.cfg.classes, h.cfg.labels)
                right, n = int(np.trace(cm)), int(cm.sum())
                everything = (right / n, *wilson(right, n))
                cells += ["—" if kw is None else f"{100 * kw[0]:.1f}", f"{100 * everything[0]:.1f}"]
                point[name] = {"keywords": kw, "all": everything}
            rows.append(cells)
            record[rt].append(point)
    return table(heads, rows), record


def breakdown_table(h: HeldScores, folder: str, by: Literal["speaker", "class"]) -> tuple[str, dict]:
    """Keyword clips of `folder` per speaker or per keyword (fewest right on the device first), as
    shipped: per runtime the clips right and the share called `_unknown_`, and the device's commonest wrong
    call — whether a build fails everyone a little or some people or words entirely, whether the student
    fails where its teacher fails, and what it hears instead."""
    s = h.real[folder]
    keyword = np.isin(s.y, h.keywords)
    groups = s.groups if by == "speaker" else np.asarray(h.cfg.classes)[s.y]
    runtimes = [r for r in CURVE_RUNTIMES if r in s.logits]
    pred = {rt: s.logits[rt].argmax(1) for rt in runtimes}
    unknown = h.cfg.classes.index("_unknown_") if "_unknown_" in h.cfg.classes else -1
    device = runtimes[-1]
    record = {}
    for g in sorted(set(groups[keyword])):
        m = keyword & (groups == g)
        wrong = pred[device][m][pred[device][m] != s.y[m]]
        common = np.bincount(wrong, minlength=len(h.cfg.classes)) if len(wrong) else None
        record[str(g)] = {
            "n": int(m.sum()),
            **{
                rt: {
                    "right": int((pred[rt][m] == s.y[m]).sum()),
                    "unknown": int((pred[rt][m] == unknown).sum()),
                }
                for rt in runtimes
            },
            "device_commonest_wrong": None
            if common is None
            else {"class": h.cfg.classes[int(common.argmax())], "clips": int(common.max())},
        }
    order = sorted(record, key=lambda k: record[k][device]["right"] / record[k]["n"])
    rows = []
    for g in order:
        r = record[g]
        cells = [g.removeprefix("speaker:"), str(r["n"])]
        for rt in runtimes:
            cells += [
                ci(r[rt]["right"] / r["n"], *wilson(r[rt]["right"], r["n"])),
                f"{100 * r[rt]['unknown'] / r['n']:.0f}",
            ]
        c = r["device_commonest_wrong"]
        cells.append("—" if c is None else f"{c['class']} ({100 * c['clips'] / r['n']:.0f} %)")
        rows.append(cells)
    heads = [by, "keyword clips"]
    for rt in runtimes:
        heads += [f"{rt} % [95% CI]", "→ _unknown_ %"]
    return table([*heads, f"{device}: commonest wrong call"], rows), record


def fire_rate_arg(value: str) -> float | str:
    """`--fire-rate`: a share of the pool's windows in [0, 1], or `teacher`."""
    if value == "teacher":
        return value
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r}: give a share between 0 and 1 (e.g. 0.1) or 'teacher'")
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="esp32s3")
    ap.add_argument("--recipe", default="kws12")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cache", help="stage cache (default: a fresh temporary one, i.e. a cold build)")
    ap.add_argument("--build", help="score this finished build instead of building")
    ap.add_argument("--real", nargs="+", help="real folders (default: by recipe, under ../shared/data)")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--telephone", action="store_true", help="also score each folder resampled to 8 kHz")
    ap.add_argument(
        "--fire-rate",
        type=fire_rate_arg,
        help="also score at the bias firing on this share of the pool ('teacher': the teacher's share)",
    )
    ap.add_argument(
        "--curve",
        action="store_true",
        help="also tabulate keywords and all clips at a range of pool fire rates",
    )
    ap.add_argument(
        "--by-speaker", action="store_true", help="also tabulate keyword accuracy per speaker of each folder"
    )
    ap.add_argument(
        "--by-class", action="store_true", help="also tabulate accuracy and wrong calls per keyword"
    )
    ap.add_argument("--pool-windows", type=int, default=1500, help="pool windows for --fire-rate and --curve")
    args = ap.parse_args()
    try:
        cfg = (
            BuildDir(Path(args.build)).config()
            if args.build
            else load_config(args.target, args.recipe, args.set)
        )
    except EdgekdError as e:  # a wrong folder or recipe: say so, no traceback
        ap.error(str(e))
    if (args.fire_rate is not None or args.curve) and "_unknown_" not in cfg.classes:
        ap.error("--fire-rate and --curve bias the `_unknown_` logit; this build has none: leave them out")

    with tempfile.TemporaryDirectory() as tmp:
        record: dict[str, Any] = {"overrides": args.set}
        if args.build:
            build = Path(args.build)
        else:
            cache = Path(args.cache) if args.cache else Path(tmp) / "cache"
            t0 = time.perf_counter()
            result = run_build(cfg, Path(tmp) / "build", cache, progress=False, log=lambda _m: None)
            build = result.out
            wall = time.perf_counter() - t0
            timings = json.loads((build / "manifest.json").read_text())["timings"]
            print(f"## {cfg.target} / {cfg.recipe}: build {wall / 60:.1f} min ({wall:.0f} s)", end="")
            print(f" — gates {'PASS' if result.passed else 'FAIL'}\n")
            print(table(STAGE_HEADERS, stage_rows(timings)), "\n")
            record |= {"build_s": wall, "passed": result.passed, "timings": timings}
        parity = json.loads((build / "parity.json").read_text())
        synth = figures(parity, cfg.labels)
        record["synthetic"] = synth
        print(f"### synthetic test split ({parity['n_clips']} clips, voices never heard in training)\n")
        print(figures_table(synth, parity["primary"]), "\n")
        names = args.real or REAL_SETS.get(cfg.recipe, [])
        folders = {f.name: f for f in (Path(n) if Path(n).is_dir() else REAL_DATA / n for n in names)}
        if args.telephone:
            narrow = {f"{k} @ 8 kHz": telephone_copy(f, Path(tmp) / f"{k}-8k") for k, f in folders.items()}
            folders |= narrow
        for name, folder in folders.items():
            t0 = time.perf_counter()
            report = evaluate(build, folder, progress=False)
            real = figures(report, cfg.labels)
            record[name] = real
            took = time.perf_counter() - t0
            print(f"### real: {name} ({report['n_clips']} clips; scored in {took:.0f} s)\n")
            print(figures_table(real, report["primary"]), "\n")
        on_pool = args.fire_rate is not None or args.curve
        held = (
            held_scores(build, folders, args.pool_windows if on_pool else 0)
            if on_pool or args.by_speaker or args.by_class
            else None
        )
        if held is not None and args.fire_rate is not None:
            rate = None if args.fire_rate == "teacher" else args.fire_rate
            text, record["held_fire_rate"] = held_rate_table(held, rate)
            rate = f"{100 * record['held_fire_rate']['rate']:.1f} %"
            print(f"### keywords at a {rate} fire rate on {args.pool_windows} pool windows\n")
            print(text, "\n")
        if held is not None and args.curve:
            text, record["curve"] = curve_table(held)
            print(f"### keywords against all clips, at pool fire rates ({args.pool_windows} pool windows)\n")
            print(text, "\n")
        for by, wanted in (("speaker", args.by_speaker), ("class", args.by_class)):
            if held is None or not wanted:
                continue
            record[f"by_{by}"] = {}
            for name in held.real:
                text, record[f"by_{by}"][name] = breakdown_table(held, name, by)
                print(f"### {name}: keyword clips by {by}, as shipped\n")
                print(text, "\n")
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
