"""One small real build through the CLI: every stage, TFLite Micro included, then the promises around it.

A few synthetic voices and a few epochs keep it to a couple of minutes; accuracy gates are relaxed
because the point here is the chain, the artifacts and the caching, not the model's quality (the
bench measures that).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny

from edgekd.artifacts import sha256_file
from edgekd.audio.io import write_wav
from edgekd.build import missing_pool
from edgekd.build_dir import BuildDir
from edgekd.cli import main
from edgekd.data.corpus import Corpus
from edgekd.data.real_pool import pool_root
from edgekd.stats import mean_class_interval

SMALL = [
    "data.synth.espeak_voices=10",
    "data.synth.piper_voices=2",
    "data.synth.flite_voices=2",  # every default engine, a little of each
    "data.synth.festival_voices=2",
    "data.synth.unknown_words_per_voice=2",
    "data.augment.views=1",
    "data.unlabeled_max_clips=60",  # the recipe's real pool (domain critic), a little of it
    "train.epochs=3",
    "train.qat_epochs=2",
    "teacher.epochs=5",
    "gates.min_accuracy=0",
    "gates.min_agreement=0",
    "gates.max_accuracy_drop=100",
    # a 3-epoch toy teacher need not beat the plain student; the gate has its own test below
    "distill.teacher_gate=warn",
    "verify.pool_windows=200",
    "gates.pool_min_agreement=0.01",  # a 3-epoch toy has few decisive windows; the gate is still there
    "verify.stream.calibration_minutes=1",
    "verify.stream.report_minutes=1",
    "verify.stream.positives=30",
    "gates.max_fa_per_hour=null",  # a 3-epoch toy fires at will; the gate has its own tests
]

SHIPPED = (
    "model.tflite",
    "model.onnx",
    "model_data.h",
    "model_data.cc",
    "model_settings.h",
)  # what a device gets

pytestmark = pytest.mark.slow  # trains and converts real models: `pytest -m 'not slow'` skips them


def _args(out: Path, cache: Path, *extra: str, target: str = "esp32s3") -> list[str]:
    sets = [x for s in [*SMALL, *extra] for x in ("--set", s)]
    return ["build", "--target", target, "--out", str(out), "--cache", str(cache), "--quiet", *sets]


def _write_test_clips(cache: Path, root: Path, n: int = 40) -> None:
    """The build's own held-out clips as a Speech Commands folder (a stand-in for real recordings)."""
    corpus = Corpus.load(next(cache.glob("corpus/*/corpus.npz")))
    for i in corpus.indices("test")[:n]:
        label = corpus.classes[corpus.labels[i]]
        folder = "dog" if label == "_unknown_" else label
        if label != "_silence_":
            write_wav(root / folder / f"spk{i % 5}_nohash_{i}.wav", corpus.clips[i] / 32768.0)
    for word in ("no", "up", "down", "left", "right", "on", "off", "stop", "go", "yes"):
        (root / word).mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("e2e")
    out, cache = root / "build", root / "cache"
    assert main(_args(out, cache)) == 0
    return out, cache


