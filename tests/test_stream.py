"""`edgekd stream`: the device chain over long recordings, detections with times, false accepts per hour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import KwsModels, speech_like, stream_build

from edgekd.audio.frontend import MICRO_FEATURE_SCALE, MicroFrontend
from edgekd.audio.io import SAMPLE_RATE, write_wav
from edgekd.cli import main
from edgekd.detect import (
    detections,
    exp_table,
    probabilities_u8,
    quantize_raw_features,
    smooth_stream,
    window_schedule,
)
from edgekd.export.firmware import SETTINGS_HEADER
from edgekd.stats import MEDIAN, within_fa_budget
from edgekd.stream import (
    BACKGROUND_DBFS,
    Detection,
    FileResult,
    Inserted,
    PositiveRun,
    active_rms,
    best_point,
    decide,
    false_accepts,
    insert_clips,
    load_settings,
    score_positives,
    stream_audio,
    typical_rms,
)
from edgekd.verify.runners import TFLMRunner, dequantize


@pytest.fixture(scope="module")
def build(models: KwsModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stream_build(tmp_path_factory.mktemp("stream") / "build", models)


def test_each_step_is_the_device_chain(build: Path) -> None:
    """Continuous frontend -> int8 features -> ring every stride -> TFLM int8 logits -> smoothing,
    recomputed here through the float runner (re-quantizing its dequantized output): the same logits,
    and detections at the times the schedule and the refractory period allow."""
    settings = load_settings(build, threshold=1 / 255)  # cutoff 1: nearly every keyword window fires
    audio = speech_like(6.0, seed=1)
    runner = TFLMRunner(build / "model.tflite")
    got = stream_audio(settings, runner, audio, "a.wav", progress=False)

    features = MicroFrontend()(audio)
    raw = np.round(features / np.float32(MICRO_FEATURE_SCALE)).astype(np.uint16)
    q = quantize_raw_features(raw, settings.input_scale, settings.input_zero_point)
    due = window_schedule(len(q), 98, settings.stride_frames)
    assert got.inferences == len(due) == (598 - 98) // 10 + 1
    x = np.stack([raw[t - 98 : t] for t in due]).astype(np.float32) * np.float32(MICRO_FEATURE_SCALE)
    y = runner.predict(x)
    logits = np.round(y / settings.output_scale + settings.output_zero_point).astype(np.int8)
    np.testing.assert_array_equal(dequantize(logits, settings.output_scale, settings.output_zero_point), y)
    trace = smooth_stream(
        logits, settings.exp_table(), settings.window, 1, settings.detectable, settings.refractory
    )
    fired = [(t, settings.labels[d.label]) for t, d in zip(due, trace.decisions, strict=True) if d.detected]
    assert [(d.time_s, d.label) for d in got.detections] == [
        (round((t - 1) * 0.01 + 0.03, 3), label) for t, label in fired
    ]
    assert len(fired) >= 2, "the test must see detections"
    gaps = np.diff([d.time_s for d in got.detections])
    assert (gaps >= (settings.refractory + 1) * 0.1 - 1e-9).all()  # one word fires once
    assert got.detections[0].time_s >= 1.0  # nothing before the ring first holds a whole input
    probs = probabilities_u8(logits, settings.exp_table())
    assert all(0 <= d.mean_probability <= 1 for d in got.detections) and probs.max() <= 255


def test_a_long_stream_split_with_a_worker_process_is_the_same(
    build: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgekd import stream

    settings = load_settings(build, threshold=1 / 255)
    audio = speech_like(4.0, seed=2)
    runner = TFLMRunner(build / "model.tflite")
    alone = stream_audio(settings, runner, audio, "a.wav", progress=False)
    monkeypatch.setattr(stream, "WORKER_MIN_WINDOWS", 4)
    split = stream_audio(settings, runner, audio, "a.wav", progress=False)
    np.testing.assert_array_equal(split.logits, alone.logits)
    assert split.detections == alone.detections and split.due == alone.due


def test_several_recordings_read_in_a_reader_process_stream_as_one_by_one(
    build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run_stream` over a folder: reading and the frontend in a reader process, the model here on one
    thread, in the order given; the same results as each file alone through `stream_audio`."""
    from edgekd import stream

    folder = tmp_path / "audio"
    folder.mkdir()
    for i, seconds in enumerate((3.0, 5.0, 2.5)):
        write_wav(folder / f"{i}.wav", speech_like(seconds, seed=10 + i))
    pools = []
    monkeypatch.setattr(stream, "reader_pool", lambda real=stream.reader_pool: pools.append(1) or real())
    got = stream.run_stream(build, [folder], threshold=1 / 255, progress=False)
    assert pools == [1], "several recordings go through the reader process"
    settings = load_settings(build, threshold=1 / 255)
    runner = TFLMRunner(build / "model.tflite")
    for result, i in zip(got, range(3), strict=True):
        path = folder / f"{i}.wav"
        alone = stream_audio(settings, runner, stream.read_recording(str(path)), str(path), progress=False)
        assert result.file == alone.file and result.seconds == alone.seconds and result.due == alone.due
        np.testing.assert_array_equal(result.logits, alone.logits)
        assert result.detections == alone.detections
    one = stream.run_stream(build, [folder / "1.wav"], threshold=1 / 255, progress=False)
    assert pools == [1] and one[0].due == got[1].due, "one recording runs here"
    # names are how recordings travel to the reader: a file named like a pool source is still that file
    monkeypatch.chdir(folder)
    (folder / "builtin:fillets-cs.wav").write_bytes((folder / "0.wav").read_bytes())
    same = stream.read_recording("builtin:fillets-cs.wav")
    np.testing.assert_array_equal(same, stream.read_recording("0.wav"))


