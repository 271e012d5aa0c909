"""`edgekd build --target esphome --wake-word PHRASE`: one tiny real build through the CLI (every stage,
TFLite Micro included), then what it promises: files ESPHome loads, a manifest that carries the calibrated
operating point, reports, caching, and a failing gate that leaves the previous build alone.

A few voices and two epochs keep it under a minute; the model is not meant to be good here (the bench
measures that), only to be what the build says it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekd.artifacts import sha256_file
from edgekd.audio.io import write_wav
from edgekd.audio.synth import Synthesizer, get_engine
from edgekd.build import missing_pool
from edgekd.cli import main
from edgekd.config import load_config
from edgekd.errors import ConfigError
from edgekd.esphome import contract
from edgekd.esphome.engine import WakeWordEngine
from edgekd.stages.wakeword import real_windows, train_config
from edgekd.stats import poisson_rate_upper
from edgekd.train.spec_augment import SpecAugment
from edgekd.words import DICTIONARY

TINY = [
    "data.synth.espeak_voices=8",
    "data.synth.piper_voices=2",
    "data.synth.flite_voices=1",
    "data.synth.festival_voices=0",
    "data.synth.kokoro_voices=0",
    "data.synth.unknown_words_per_voice=2",
    "data.augment.views=1",
    "data.augment.speech_minutes=2",
    "wakeword.real_negatives_minutes=1",
    "wakeword.calibration_minutes=3",
    "wakeword.report_minutes=2",
    "wakeword.epochs=2",
    "wakeword.quantize_epoch=1",
    "wakeword.freeze_epoch=2",
    "wakeword.teacher_epochs=2",
    "wakeword.mining_rounds=1",
    "wakeword.mining_minutes=2",
    "wakeword.mining_cutoff=0.1",
    "wakeword.mining_epochs=1",
    "wakeword.positives=10",
    "wakeword.near_misses=4",
    "wakeword.cutoffs=[0.5,0.9]",
    "wakeword.windows=[1,3]",
]


def _build(out: Path, cache: Path, *extra: str, args: tuple[str, ...] = ()) -> int:
    sets = [*args, *(a for s in [*TINY, *extra] for a in ("--set", s))]
    argv = [
        "build",
        "--target",
        "esphome",
        "--wake-word",
        "hey edge",
        "--out",
        str(out),
        "--cache",
        str(cache),
    ]
    return main([*argv, "--quiet", *sets])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if why := missing_pool():
        pytest.skip(f"the real-speech pool is needed for negatives and calibration: {why}")
    root = tmp_path_factory.mktemp("wakeword")
    out, cache = root / "out", root / "cache"
    assert _build(out, cache) == 0
    return out, cache


def test_the_build_writes_what_esphome_loads(built: tuple[Path, Path]) -> None:
    out, _ = built
    raw = json.loads((out / "hey_edge.json").read_text())
    assert contract.manifest_problems(raw) == []
    assert raw["wake_word"] == "hey edge" and raw["model"] == "hey_edge.tflite"
    report = contract.check(out / "hey_edge.tflite", out / "hey_edge.json")
    assert report.passed, report.violations
    assert raw["micro"]["tensor_arena_size"] >= report.arena_bytes  # what the device allocates is enough
    parity = json.loads((out / "parity.json").read_text())
    point = parity["operating_point"]
    assert (raw["micro"]["probability_cutoff"], raw["micro"]["sliding_window_size"]) == (
        point["cutoff"],
        point["window"],
    )
    engine = WakeWordEngine.from_manifest(out / "hey_edge.json")  # loads and runs as the component does
    assert engine.cutoff == contract.cutoff_u8(point["cutoff"]) == point["cutoff_u8"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["hey_edge.tflite"]["sha256"] == sha256_file(out / "hey_edge.tflite")
    assert manifest["data"]["real_speech_licences"]["fillets-cs"] == "GPL-2.0-only"
    assert {"espeak", "piper"} <= set(manifest["data"]["voices"])
    assert "hey" in manifest["data"]["negatives"]  # a partial phrase is a near-miss negative
    assert (out / "weights" / "student.pt").is_file() and (out / "weights" / "frame_teacher.pt").is_file()
    md = (out / "report.md").read_text()
    assert "micro_wake_word:" in md and "model: hey_edge.json" in md
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_the_shipped_point_is_the_best_recall_within_the_budget(built: tuple[Path, Path]) -> None:
    parity = json.loads((built[0] / "parity.json").read_text())
    points, point = parity["calibration"]["points"], parity["operating_point"]
    assert len(points) == 4  # 2 cutoffs x 2 windows
    cal = parity["calibration"]
    for p in points:  # the bound calibration compares with the budget, not the raw rate
        assert p["fa_per_hour_bound"] == poisson_rate_upper(
            p["false_accepts"], cal["hours"], cal["fa_confidence"]
        )
    within = [p for p in points if p["fa_per_hour_bound"] <= cal["fa_budget"]]
    assert point["within_budget"] == bool(within)
    if within:
        assert point["recall"] == max(p["recall"] for p in within)
        assert point["fa_per_hour_bound"] <= cal["fa_budget"]
    gates = {g["name"]: g for g in parity["gates"]}
    assert {"esphome_contract", "model_bytes", "arena_bytes_with_headroom", "stream_fa_per_hour"} <= set(
        gates
    )
    assert gates["esphome_contract"]["passed"]
    neg = parity["negatives"]
    assert neg["false_accepts"] == sum(s["false_accepts"] for s in neg["per_source"].values())


def test_a_failing_gate_reuses_every_stage_and_leaves_the_previous_build(built: tuple[Path, Path]) -> None:
    out, cache = built
    before = sha256_file(out / "hey_edge.json")
    # recall of 100 % in real speech cannot be shown by a two-epoch model: the gate fails
    assert _build(out, cache, "gates.min_stream_recall=1.0") == 1
    assert sha256_file(out / "hey_edge.json") == before
    rejected = json.loads((out / "rejected" / "parity.json").read_text())
    assert not rejected["passed"]
    assert [g["name"] for g in rejected["gates"] if not g["passed"]] == ["stream_recall"]
    manifest = json.loads((out / "rejected" / "manifest.json").read_text())
    ran = {t["name"] for t in manifest["timings"] if not t["cached"]}
    assert ran == {"wake_verify"}  # a gate changes only the verdict: nothing is trained again


def test_hard_negative_mining_fine_tunes_the_trained_student(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """The build's mining round is recorded in its manifest and ships the fine-tuned model: the same build
    without it reuses the trained student (nothing is trained again) and ships a different model."""
    manifest = json.loads((built[0] / "manifest.json").read_text())
    (mined,) = manifest["hard_negatives"]
    assert mined["windows"] > 0 and mined["windows"] == sum(
        s["windows"] for s in mined["per_source"].values()
    )
    assert {"mine_1", "fine_tune_1"} <= set(manifest["cache_keys"])
    assert f"hard negatives, round 1: {mined['windows']:,} windows" in (built[0] / "report.md").read_text()
    out = tmp_path / "out"
    rc = _build(out, built[1], "wakeword.mining_rounds=0")
    final = out / ("rejected" if rc == 1 else ".")
    plain = json.loads((final / "manifest.json").read_text())
    ran = {t["name"] for t in plain["timings"] if not t["cached"]}
    assert ran == {"wake_export", "wake_calibrate", "wake_verify"} and plain["hard_negatives"] == []
    assert plain["cache_keys"]["student"] == manifest["cache_keys"]["student"]
    assert sha256_file(final / "hey_edge.tflite") != sha256_file(built[0] / "hey_edge.tflite")


def test_a_student_too_wide_for_the_device_is_refused_by_its_arena_gate(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """`wakeword.channels` widens the student: the examples and the teacher are reused, the student is
    trained anew, and at 64 channels TFLite Micro's arena plus headroom is over ESPHome's 24 KB, so the
    build goes to `rejected/` with that gate failed (flash still fits)."""
    out = tmp_path / "out"
    assert _build(out, built[1], "wakeword.channels=64") == 1
    manifest = json.loads((out / "rejected" / "manifest.json").read_text())
    ran = {t["name"] for t in manifest["timings"] if not t["cached"]}
    assert "wake_student" in ran and not ran & {"corpus", "wake_examples", "wake_teacher"}
    parity = json.loads((out / "rejected" / "parity.json").read_text())
    gates = {g["name"]: g for g in parity["gates"]}
    assert not gates["arena_bytes_with_headroom"]["passed"] and gates["model_bytes"]["passed"]
    narrow = json.loads((built[0] / "parity.json").read_text())["contract"]
    assert parity["contract"]["flash_bytes"] > narrow["flash_bytes"]
    assert parity["contract"]["macs_per_second"] > narrow["macs_per_second"]
    assert not (out / "hey_edge.tflite").exists()


def test_mining_through_the_telephone_codec_mines_each_source_twice(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """`wakeword.mining_codec` runs every fit stream a second time through the 8 kHz mu-law channel: the
    same student (nothing trained again before mining), twice the hours, the codec streams named."""
    manifest = json.loads((built[0] / "manifest.json").read_text())
    (plain,) = manifest["hard_negatives"]
    out = tmp_path / "out"
    rc = _build(out, built[1], "wakeword.mining_codec=true")
    final = out / ("rejected" if rc == 1 else ".")
    coded = json.loads((final / "manifest.json").read_text())
    (mined,) = coded["hard_negatives"]
    assert coded["cache_keys"]["student"] == manifest["cache_keys"]["student"]
    assert coded["cache_keys"]["mine_1"] != manifest["cache_keys"]["mine_1"]
    sources = set(plain["per_source"])
    assert set(mined["per_source"]) == sources | {f"{s} (codec)" for s in sources}
    assert mined["hours"] == pytest.approx(2 * plain["hours"], rel=1e-3)
    for source, found in plain["per_source"].items():  # the wideband streams mine what they mined before
        assert mined["per_source"][source]["windows"] == found["windows"]


def test_a_share_of_the_real_negatives_is_heard_through_a_telephone(fake_pool: Path) -> None:
    """`wakeword.real_negatives_codec`: the chosen windows lose what an 8-11 kHz channel cannot carry, the
    others are the wideband windows of the same seed, and a share of 0 leaves every window as it was."""
    plain = real_windows(1.0, (-6.0, 0.0), seed=3)
    phone = real_windows(1.0, (-6.0, 0.0), seed=3, codec_share=0.5)
    assert phone.shape == plain.shape and len(plain) > 20
    coded = ~np.isclose(phone, plain, atol=1e-6).all(axis=1)
    assert 0.25 * len(plain) <= coded.sum() <= 0.75 * len(plain)  # about half, chosen by the seed
    spectrum = np.abs(np.fft.rfft(np.concatenate([plain[coded], phone[coded]]).reshape(2, -1), axis=1)) ** 2
    above = spectrum[:, int(0.72 * spectrum.shape[1]) :].sum(1) / spectrum.sum(1)  # > 5.76 kHz
    assert above[0] > 0.1 and above[1] < 0.01 * above[0]
    np.testing.assert_array_equal(real_windows(1.0, (-6.0, 0.0), seed=3, codec_share=0.0), plain)


def test_real_recordings_of_the_phrase_are_scored_and_can_be_gated(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """--holdout: the user's own recordings of the phrase (here espeak-ng standing in for people)."""
    voice = get_engine("espeak").voices(1, 0)[0]
    synth = Synthesizer(0)
    (tmp_path / "mine").mkdir()
    for i in range(4):
        write_wav(tmp_path / "mine" / f"take{i}.wav", synth.synth("hey edge", voice))
    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    holdout = ("--holdout", str(tmp_path / "mine"))
    rc = _build(out, built[1], "gates.holdout_min_accuracy=0.999", args=holdout)
    parity = json.loads((out / ("rejected" if rc == 1 else ".") / "parity.json").read_text())
    assert rc == (0 if parity["passed"] else 1)
    assert parity["recall"]["holdout_quiet"]["clips"] == 4
    gate = next(g for g in parity["gates"] if g["name"] == "holdout_recall")
    assert gate["n"] == 4 and gate["passed"] == (gate["interval"][1] >= 0.999)