def test_build_writes_every_artifact(built: tuple[Path, Path]) -> None:
    out, _ = built
    for name in (
        *SHIPPED,
        "manifest.json",
        "parity.json",
        "report.md",
        "config.json",
        "weights/float.pt",
        "weights/qat.pt",
        "weights/teacher_head.pt",
    ):
        assert (out / name).is_file(), name
    assert not (out / ".staging").exists() and not (out / "rejected").exists()
    logits = np.load(out / "logs" / "parity_logits.npz")
    parity = json.loads((out / "parity.json").read_text())
    for runtime, row in parity["rows"].items():  # every reported figure is backed by per-clip logits
        assert np.isclose((logits[runtime].argmax(1) == logits["y"]).mean(), row["accuracy"])
    # where the student trained: torch's instruction set and threads (another machine trains other bits)
    trained_on = json.loads((out / "manifest.json").read_text())["student"]["trained_on"]
    assert trained_on["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert trained_on["threads"] == BuildDir(out).config().train.threads
    assert "student trained on" in (out / "report.html").read_text()
    # what the stage times ran under: OpenMP's wait policy, chosen before torch loaded or inherited
    policy = json.loads((out / "manifest.json").read_text())["openmp_wait_policy"]
    assert "OpenMP" in policy or policy.startswith("OMP_WAIT_POLICY=")
    assert f"OpenMP idle workers: {policy}" in (out / "report.md").read_text()


def test_the_student_ships_at_its_teachers_operating_point(tmp_path: Path) -> None:
    """`distill.fire_rate: teacher` (opt-in, on the recipe's real pool): the shipped weights fire on the
    pool's calibration windows as often as the teacher, and the build says so (manifest, report, the
    licences of the speech it used). The recipe's domain critic (`distill.domain_weight`) trains beside it:
    its loss is logged and the report names it."""
    from edgekd.train.operating_point import BIAS_MARGIN, fire_rate
    from edgekd.verify.scoring import student_logits

    out, cache = tmp_path / "build", tmp_path / "cache"
    opt_in = ["distill.fire_rate=teacher"]
    sets = ["distill.calibration_windows=200", "verify.stream.enabled=false", "verify.pool_windows=0"]
    assert main(_args(out, cache, *opt_in, *sets)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    point = manifest["student"]["operating_point"]
    assert point["windows"] == 200 and point["source"] == "builtin:debian-speech, calibration part"
    assert point["matched_fire_rate"] <= point["teacher_fire_rate"]  # never more eager than its teacher
    cfg = BuildDir(out).config()
    x = np.load(next(cache.glob("calibration/*/calibration.npz")))["features"]
    keywords, unknown = [cfg.classes.index(w) for w in cfg.labels], cfg.classes.index("_unknown_")
    logits = student_logits(cfg, out / "weights", x)  # the bias is in float.pt, and QAT starts from it
    assert fire_rate(logits["student_fp32_pre_qat"], keywords, unknown) == point["matched_fire_rate"]
    # and no more cautious than it must be: a hair less bias fires more often than the teacher (by one
    # window, or by a group of windows with tied logits: a toy build fell two windows short that way)
    hair = -2 * BIAS_MARGIN
    assert fire_rate(logits["student_fp32_pre_qat"], keywords, unknown, hair) > point["teacher_fire_rate"]
    # the QAT graph rebuilt from qat.pt (fake-quant ties may fall the other way on one window)
    assert fire_rate(logits["student_qat"], keywords, unknown) == pytest.approx(
        point["qat_fire_rate"], abs=0.006
    )
    report = (out / "report.md").read_text()
    assert "operating point" in report and "domain-adversarial against them (reversal 0.3)" in report
    assert manifest["student"]["float_fit"]["last_epoch"]["domain"] > 0  # the critic's loss, logged
    assert manifest["data"]["real_speech_licences"]["fillets-cs"] == "GPL-2.0-only"
    assert manifest["student"]["unlabeled_rows"] == 60 * 2  # each window clean + 1 augmented view


def test_parity_json_schema(built: tuple[Path, Path]) -> None:
    parity = json.loads((built[0] / "parity.json").read_text())
    assert parity["schema"] == "edgekd.parity/2" and parity["target"] == "esp32s3"
    for runtime in (
        "teacher_fp32",
        "student_fp32_pre_qat",
        "student_fp32",
        "student_qat",
        "student_int8_onnx",
        "student_int8_litert",
        "student_int8_tflm",
    ):
        r = parity["rows"][runtime]
        for key in ("accuracy", "macro_f1", "agreement_with_student_fp32", "agreement_with_teacher"):
            assert 0.0 <= r[key] <= 1.0
    assert parity["budget"]["arena_bytes"] > 0 and parity["budget"]["model_bytes"] > 0
    assert set(parity["budget"]["ops"]) <= set(
        json.loads((built[0] / "config.json").read_text())["budget"]["ops"]
    )
    assert parity["budget"]["fully_int8"] is True
    assert (
        all({"name", "value", "limit", "passed", "n"} <= set(g) for g in parity["gates"]) and parity["passed"]
    )
    # agreement and drops are decided on the clips and augmented views of each: every gate says how many
    ev = parity["evidence"]
    assert ev["clips"] == parity["n_clips"] and ev["inputs"] == parity["n_clips"] * (1 + ev["views_per_clip"])
    gates = {g["name"]: g for g in parity["gates"]}
    agree, drop = gates["agreement_tflm_vs_student_fp32"], gates["accuracy_drop_pts_tflm"]
    assert drop["n"] == agree["all_inputs"]["n"] == ev["inputs"]  # agreement decides on the decisive ones
    assert agree["n"] == ev["inputs"] - agree["near_ties"]
    assert all(g["rule"] == "interval" and len(g["interval"]) == 2 for g in (agree, drop))
    assert (
        f"of {ev['inputs']:,} inputs differ" in agree["detail"] and f"on {ev['inputs']:,}" in drop["detail"]
    )
    # the INT8 TFLite on TFLite Micro reproduces the fake-quant run of the very weights it ships within a few
    # output steps, and their float32 run wherever that run decides: a 3-epoch toy's logits can be near-ties
    # on every input (on an AVX-512 host all 190, logits 0.4 apart), where raw agreement measures the toy
    out_scale = json.loads((built[0] / "manifest.json").read_text())["model_io"]["output"]["scales"][0]
    assert parity["rows"]["student_int8_tflm"]["max_abs_logit_diff"] <= 8 * out_scale * (1 + 1e-6)
    assert agree["n"] == 0 or agree["value"] >= 0.97
    # and so does every other artifact the target ships, each on the same clips and views
    for runtime in ("litert", "onnx"):
        assert gates[f"agreement_{runtime}_vs_student_fp32"]["all_inputs"]["n"] == ev["inputs"]
    assert {"accuracy_drop_pts_tflm", "accuracy_drop_pts_tflm_vs_pre_qat"} <= {
        g["name"] for g in parity["gates"]
    }


def test_your_own_words_build_in_one_command(tmp_path: Path) -> None:
    """`--words` with phrases: the labels, `_unknown_` words chosen for them, a firmware package that
    names them, and gates that carry their sample sizes."""
    out = tmp_path / "lights"
    argv = _args(out, tmp_path / "cache", "verify.stream.enabled=false", "verify.pool_windows=0")
    assert main([*argv, "--words", "lights on", "lights off", "play music"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["labels"] == ["lights on", "lights off", "play music"]
    assert "music" not in config["unknown_words"] and "table" in config["unknown_words"]
    assert '"lights on"' in (out / "model_settings.h").read_text()
    parity = json.loads((out / "parity.json").read_text())
    assert parity["classes"] == ["lights on", "lights off", "play music", "_unknown_", "_silence_"]
    assert all(g["n"] for g in parity["gates"] if g.get("rule") == "interval")
    assert "95 % interval" in (out / "report.md").read_text()


def test_manifest_hashes_match_files(built: tuple[Path, Path]) -> None:
    out = built[0]
    manifest = json.loads((out / "manifest.json").read_text())
    for name, info in manifest["files"].items():
        assert sha256_file(out / name) == info["sha256"], name
    assert manifest["versions"]["torch"].startswith("2.13")
    assert (
        manifest["model_io"]["input"]["dtype"] == "int8" and manifest["model_io"]["output"]["dtype"] == "int8"
    )
    assert manifest["classes"][-2:] == ["_unknown_", "_silence_"]


def test_parity_only_change_does_not_retrain(built: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    out, cache = built
    assert main(_args(out, cache, "verify.max_clips=20")) == 0
    timings = {t["name"]: t["cached"] for t in json.loads((out / "manifest.json").read_text())["timings"]}
    assert timings.pop("real_agreement", True)  # measured where setup could fetch the real-speech pool
    assert timings.pop("stream", True)  # the streaming check depends on the model, not on verify
    assert timings == {
        "corpus": True,
        "views": True,
        "unlabeled": True,  # the recipe's real pool
        "features": True,
        "teacher": True,
        "baseline": True,
        "student": True,
        "export": True,
        "verify": False,
    }
    assert json.loads((out / "parity.json").read_text())["n_clips"] == 20


def test_a_plain_pip_install_finds_its_targets_and_builds_from_any_folder(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """`pip install .` (not editable, what pipx does) must ship targets and recipes inside the package."""
    repo = Path(__file__).resolve().parent.parent
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(repo)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "EDGEKD_REAL_POOL": str(pool_root())}

    def edgekd(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "edgekd.cli", *args]
        return subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True)

    where = subprocess.run(
        [sys.executable, "-c", "import edgekd; print(edgekd.__file__)"], cwd=elsewhere, env=env,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(site))
    listed = edgekd("targets")
    assert listed.returncode == 0, listed.stderr
    assert all(t in listed.stdout for t in ("esp32s3", "mobile", "p100"))
    _, cache = built  # the stages the module's build cached: this build only re-runs what it must
    done = edgekd(*_args(elsewhere / "out", cache))
    assert done.returncode == 0, done.stderr[-2000:]
    for noise in (
        "XNNPACK delegate",
        "_pytree",
        "oneDNN",
        "LeafSpec",
        "Lower to MLIR",
    ):  # native/library chatter stays off the terminal
        assert noise not in done.stderr + done.stdout, (done.stderr + done.stdout)[-2000:]
    assert json.loads((elsewhere / "out" / "parity.json").read_text())["passed"]


def test_failed_gate_keeps_previous_build(built: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    out, cache = built
    before = sha256_file(out / "parity.json")
    assert main(_args(out, cache, "budget.model_bytes=1000")) == 1
    assert sha256_file(out / "parity.json") == before
    rejected = json.loads((out / "rejected" / "parity.json").read_text())
    assert not rejected["passed"]
    assert [g["name"] for g in rejected["gates"] if not g["passed"]] == ["model_bytes"]
    assert "gates failed" in capsys.readouterr().out


def test_eval_scores_a_speech_commands_folder(
    built: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, cache = built
    _write_test_clips(cache, tmp_path)
    (tmp_path / "garbage").mkdir()
    (tmp_path / "yes" / "broken_nohash_0.wav").write_bytes(b"not audio")
    (tmp_path / "no" / "empty_nohash_0.wav").write_bytes(b"")
    whole = next((tmp_path / "yes").glob("spk*.wav")).read_bytes()
    (tmp_path / "up" / "truncated_nohash_0.wav").write_bytes(whole[:30])  # cut inside the header
    capsys.readouterr()
    assert (
        main(["eval", str(out), "--data", str(tmp_path), "--quiet", "--json", str(tmp_path / "eval.json")])
        == 0
    )
    text = capsys.readouterr().out
    assert "student_int8_tflm (device)" in text
    assert f"Skipped 3 files of `{tmp_path}` (3 unreadable); not scored:" in text
    assert "broken_nohash_0.wav: unreadable" in text and "truncated_nohash_0.wav: unreadable" in text
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["data"]["skipped"] == {"unreadable": 3} and len(report["data"]["skipped_files"]) == 3
    assert np.isclose(
        sum(sum(r) for r in report["rows"]["student_int8_tflm"]["confusion"]), report["n_clips"]
    )


def skip_without_pool() -> None:
    """The checks on the built-in real-speech pool run where setup could fetch it."""
    if missing_pool():
        pytest.skip(
            f"the built-in real-speech pool is not unpacked here (scripts/setup.sh): {missing_pool()}"
        )


def test_real_unlabeled_agreement_is_measured_and_gated(built: tuple[Path, Path]) -> None:
    out, _ = built
    skip_without_pool()
    parity = json.loads((out / "parity.json").read_text())
    r = parity["real_unlabeled"]
    assert r["n_windows"] == 200 and r["source"] == "builtin:debian-speech"
    logits = np.load(out / "logs" / "real_unlabeled_logits.npz")
    ref = logits["student_fp32"].argmax(1)
    for runtime in ("student_fp32_pre_qat", "student_qat", "student_int8_onnx", "student_int8_tflm"):
        assert np.isclose(
            (logits[runtime].argmax(1) == ref).mean(), r["agreement_with_student_fp32"][runtime]
        )
    assert [g["name"] for g in r["gates"]] == [
        f"real_unlabeled_agreement_{runtime}_vs_student_fp32" for runtime in ("tflm", "litert", "onnx")
    ]
    gate = r["gates"][0]
    assert all(g in parity["gates"] for g in r["gates"])
    everything = gate["all_inputs"]  # raw agreement over every window; the gate decides on decisive ones
    assert (
        everything["n"] == 200
        and everything["agree"] / 200 == r["agreement_with_student_fp32"]["student_int8_tflm"]
    )
    assert gate["n"] == 200 - gate["near_ties"] and "one-second windows of real speech" in gate["detail"]
    assert "Real speech, unlabelled" in (out / "report.md").read_text()


def test_streaming_check_calibrates_the_operating_point_the_firmware_ships(built: tuple[Path, Path]) -> None:
    out, _ = built
    skip_without_pool()
    parity = json.loads((out / "parity.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    stream = parity["stream"]
    op = stream["operating_point"]
    assert manifest["firmware"] == op and op["chosen_by"].startswith("calibrated for <= 0.5 FA/h")
    assert (op["threshold"], op["window"]) == (stream["calibration"]["chosen"]["threshold"],
                                               stream["calibration"]["chosen"]["window"])  # fmt: skip
    header = (out / "model_settings.h").read_text()
    assert f"kSmoothingWindow = {op['window']};" in header
    assert f"kProbabilityCutoff = {int(op['threshold'] * 255)};" in header
    assert stream["negatives"]["hours"] == pytest.approx(1 / 60, rel=0.01)
    assert stream["calibration"]["negatives"]["hours"] == pytest.approx(1 / 60, rel=0.01)
    assert 0 < stream["positives"]["clips"] <= 30 and stream["gates"] == []
    assert (
        "## Streaming" in (out / "report.md").read_text() and "id=stream" in (out / "report.html").read_text()
    )


def test_holdout_is_scored_gated_and_matches_eval(
    built: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, cache = built
    holdout = tmp_path / "mine"
    _write_test_clips(cache, holdout)
    args = [*_args(out, cache), "--holdout", str(holdout)]
    assert main(args) == 0
    timings = {t["name"]: t["cached"] for t in json.loads((out / "manifest.json").read_text())["timings"]}
    assert timings["holdout"] is False and timings["student"] is True  # scoring it retrains nothing
    parity = json.loads((out / "parity.json").read_text())
    h = parity["holdout"]
    assert h["path"] == str(holdout) and h["n_clips"] > 0
    logits = np.load(out / "logs" / "holdout_logits.npz")
    for runtime in ("teacher_fp32", "student_fp32_pre_qat", "student_fp32", "student_int8_tflm"):
        row = h["rows"][runtime]
        assert np.isclose((logits[runtime].argmax(1) == logits["y"]).mean(), row["accuracy"])
        assert 0.0 <= row["keyword_accuracy"] <= 1.0
    assert [g["name"] for g in h["gates"]] == [
        f"holdout_agreement_{runtime}_vs_student_fp32" for runtime in ("tflm", "litert", "onnx")
    ]
    assert all(g in parity["gates"] for g in h["gates"])
    assert "## Real holdout" in (out / "report.md").read_text()
    assert "Real holdout" in capsys.readouterr().out
    # `edgekd eval` on the same folder is the same code path: the same figures
    assert (
        main(["eval", str(out), "--data", str(holdout), "--quiet", "--json", str(tmp_path / "e.json")]) == 0
    )
    evaluated = json.loads((tmp_path / "e.json").read_text())
    for runtime, row in h["rows"].items():
        assert evaluated["rows"][runtime]["confusion"] == row["confusion"], runtime
    # its accuracy gate decides the build like any other gate, on its interval: a floor a point above the
    # measured accuracy of a few dozen clips is noise and passes; one above the interval's high end fails
    labels = [c for c in parity["classes"] if not c.startswith("_")]
    tflm, _, high = mean_class_interval(
        h["rows"]["student_int8_tflm"]["confusion"], parity["classes"], labels
    )
    assert high < 0.99  # a toy model on ~40 clips: the interval leaves room above it
    assert main([*args, "--set", f"gates.holdout_min_accuracy={tflm + 0.01:.4f}"]) == 0
    assert main([*args, "--set", f"gates.holdout_min_accuracy={high + 0.01:.4f}"]) == 1
    failed = json.loads((out / "rejected" / "parity.json").read_text())
    assert [g["name"] for g in failed["gates"] if not g["passed"]] == ["holdout_keyword_accuracy_tflm"]
    gate = next(g for g in failed["gates"] if g["name"] == "holdout_keyword_accuracy_tflm")
    assert gate["unit"] == "keyword clips" and "below the floor, not unlucky" in gate["detail"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["build", "--target", "nope"], "unknown target 'nope'"),
        (["build", "--target", "esp32s3", "--set", "distill.alpha=2"], "distill.alpha = 2"),
        (["build", "--target", "esp32s3", "--data", "/nonexistent/corpus"], "is not a directory"),
        (["build", "--target", "esp32s3", "--holdout", "/nonexistent/mine"], "verify.holdout"),
        (["build", "--target", "esp32s3", "--add-data", "/nonexistent/mine"], "data.extra"),
        (["build", "--target", "p100"], "--device cpu"),
        (["eval", "/nonexistent", "--data", "/tmp"], "not an edgekd build directory"),
        (["eval", "tests", "--data", "/tmp"], "not an edgekd build directory"),
    ],
)
def test_user_errors_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    assert main([*argv, *(["--cache", str(tmp_path)] if argv[0] == "build" else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgekd: error:") and message in err and "Traceback" not in err


def test_a_second_cold_build_is_byte_identical(built: tuple[Path, Path], tmp_path: Path) -> None:
    """Same config and seed, fresh cache, fresh process state: the same model and firmware package, bit
    for bit (parity.json is not compared: tests before this one rebuild `built` with other settings)."""
    import torch

    torch.manual_seed(12345)  # whatever ran before must not matter
    out = tmp_path / "again"
    assert main(_args(out, tmp_path / "cache")) == 0
    for name in SHIPPED:
        assert sha256_file(out / name) == sha256_file(built[0] / name), name


@pytest.mark.parametrize(("target", "extra"), [("mobile", []), ("p100", ["--device", "cpu"])])
def test_other_targets_build_and_pass(
    built: tuple[Path, Path], tmp_path: Path, target: str, extra: list[str]
) -> None:
    """mobile (log-mel, MobileNet, LiteRT) and p100 on the CPU (log-mel, ds_cnn L, onnxruntime), sharing the
    corpus, views and teacher stages with the esp32s3 build."""
    out = tmp_path / target
    assert main([*_args(out, built[1], "train.batch_size=64", target=target), *extra]) == 0
    parity = json.loads((out / "parity.json").read_text())
    primary = {"mobile": "student_int8_litert", "p100": "student_int8_onnx"}[target]
    assert parity["primary"] == primary and parity["passed"]
    assert not (out / "model_settings.h").exists()  # the firmware package is for TFLite Micro targets
    timings = {t["name"]: t["cached"] for t in json.loads((out / "manifest.json").read_text())["timings"]}
    assert timings["corpus"] and timings["views"] and timings["teacher"]  # shared with the esp32s3 build


def test_eval_refuses_incomplete_or_corrupt_build_dirs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from edgekd.config import dump_config, load_config

    (tmp_path / "config.json").write_text(json.dumps(dump_config(load_config("esp32s3"))))
    assert main(["eval", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "incomplete build directory, missing ['manifest.json'" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    assert main(["eval", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "config.json: not a valid edgekd build config" in capsys.readouterr().err


def test_teacher_gate_refuses_a_teacher_that_does_not_beat_the_plain_student(
    built: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    """An impossible margin: the gate must refuse before any student is trained, exit 1, keep the build."""
    out, cache = built
    before = sha256_file(out / "parity.json")
    assert main(_args(out, cache, "distill.teacher_gate=refuse", "distill.teacher_gate_margin=100")) == 1
    err = capsys.readouterr().err
    assert "teacher gate" in err and "plain student" in err and "distillation refused" in err
    assert "distill.teacher_gate=warn" in err  # says how to proceed
    assert sha256_file(out / "parity.json") == before
    parity = json.loads((out / "parity.json").read_text())
    assert "student_plain_fp32" in parity["rows"]  # the build shows what distillation gained


def test_unlabeled_audio_is_labelled_by_the_teacher_and_distilled(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    out, cache = built
    corpus = Corpus.load(next(cache.glob("corpus/*/corpus.npz")))
    pool = tmp_path / "recordings" / "device-7"
    test = corpus.indices("test")[:12]
    for i in test:  # clips of voices the labelled training never saw, labels thrown away
        write_wav(pool / f"rec_{i}.wav", corpus.float_clips(np.array([i]))[0])
    write_wav(tmp_path / "recordings" / "long.wav", np.concatenate(corpus.float_clips(test[:3])))
    new_out = tmp_path / "build"
    args = _args(new_out, cache, "train.epochs=2")
    assert main([*args, "--unlabeled", str(tmp_path / "recordings")]) == 0
    manifest = json.loads((new_out / "manifest.json").read_text())
    assert manifest["cache_keys"]["unlabeled"]
    # 12 short files + 5 half-overlapping windows of the 3 s file, each clean + 1 augmented view
    assert manifest["student"]["unlabeled_rows"] == (12 + 5) * 2
    assert list((new_out / "logs" / "tensorboard" / "float").glob("events.out.tfevents.*"))


def test_missing_unlabeled_folder_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = _args(tmp_path / "b", tmp_path / "c")
    assert main([*args, "--unlabeled", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_tiny_wav2vec2_is_fine_tuned_and_distilled_end_to_end(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A wav2vec2 saved locally (save_pretrained) is the teacher: fine-tuned, cached, distilled, restored."""
    _, cache = built
    monkeypatch.setenv("EDGEKD_MODELS", str(tmp_path))
    ckpt = save_tiny(tmp_path / "w2v", "wav2vec2")
    out = tmp_path / "build"
    args = _args(
        out,
        cache,
        "teacher.kind=hf",
        f"teacher.source={ckpt}",
        "teacher.epochs=1",
        "teacher.batch_size=16",
        "teacher.layer_lr_decay=0.8",
    )
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"]["name"] == "hf:wav2vec2"
    assert manifest["student"]["used_teacher"]
    assert (out / "weights" / "teacher_hf" / "model.safetensors").is_file()
    history = json.loads((out / "logs" / "training.json").read_text())
    assert history["teacher"] and all(row["kd"] > 0 for row in history["student_float"])
    # the restored fine-tuned teacher reproduces the build's teacher row on the same clips
    parity = json.loads((out / "parity.json").read_text())
    corpus = Corpus.load(next(cache.glob("corpus/*/corpus.npz")))
    folder = tmp_path / "sc"
    for j, i in enumerate(corpus.indices("test")):
        label = manifest["classes"][corpus.labels[i]]
        if not label.startswith("_"):
            write_wav(folder / label / f"spk{j}_nohash_0.wav", corpus.float_clips(np.array([i]))[0])
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(folder), "--json", str(tmp_path / "eval.json"), "-q"]) in (
        0,
        1,
    )
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert "teacher_fp32" in evaluated["rows"] and "teacher_fp32" in parity["rows"]
