"""QAT variants measured on real audio: does the INT8 model keep the float student's decisions on people?

    python bench/bench_qat_real.py --build build/esp32s3 --cache ~/.cache/edgekd              # as built
    python bench/bench_qat_real.py --build build/esp32s3 --cache ~/.cache/edgekd --qat         # re-run QAT
    python bench/bench_qat_real.py ... --qat --set train.qat_lr=1e-4 --set train.qat_self_distill=1
    python bench/bench_qat_real.py ... --qat --real-windows 6000      # + real-pool windows in QAT (KD only)

The build's float student stays fixed; `--qat` re-runs quantization-aware training from it exactly as
the student stage does (`edgekd.stages.distill.run_qat`), converts to TFLite and runs TFLite Micro.
Three sets: windows of the built-in real pool's check files (1 file in 5, by a hash of its path;
`--real-windows` trains on the other files), the real folder (`real-commands-dev` by default; measuring
only), and the build's synthetic test split. Per set: TFLM vs the float twin (the shipped weights in
float), TFLM vs the fake-quant graph, the fake-quant graph vs the twin, on labelled sets the keyword
accuracy before QAT and on TFLM, and the share of inputs whose two best float logits are closer than
one int8 output step (about half of those flip under any int8 output, however exact the kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgekd.audio.frontend import compute_features, make_frontend  # noqa: E402
from edgekd.audio.io import from_pcm16  # noqa: E402
from edgekd.build_dir import BuildDir  # noqa: E402
from edgekd.config import BuildConfig, with_overrides  # noqa: E402
from edgekd.data.real_pool import BUILD_POOL, windows  # noqa: E402
from edgekd.models.restore import (  # noqa: E402
    example_batch,
    load_qat_student,
    make_student,
    predict_float_twin,
)
from edgekd.stages.distill import labelled, load_train_data  # noqa: E402
from edgekd.train.losses import UNLABELED  # noqa: E402
from edgekd.train.trainer import (
    TrainData,  # noqa: E402
    predict,  # noqa: E402
)
from edgekd.verify.runners import TFLMRunner  # noqa: E402
from edgekd.verify.scoring import read_folder  # noqa: E402
from edgekd.verify.tflite_info import describe  # noqa: E402

REAL_DATA = Path(os.environ.get("EDGEKD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CPU = torch.device("cpu")


def pool_features(cfg: BuildConfig, check: bool, n: int, seed: int) -> np.ndarray:
    clips = from_pcm16(windows(BUILD_POOL, n, seed, "check" if check else "train"))
    return compute_features(make_frontend(cfg.frontend.name), clips)


def rerun_qat(
    cfg: BuildConfig, model: torch.nn.Module, data: TrainData, out: Path
) -> tuple[torch.fx.GraphModule, Path]:
    """QAT from the fixed float student, as the student stage runs it, then the TFLite conversion."""
    from edgekd.export.tflite import export_tflite
    from edgekd.stages.distill import qat_spec, run_qat
    from edgekd.train.qat import convert_qat

    prepared, _ = run_qat(model, data, qat_spec(cfg), cfg.seed + 1, progress=True)
    example = example_batch(data.x_val, 1)
    path = export_tflite(
        convert_qat(prepared).for_tflite, example, out / "model.tflite", cfg.export.drop_bias_scales
    )
    return prepared, path


def row(
    cfg: BuildConfig,
    model: torch.nn.Module,
    prepared: torch.fx.GraphModule,
    tflm: TFLMRunner,
    step: float,
    x: np.ndarray,
    y: np.ndarray | None,
) -> dict[str, Any]:
    twin, fq = predict_float_twin(prepared, x), predict(prepared, x, CPU)
    pre, dev = predict(model, x, CPU), tflm.predict(x)
    gap = np.diff(np.sort(twin, 1)[:, -2:], axis=1)[:, 0]
    out: dict[str, Any] = {
        "n": len(x),
        "tflm_vs_twin": float((dev.argmax(1) == twin.argmax(1)).mean()),
        "tflm_vs_fake_quant": float((dev.argmax(1) == fq.argmax(1)).mean()),
        "fake_quant_vs_twin": float((fq.argmax(1) == twin.argmax(1)).mean()),
        "within_one_step": float((gap < step).mean()),
    }
    if y is not None:
        keywords = [cfg.classes.index(w) for w in cfg.labels if (y == cfg.classes.index(w)).any()]

        def kw(logits: np.ndarray) -> float:
            return float(np.mean([(logits[y == c].argmax(1) == c).mean() for c in keywords]))

        out.update(keywords_pre_qat=kw(pre), keywords_tflm=kw(dev))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="a finished build directory")
    ap.add_argument("--cache", required=True, help="the stage cache the build used (its features)")
    ap.add_argument("--qat", action="store_true", help="re-run QAT from the build's float student")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="QAT config overrides")
    ap.add_argument("--real-windows", type=int, default=0, help="real-pool windows added to QAT (KD only)")
    ap.add_argument("--check-windows", type=int, default=1500)
    ap.add_argument("--real", default=str(REAL_DATA / "real-commands-dev"))
    ap.add_argument("--out", default="bench-qat-real", help="where a re-run's model.tflite goes")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    build = Path(args.build)
    cfg = with_overrides(BuildDir(build).config(), args.set)
    torch.set_num_threads(cfg.train.threads)
    manifest = json.loads((build / "manifest.json").read_text())
    features = Path(args.cache) / "features" / manifest["cache_keys"]["features"] / "features.npz"
    f = np.load(features)
    model = make_student(cfg, f["train"].shape[1:])
    model.load_state_dict(torch.load(build / "weights" / "float.pt", weights_only=True))
    t0 = time.perf_counter()
    if args.qat:
        data = labelled(load_train_data(cfg, features.parent))  # the student stage: labelled rows only
        if args.real_windows:
            xr = pool_features(cfg, False, args.real_windows, cfg.seed + 1)
            data = TrainData(
                np.concatenate([data.x_train, xr]),
                np.concatenate([data.y_train, np.full(len(xr), UNLABELED, data.y_train.dtype)]),
                data.x_val,
                data.y_val,
            )
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        prepared, tflite = rerun_qat(cfg, model, data, out)
    else:
        prepared = load_qat_student(cfg, build / "weights", example_batch(f["validation"]))
        tflite = build / "model.tflite"
    qat_s = time.perf_counter() - t0
    tflm, step = TFLMRunner(tflite), describe(tflite).output.scale
    real = read_folder(cfg, Path(args.real), progress=False)
    x_real = compute_features(make_frontend(cfg.frontend.name), real.float_clips(np.arange(len(real.labels))))
    sets = {
        "real pool (check files)": (pool_features(cfg, True, args.check_windows, cfg.seed), None),
        Path(args.real).name: (x_real, real.labels),
        "synthetic test": (f["test"], f["y_test"]),
    }
    figures = {name: row(cfg, model, prepared, tflm, step, x, y) for name, (x, y) in sets.items()}
    print(
        f"\nQAT {'re-run' if args.qat else 'as built'} ({qat_s:.0f} s); overrides: {args.set or 'none'}; "
        f"real-pool windows in QAT: {args.real_windows}\n"
    )
    print(
        "| set | n | TFLM vs twin | TFLM vs fake-quant | fake-quant vs twin | float gap < 1 step | "
        "keywords pre-QAT -> TFLM |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in figures.items():
        pct = [f"{100 * r[k]:.2f} %" for k in ("tflm_vs_twin", "tflm_vs_fake_quant", "fake_quant_vs_twin")]
        kw = ""
        if "keywords_tflm" in r:
            kw = f"{100 * r['keywords_pre_qat']:.1f} -> {100 * r['keywords_tflm']:.1f}"
        print(f"| {name} | {r['n']} | {' | '.join(pct)} | {100 * r['within_one_step']:.1f} % | {kw} |")
    if args.json:
        figures_json = {"overrides": args.set, "qat_s": qat_s, "sets": figures}
        Path(args.json).write_text(json.dumps(figures_json, indent=1))


if __name__ == "__main__":
    main()