def test_wake_word_arguments_are_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = ["build", "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c")]
    assert main([*base, "--target", "esp32s3", "--wake-word", "hey edge"]) == 2
    assert "--target esphome" in capsys.readouterr().err
    assert main([*base, "--target", "esphome", "--wake-word", "one two three four five"]) == 2
    assert "one to four words" in capsys.readouterr().err
    assert main([*base, "--target", "esphome", "--wake-word", "hey", "--words", "yes"]) == 2
    if missing_pool() is None:  # a --holdout folder without recordings: refused before an hour of training
        (tmp_path / "empty").mkdir()
        assert (
            main([*base, "--target", "esphome", "--wake-word", "hey", "--holdout", str(tmp_path / "empty")])
            == 2
        )
        assert "no audio files" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_the_esphome_target_brings_its_recipe_and_its_rules() -> None:
    cfg = load_config("esphome", None)
    assert cfg.recipe == "wakeword" and cfg.wakeword is not None and len(cfg.labels) == 1
    if (
        DICTIONARY.is_file()
    ):  # wamerican (scripts/setup.sh): phoneme neighbours of `computer` join the negatives
        assert set(cfg.unknown_words) & {"commuter", "compute"}
    with pytest.raises(ConfigError, match="one phrase"):
        load_config("esphome", None, ['words=["yes", "no"]'])
    with pytest.raises(ConfigError, match="quantize_epoch <= freeze_epoch <= epochs"):
        load_config("esphome", None, ["wakeword.freeze_epoch=40"])
    with pytest.raises(ConfigError, match="http"):
        load_config("esphome", None, ["wakeword.website=example.org"])
    with pytest.raises(ConfigError, match="alpha > 0"):
        load_config("esphome", None, ["wakeword.alpha=0", "wakeword.temperature_start=6"])
    with pytest.raises(ConfigError, match="freq_mask_width 0 masks nothing"):
        load_config("esphome", None, ["wakeword.freq_mask_width=0"])  # the recipe asks for 2 bands
    masked = train_config(
        load_config("esphome", None, ["wakeword.time_masks=3", "wakeword.time_mask_width=7"])
    )
    assert masked.spec_augment == SpecAugment(2, 8, 3, 7, fill="mean")


def test_classifier_commands_point_a_wake_word_build_to_its_tools(
    built: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    out, _ = built
    assert main(["eval", str(out), "--data", str(out)]) == 2
    assert f"edgekd esphome {out / 'hey_edge.json'}" in capsys.readouterr().err
    assert main(["compare", str(out), str(out)]) == 2
    assert "bench/bench_wakeword.py" in capsys.readouterr().err
