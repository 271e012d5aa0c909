"""Distillation under domain shift: does the teacher's knowledge reach the student?

    python bench/bench_distill.py                       # both shifts, every variant, 3 seeds
    python bench/bench_distill.py --variants plain,default --seeds 0 --shifts piper2espeak

The offline corpus has two synthesis engines with very different voices: Piper (one neural voice,
natural prosody) and espeak-ng (200 formant voices). Each shift trains on one engine and tests on
the other, which training never heard — the stand-in, on a machine without real recordings, for
"trained on synthetic voices, used by real people":

- piper2espeak: train/validate on Piper clips (one speaker, varied length/noise scales); in-domain
  test = held-out Piper clips;
  shifted test = espeak-ng speakers of the corpus test split; unlabeled pool = the other espeak-ng
  speakers (labels dropped), what `--unlabeled` would hold.
- espeak2piper: train/validate/test in-domain on the corpus' espeak-ng splits; half the Piper
  clips are the shifted test, the other half the unlabeled pool.

Every student is trained by the build's own `fit_float_student` with the build's config plus the
variant's overrides (float students: QAT is measured separately by the parity gates). The teacher
is the build's teacher, fitted on the same labelled training views. Rows: mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgekd.artifacts import stable_hash, write_npz  # noqa: E402
from edgekd.audio.frontend import compute_features, make_frontend  # noqa: E402
from edgekd.audio.io import from_pcm16  # noqa: E402
from edgekd.config import BuildConfig, load_config  # noqa: E402
from edgekd.data.corpus import Corpus  # noqa: E402
from edgekd.data.views import make_views  # noqa: E402
from edgekd.fmt import table  # noqa: E402
from edgekd.pipeline import Stages, default_cache_root  # noqa: E402
from edgekd.stages.data import stage_corpus  # noqa: E402
from edgekd.stages.distill import distills, fit_float_student  # noqa: E402
from edgekd.train.losses import UNLABELED  # noqa: E402
from edgekd.train.soft_labels import SoftLabels, standardise  # noqa: E402
from edgekd.train.trainer import (
    TrainData,  # noqa: E402
    predict,  # noqa: E402
)

# name -> overrides on top of the target + recipe config. "default" is the recipe as shipped.
HEAVY_AUG = [
    "data.augment.views=4",
    "data.augment.pitch_prob=0.5",
    "data.augment.tempo_prob=0.5",
    "data.augment.bandlimit_prob=0.3",
    "data.augment.mix_prob=0.2",
]
# The shift's pool stands for a user's `--unlabeled DIR` (soft labels, weight 1), so the recipe's built-in
# real pool and its domain critic are left out of every variant: this bench measures what distillation
# carries from synthetic voices to synthetic voices (bench_real.py and bench_student.py measure on people).
BASE = ["data.unlabeled=null", "distill.domain_weight=0"]
# name -> overrides on top of the target + recipe config + BASE ("unlabeled": train with the shift's pool).
# "default" is the recipe as `edgekd build` runs it but for BASE; "kd" is plain KD (no feature matching).
VARIANTS: dict[str, list[str]] = {
    "plain": ["distill.alpha=0", "distill.feature_weight=0"],
    "kd_clean": ["distill.feature_weight=0", "data.augment.views=0"],
    "kd": ["distill.feature_weight=0"],
    "kd_a0.9": ["distill.alpha=0.9", "distill.feature_weight=0"],
    "kd_schedule": [
        "distill.feature_weight=0",
        "distill.alpha=0.3",
        "distill.alpha_end=0.9",
        "distill.schedule=cosine",
        "distill.temperature=8",
        "distill.temperature_end=2",
    ],
    "kd_ema_mixup": ["distill.feature_weight=0", "train.ema_decay=0.995", "train.mixup=0.4"],
    "plain_heavy_aug": ["distill.alpha=0", "distill.feature_weight=0", *HEAVY_AUG],
    "kd_heavy_aug": ["distill.feature_weight=0", *HEAVY_AUG],
    "kd_unlabeled": ["distill.feature_weight=0", "unlabeled"],
    "default_skip_wrong": ["distill.skip_wrong_teacher=true"],
    "default": [],  # alpha 0.5, T 4, feature matching 1.0 (configs/kws12.yaml)
    "default_unlabeled": ["unlabeled"],
}


@dataclass
class Shift:
    train: np.ndarray
    validation: np.ndarray
    test_in: np.ndarray
    test_shift: np.ndarray
    pool: np.ndarray


def _engine(corpus: Corpus) -> np.ndarray:
    return np.array([g.split(":")[0] for g in corpus.groups])


def _halves(rows: np.ndarray, seed: int, frac: float) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of `rows`, about `frac` to the first part (Piper is one speaker: rows, not groups)."""
    first = np.zeros(len(rows), bool)
    first[np.random.default_rng(seed).permutation(len(rows))[: round(frac * len(rows))]] = True
    return rows[first], rows[~first]