def test_false_accepts_per_hour_count_every_detection_on_negative_audio() -> None:
    results = [
        FileResult(
            "a.wav",
            1800.0,
            list(range(98, 18098)),
            np.zeros((18000, 12), np.int8),
            [Detection("a.wav", 12.0, "yes", 0.9), Detection("a.wav", 50.0, "no", 0.85)],
        ),
        FileResult("b.wav", 1800.0, [], np.zeros((0, 12), np.int8), [Detection("b.wav", 3.0, "yes", 0.95)]),
    ]
    fa = false_accepts(results, ("yes", "no", "up"))
    assert fa["hours"] == 1.0 and fa["false_accepts"] == 3 and fa["fa_per_hour"] == 3.0
    assert fa["per_keyword"] == {
        "yes": {"false_accepts": 2, "fa_per_hour": 2.0},
        "no": {"false_accepts": 1, "fa_per_hour": 1.0},
        "up": {"false_accepts": 0, "fa_per_hour": 0.0},
    }


def test_cli_lists_detections_and_measures_false_accepts(
    build: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    negatives = tmp_path / "negatives"
    for i in range(2):
        write_wav(negatives / "room" / f"take{i}.wav", speech_like(4.0, seed=10 + i))
    record = tmp_path / "stream.json"
    args = ["stream", str(build), str(negatives / "room" / "take0.wav"), "--negatives", str(negatives)]
    assert main([*args, "--threshold", "0.004", "--json", str(record), "--quiet"]) == 0
    out = capsys.readouterr().out
    data = json.loads(record.read_text())
    fa = data["negatives"]
    assert fa["files"] == 2 and fa["hours"] == pytest.approx(8 / 3600)
    assert fa["fa_per_hour"] == pytest.approx(fa["false_accepts"] / fa["hours"])
    assert data["threshold"] == 0.004 and f"negatives: {fa['hours']:.2f} h in 2 files" in out
    assert len(data["files"]) == 1 and "FA/h" in out


def test_builtin_is_the_pools_check_part_for_negatives_and_background(
    build: Path, fake_pool: Path, tmp_path: Path
) -> None:
    """`--negatives builtin` streams the pool's check part (one recording per source, the audio builds
    report on); `--background builtin` puts the positives into it."""
    from edgekd.data.real_pool import NEGATIVE_SOURCES, negative_recordings

    for i in range(2):
        write_wav(tmp_path / "pos" / "yes" / f"s{i}_nohash_0.wav", speech_like(1.0, seed=40 + i))
    record = tmp_path / "stream.json"
    args = ["stream", str(build), "--negatives", "builtin", "--positives", str(tmp_path / "pos")]
    assert main([*args, "--background", "builtin", "--json", str(record), "--quiet"]) == 0
    data = json.loads(record.read_text())
    check = negative_recordings("check", 0, seed=0)
    assert data["negatives"]["files"] == len(NEGATIVE_SOURCES)
    assert data["negatives"]["hours"] == pytest.approx(sum(r.seconds for r in check) / 3600)
    assert data["positives"]["background"] == ["builtin"] and data["positives"]["clips"] == 2


def test_clips_are_inserted_where_reported_at_the_asked_snr() -> None:
    rng = np.random.default_rng(0)
    background = rng.normal(0, 0.01, SAMPLE_RATE * 3).astype(np.float32)  # shorter than needed: repeated
    clips = [
        ("yes", rng.normal(0, 0.2, SAMPLE_RATE).astype(np.float32)),
        ("no", np.zeros(SAMPLE_RATE, np.float32)),
    ]
    clips[1][1][4000:12000] = rng.normal(0, 0.1, 8000)
    stream, placed = insert_clips(background, clips, seed=3, snr_db=(10.0, 10.0), gap_s=(2.0, 2.0))
    assert [p.label for p in placed] == ["yes", "no"]
    assert placed[0].start_s == 2.0 and placed[1].start_s == pytest.approx(5.0) and placed[1].end_s == 6.0
    assert len(stream) / SAMPLE_RATE >= placed[-1].end_s
    level = np.float32(10 ** (BACKGROUND_DBFS / 20) / typical_rms(background))
    assert 20 * np.log10(typical_rms(stream[: SAMPLE_RATE * 2])) == pytest.approx(BACKGROUND_DBFS, abs=0.01)
    for p in placed:
        a, b = int(p.start_s * SAMPLE_RATE), int(p.end_s * SAMPLE_RATE)
        bg = np.resize(background, len(stream))[a:b] * level
        snr = 20 * np.log10(active_rms(stream[a:b] - bg) / active_rms(bg))
        assert snr == pytest.approx(10.0, abs=0.01)
    # loud dialogue (about -15 dBFS) and a word 30 dB above it: brought down, nothing clipped
    loud, word = 0.3 * rng.standard_normal(SAMPLE_RATE * 4), 0.3 * rng.standard_normal(SAMPLE_RATE)
    stream, _ = insert_clips(loud.astype(np.float32), [("yes", word.astype(np.float32))], 1, (30.0, 30.0))
    assert np.abs(stream).max() < 0.99


def test_a_run_decided_again_at_another_point_counts_there(build: Path) -> None:
    """Calibration runs its streams at one point and then chooses another: `at` decides the kept logits
    again, as running the chain at that point would, so its counts follow the point (one-step bursts
    fire only with a window of one; the fixture's output scale keeps probabilities low, hence 0.12)."""
    loose, strict = load_settings(build, 0.12, 1), load_settings(build, 0.12, 3)
    keyword = loose.labels.index(loose.keywords[0])
    logits = np.full((2000, len(loose.labels)), -128, np.int8)
    logits[:, -1] = 127  # a non-keyword class wins everywhere else
    for i, start in enumerate(range(100, 1900, 100)):  # alternately one step and six steps of the keyword
        logits[start : start + (1 if i % 2 else 6)] = np.where(
            np.arange(logits.shape[1]) == keyword, 127, -128
        )
    due = list(range(98, 98 + len(logits)))
    run = FileResult("a.wav", 60.0, due, logits, decide(loose, "a.wav", due, logits))
    again = run.at(strict)
    assert again.detections == decide(strict, "a.wav", due, logits) and len(again.detections) == 9
    assert len(run.detections) == 18 and run.at(loose).detections == run.detections
    inserted = [Inserted(loose.keywords[0], d.time_s - 0.5, d.time_s) for d in run.detections]
    positives = PositiveRun(run, inserted, loose.keywords, {})
    assert positives.score()["recall"] == 1.0 and positives.at(strict).score()["recall"] == 0.5


def test_recall_wrong_keyword_and_false_accepts_on_known_events() -> None:
    inserted = [
        Inserted("yes", 1.0, 2.0),
        Inserted("yes", 4.0, 5.0),
        Inserted("no", 7.0, 8.0),
        Inserted("up", 10.0, 11.0),
    ]
    detections = [
        Detection("s", 2.3, "yes", 0.9),  # heard, 0.3 s after the clip
        Detection("s", 2.6, "yes", 0.9),  # a second firing on the same clip: a false accept
        Detection("s", 8.2, "off", 0.9),  # the "no" clip fired as another word
        Detection("s", 14.0, "go", 0.9),  # far from any clip: a false accept
    ]  # the second "yes" and the "up" were missed
    got = score_positives(inserted, detections, ("yes", "no", "up", "off", "go"))
    assert (
        got["clips"] == 4
        and got["recall"] == 0.25
        and got["wrong_keyword"] == 1
        and got["false_accepts"] == 2
    )
    yes = got["per_keyword"]["yes"]
    assert (
        yes["clips"] == 2
        and yes["hits"] == 1
        and yes["recall"] == 0.5
        and yes["median_delay_s"] == pytest.approx(0.3)
    )
    assert got["per_keyword"]["no"]["wrong"] == 1 and got["per_keyword"]["go"]["recall"] is None


def test_cli_measures_recall_of_clips_in_running_audio(
    build: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rng = np.random.default_rng(5)
    for word in ("yes", "no", "dog"):  # "dog" is not a keyword: not a positive
        for i in range(2):
            write_wav(tmp_path / "pos" / word / f"s{i}_nohash_0.wav", rng.normal(0, 0.2, SAMPLE_RATE))
    record = tmp_path / "stream.json"
    args = [
        "stream",
        str(build),
        "--positives",
        str(tmp_path / "pos"),
        "--snr",
        "10:20",
        "--threshold",
        "0.004",
    ]
    assert main([*args, "--json", str(record), "--quiet"]) == 0
    pos = json.loads(record.read_text())["positives"]
    assert pos["clips"] == 4 and pos["snr_db"] == [10.0, 20.0] and 0.0 <= pos["recall"] <= 1.0
    assert pos["per_keyword"]["yes"]["clips"] == 2 and pos["per_keyword"]["up"]["clips"] == 0
    assert "positives: 4 clips" in capsys.readouterr().out


def test_sweep_decides_again_from_the_same_logits_and_picks_a_point(
    build: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The sweep's point at the build's own threshold and window equals the measured run; the chosen
    point meets the target and no other point meeting it has a better recall."""
    rng = np.random.default_rng(7)
    for i in range(2):
        write_wav(tmp_path / "neg" / f"n{i}.wav", speech_like(5.0, seed=20 + i))
        write_wav(tmp_path / "pos" / "yes" / f"s{i}_nohash_0.wav", rng.normal(0, 0.2, SAMPLE_RATE))
    record = tmp_path / "stream.json"
    args = ["stream", str(build), "--negatives", str(tmp_path / "neg"), "--positives", str(tmp_path / "pos")]
    plot = tmp_path / "det.png"
    assert (
        main([*args, "--target-fa-per-hour", "2000", "--plot", str(plot), "--json", str(record), "--quiet"])
        == 0
    )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(record.read_text())
    points = data["sweep"]["points"]
    assert len(points) == 9 * 4
    own = next(p for p in points if p["threshold"] == data["threshold"] and p["window"] == data["window"])
    assert own["fa_per_hour"] == pytest.approx(data["negatives"]["fa_per_hour"])
    assert own["recall"] == data["positives"]["recall"]
    chosen = data["sweep"]["chosen"]
    meeting = [p for p in points if within_fa_budget(p["false_accepts"], p["hours"], 2000, MEDIAN)]
    if chosen is None:
        assert not meeting
    else:
        assert chosen in meeting and chosen["recall"] == max(p["recall"] for p in meeting)
    assert "FA/h" in capsys.readouterr().out


def test_best_point_reads_a_lone_false_accept_as_evidence_not_as_its_raw_rate() -> None:
    """1 false accept in 2.1 h is 0.47/h raw but no evidence of <= 0.5/h: the silent point ships."""
    lenient = {"threshold": 0.9, "window": 3, "false_accepts": 1, "hours": 2.1, "fa_per_hour": 1 / 2.1,
               "recall": 1.0}  # fmt: skip
    silent = {**lenient, "threshold": 0.95, "false_accepts": 0, "fa_per_hour": 0.0, "recall": 0.98}
    assert best_point([lenient, silent], 0.5) == silent
    assert best_point([lenient], 0.5) is None
    assert best_point([lenient, silent], 1.0) == lenient  # 1 in 2.1 h fits 1 FA/h (bound 0.80)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty folder", "no audio files"),
        ("unreadable file", "cannot read audio"),
        ("unreadable file in a folder", "broken.wav: cannot read audio"),  # raised in the reader process
        ("no firmware package", f"no {SETTINGS_HEADER}"),
        ("nothing to scan", "give AUDIO files or folders"),
        ("bad snr", "--snr 'loud'"),
        ("sweep without negatives", "--sweep and --target-fa-per-hour need --negatives"),
    ],
)
def test_user_errors_name_what_is_wrong(
    case: str, message: str, build: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = build
    audio = [str(tmp_path)]
    if case == "unreadable file":
        (tmp_path / "broken.wav").write_bytes(b"RIFF not really")
        audio = [str(tmp_path / "broken.wav")]
    elif case == "unreadable file in a folder":
        write_wav(tmp_path / "a.wav", speech_like(2.0, seed=4))
        (tmp_path / "broken.wav").write_bytes(b"RIFF not really")
    elif case == "no firmware package":
        target = tmp_path / "bare"
        target.mkdir()
        for name in ("model.tflite", "manifest.json"):
            (target / name).write_bytes((build / name).read_bytes())
    elif case == "nothing to scan":
        audio = []
    elif case == "bad snr":
        audio = ["--positives", str(tmp_path), "--snr", "loud"]
    elif case == "sweep without negatives":
        audio = ["--positives", str(tmp_path), "--sweep"]
    assert main(["stream", str(target), *audio, "--quiet"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("window", [1, 2, 3, 5])
@pytest.mark.parametrize("refractory", [0, 1, 4, 10])
def test_fast_detections_equal_stepping_the_smoother_through_every_inference(
    window: int, refractory: int
) -> None:
    """`detect.detections` (what `decide` and the sweep use) against `smooth_stream` (what the firmware's
    C++ is checked against): every detection, its inference, label, sum and average, on logits with bursts,
    ties between keywords and non-keyword classes that dominate, at several cutoffs."""
    rng = np.random.default_rng(window * 100 + refractory)
    n, c = 3000, 12
    logits = rng.integers(-90, 0, size=(n, c)).astype(np.int8)
    for start in rng.integers(0, n - 8, 150):  # bursts of one class, some of them _unknown_/_silence_
        logits[start : start + rng.integers(1, 8), rng.integers(0, c)] = rng.integers(20, 127)
    for start in rng.integers(0, n - 3, 20):  # two keywords tied
        logits[start : start + 3, [2, 5]] = 90
    table = exp_table(0.07)
    detectable = [True] * 10 + [False, False]
    probs = probabilities_u8(logits, table)
    for cutoff in (100, 180, 216, 250):
        trace = smooth_stream(logits, table, window, cutoff, detectable, refractory)
        want = [(i, d) for i, d in enumerate(trace.decisions) if d.detected]
        assert detections(probs, window, cutoff, detectable, refractory) == want
        assert cutoff == 250 or want  # the lower cutoffs do fire
