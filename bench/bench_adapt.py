"""AdaBN on real unlabelled speech: does re-normalising the float student on the real pool help on people?

    python bench/bench_adapt.py --build build/esp32s3 --cache ~/.cache/edgekd
    python bench/bench_adapt.py --build build/digits --cache ~/.cache/edgekd --real real-digits-fsdd

The build's float student (`weights/float.pt`) keeps its weights; only its batch-norm statistics are
re-estimated (`edgekd.train.adapt`) on the build's synthetic training rows mixed with windows of the
built-in real pool's *train* part, at several shares of pool rows. Each variant's `_unknown_` logit then
gets the bias that keeps its fire rate on those pool windows where the build's student had it, so a
variant cannot win by calling more things a keyword. Scored on the real folder (measuring only) and on
windows of the pool's *check* part (fire rate on unseen real speech), beside the synthetic test split.
A share of 0 re-estimates on synthetic rows alone: the control for what re-estimation by itself moves.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgekd.audio.frontend import compute_features, make_frontend  # noqa: E402
from edgekd.audio.io import from_pcm16  # noqa: E402
from edgekd.build_dir import BuildDir  # noqa: E402
from edgekd.data.real_pool import BUILD_POOL, windows  # noqa: E402
from edgekd.fmt import table  # noqa: E402
from edgekd.models.restore import make_student  # noqa: E402
from edgekd.train.adapt import adapt_to_real, reestimate_batch_norm  # noqa: E402
from edgekd.train.operating_point import fire_rate  # noqa: E402
from edgekd.train.trainer import predict  # noqa: E402
from edgekd.verify.scoring import read_folder  # noqa: E402

REAL_DATA = Path(os.environ.get("EDGEKD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CPU = torch.device("cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="a finished build directory")
    ap.add_argument("--cache", required=True, help="the stage cache the build used (its features)")
    ap.add_argument("--real", default="real-commands-dev", help="a folder under ../shared/data, or a path")
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.2, 0.5, 1.0])
    ap.add_argument("--pool-windows", type=int, default=6000, help="pool train-part windows")
    ap.add_argument("--check-windows", type=int, default=1500, help="pool check-part windows to score")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    build = Path(args.build)
    cfg = BuildDir(build).config()
    torch.set_num_threads(cfg.train.threads)
    manifest = json.loads((build / "manifest.json").read_text())
    f = np.load(Path(args.cache) / "features" / manifest["cache_keys"]["features"] / "features.npz")
    model = make_student(cfg, f["train"].shape[1:])
    model.load_state_dict(torch.load(build / "weights" / "float.pt", weights_only=True))
    model.eval()
    fe = make_frontend(cfg.frontend.name)
    folder = Path(args.real) if Path(args.real).is_dir() else REAL_DATA / args.real
    real = read_folder(cfg, folder, progress=False)
    x_real = compute_features(fe, real.float_clips(np.arange(len(real.labels))))
    x_pool = compute_features(fe, from_pcm16(windows(BUILD_POOL, args.pool_windows, cfg.seed + 1, "train")))
    x_check = compute_features(fe, from_pcm16(windows(BUILD_POOL, args.check_windows, cfg.seed)))
    unknown = cfg.classes.index("_unknown_")
    keywords = [cfg.classes.index(w) for w in cfg.labels]
    present = [c for c in keywords if (real.labels == c).any()]

    def row(name: str, m: torch.nn.Module, bias: float | None, took: float) -> list[str]:
        lr = predict(m, x_real, CPU)
        kw = np.mean([(lr[real.labels == c].argmax(1) == c).mean() for c in present])
        unk = real.labels == unknown
        other = f"{100 * (lr[unk].argmax(1) == unknown).mean():.1f}" if unk.any() else "—"
        synth = (predict(m, f["test"], CPU).argmax(1) == f["y_test"]).mean()
        check = fire_rate(predict(m, x_check, CPU), keywords, unknown)
        b = "—" if bias is None else f"{bias:+.2f}"
        return [name, b, f"{100 * kw:.1f}", other, f"{100 * check:.1f}", f"{100 * synth:.1f}", f"{took:.1f}"]

    rows = [row("as built", model, None, 0.0)]
    for share in args.shares:
        t0 = time.perf_counter()
        if share == 0.0:
            adapted, bias = reestimate_batch_norm(model, f["train"], seed=cfg.seed), None
        else:
            adapted, info = adapt_to_real(model, f["train"], x_pool, share, keywords, unknown, cfg.seed)
            bias = info.unknown_bias
        name = "synthetic rows only (control)" if share == 0.0 else f"{100 * share:.0f} % pool rows"
        rows.append(row(name, adapted, bias, time.perf_counter() - t0))
    heads = [
        "batch-norm statistics",
        "_unknown_ bias",
        f"{folder.name} keywords %",
        "real other words %",
        "pool check fire %",
        "synthetic test %",
        "s",
    ]
    print(f"\nfloat student of {build} ({len(real.labels)} real clips, {len(x_pool)} pool windows)\n")
    print(table(heads, rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"heads": heads, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