def make_shift(corpus: Corpus, name: str, seed: int) -> Shift:
    eng, split = _engine(corpus), corpus.splits
    noise = {s: np.flatnonzero((eng == "noise") & (split == s)) for s in ("train", "validation", "test")}
    espeak = {s: np.flatnonzero((eng == "espeak") & (split == s)) for s in ("train", "validation", "test")}
    piper = np.flatnonzero(eng == "piper")
    cat = np.concatenate
    if name == "piper2espeak":
        p_train, rest = _halves(piper, seed, 0.7)
        p_val, p_test = _halves(rest, seed + 1, 0.4)
        return Shift(
            cat([p_train, noise["train"]]),
            cat([p_val, noise["validation"]]),
            cat([p_test, noise["test"]]),
            cat([espeak["test"], noise["test"]]),
            espeak["train"],
        )
    if name == "espeak2piper":
        pool, test = _halves(piper, seed, 0.5)
        return Shift(
            cat([espeak["train"], noise["train"]]),
            cat([espeak["validation"], noise["validation"]]),
            cat([espeak["test"], noise["test"]]),
            cat([test, noise["test"]]),
            pool,
        )
    raise SystemExit(f"unknown shift {name!r}; known: piper2espeak, espeak2piper")


def prepare(cfg: BuildConfig, corpus: Corpus, shift: Shift, cache: Path) -> dict[str, np.ndarray]:
    """Views, student features and the teacher's outputs for one shift (cached: the slow part)."""
    key = stable_hash(
        {k: getattr(shift, k).tolist() for k in ("train", "validation", "test_in", "test_shift", "pool")}
        | {
            "augment": cfg.data.augment.model_dump(mode="json"),
            "teacher": cfg.teacher.model_dump(mode="json"),
            "seed": cfg.seed,
            "frontend": cfg.frontend.model_dump(mode="json"),
            "v": 2,
        }
    )
    path = cache / f"{key}.npz"
    if path.exists():
        return dict(np.load(path))
    from edgekd.models.teachers import build_teacher

    fe = make_frontend(cfg.frontend.name)
    views, clip, view = make_views(
        corpus.clips, shift.train, cfg.data.augment, cfg.seed, corpus.backgrounds, False
    )
    pool, _, _ = make_views(
        corpus.clips, shift.pool, cfg.data.augment, cfg.seed + 7919, corpus.backgrounds, False
    )
    audio = {
        "train": from_pcm16(views),
        "pool": from_pcm16(pool),
        **{s: corpus.float_clips(getattr(shift, s)) for s in ("validation", "test_in", "test_shift")},
    }
    out: dict[str, np.ndarray] = {"y_train": corpus.labels[clip], "view": view}
    for s in ("validation", "test_in", "test_shift"):
        out[f"y_{s}"] = corpus.labels[getattr(shift, s)]
    teacher = build_teacher(cfg.teacher, cfg.classes, cfg.seed, torch.device("cpu"))
    feats = {s: teacher.features(a) for s, a in audio.items()}
    teacher.fit(feats["train"], out["y_train"], feats["validation"], out["y_validation"], progress=False)
    emb_train = teacher.embeddings(feats["train"])
    for s, a in audio.items():
        out[f"x_{s}"] = compute_features(fe, a)
        out[f"t_{s}"] = teacher.logits(feats[s])
        out[f"e_{s}"] = standardise(teacher.embeddings(feats[s]), emb_train)
    cache.mkdir(parents=True, exist_ok=True)
    write_npz(path, **out)
    return out


def run_variant(cfg: BuildConfig, d: dict[str, np.ndarray], unlabeled: bool, seed: int) -> dict[str, float]:
    x, y, t, e = d["x_train"], d["y_train"], d["t_train"], d["e_train"]
    if unlabeled:
        x = np.concatenate([x, d["x_pool"]])
        y = np.concatenate([y, np.full(len(d["x_pool"]), UNLABELED)])
        t, e = np.concatenate([t, d["t_pool"]]), np.concatenate([e, d["e_pool"]])
    soft = SoftLabels.from_logits(t, cfg.distill.top_k, e) if distills(cfg) else None
    t0 = time.perf_counter()
    model, result = fit_float_student(
        cfg, TrainData(x, y, d["x_validation"], d["y_validation"]), soft, torch.device("cpu"), seed, False
    )
    wall = time.perf_counter() - t0
    acc = {
        s: float((predict(model, d[f"x_{s}"], torch.device("cpu")).argmax(1) == d[f"y_{s}"]).mean())
        for s in ("test_in", "test_shift")
    }
    epoch_s = float(np.median([h["epoch_s"] for h in result.history]))
    return {
        **acc,
        "wall_s": wall,
        "epoch_s": epoch_s,
        "step_ms": 1000 * epoch_s / max(1, -(-len(x) // cfg.train.batch_size)),
    }


def fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    a = np.array(values) * scale
    return f"{a.mean():.{digits}f} ± {a.std():.{digits}f}" if len(a) > 1 else f"{a.mean():.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="esp32s3")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="applies to every variant"
    )
    ap.add_argument("--shifts", default="piper2espeak,espeak2piper")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = load_config(args.target, overrides=[*BASE, *args.set])
    cache = args.cache or default_cache_root()
    corpus = Corpus.load(
        stage_corpus(base, Stages(cache, log=lambda _m: None), progress=False).dir / "corpus.npz"
    )
    seeds = [int(s) for s in args.seeds.split(",")]
    for shift_name in args.shifts.split(","):
        shift = make_shift(corpus, shift_name, base.seed)
        d = prepare(base, corpus, shift, cache / "bench_distill")
        teacher = {s: float((d[f"t_{s}"].argmax(1) == d[f"y_{s}"]).mean()) for s in ("test_in", "test_shift")}
        print(
            f"\n## {shift_name}: train {len(shift.train)} clips, test in-domain {len(shift.test_in)}, "
            f"shifted {len(shift.test_shift)}, unlabeled pool {len(shift.pool)} clips; seeds {seeds}\n",
            flush=True,
        )
        rows = [
            ["teacher", f"{100 * teacher['test_in']:.1f}", f"{100 * teacher['test_shift']:.1f}"] + ["—"] * 3
        ]
        plain_shift = None
        for name in args.variants.split(","):
            extra = VARIANTS[name]
            overrides = [*BASE, *args.set, *(o for o in extra if o != "unlabeled")]
            cfg = load_config(args.target, overrides=overrides)
            dv = prepare(cfg, corpus, shift, cache / "bench_distill")  # the variant's own views and teacher
            res = [run_variant(cfg, dv, "unlabeled" in extra, s) for s in seeds]
            shifted = [r["test_shift"] for r in res]
            plain_shift = shifted if name == "plain" else plain_shift
            gain = f"{100 * (np.mean(shifted) - np.mean(plain_shift)):+.1f}" if plain_shift else "—"
            rows.append(
                [
                    name,
                    fmt([r["test_in"] for r in res]),
                    fmt(shifted),
                    gain,
                    fmt([r["step_ms"] for r in res], 1.0, 1),
                    fmt([r["wall_s"] for r in res], 1.0, 0),
                ]
            )
            print("  " + " | ".join(rows[-1]), flush=True)
        print()
        print(table(["student", "in-domain %", "shifted %", "Δ vs plain", "ms/step", "wall s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
