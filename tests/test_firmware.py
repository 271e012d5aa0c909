"""Firmware: the host-built C++ (firmware_stub/components/kws) reproduces edgekd's decision logic bit for bit,
the comparison fails when the Python rules change alone, and a build's firmware package compiles.

Builds firmware_stub/host_test with cmake + the host C++ compiler once per module (~5 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import KwsModels, speech_like, stream_build

from edgekd import detect
from edgekd.artifacts import sha256_bytes
from edgekd.audio.frontend import MICRO_FEATURE_SCALE, MicroFrontend
from edgekd.audio.io import SAMPLE_RATE
from edgekd.audio.synth import Synthesizer, list_voices
from edgekd.errors import EdgekdError
from edgekd.esphome import contract as esphome
from edgekd.export.c_array import write_c_array
from edgekd.export.firmware import (
    ESPHOME_MANIFEST,
    SETTINGS_HEADER,
    esphome_contract_violations,
    esphome_cutoff,
    resolver_method,
    write_firmware_package,
)
from edgekd.verify import runners

ROOT = Path(__file__).resolve().parent.parent
HOST_TEST = ROOT / "firmware_stub" / "host_test"
CXX = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"]
INPUT_SCALE, INPUT_ZP = 0.10095298290252686, -128  # a real esp32s3 build's input quantization
OUTPUT_SCALE = 0.06752128154039383
# Quantization cases run over all 65536 uint16 frontend values. 0.078125 = 2 x the feature scale makes
# every odd value an exact .5 (so a half-to-even rounding cannot hide); (0.15, 3) a positive zero point.
QUANT_CASES = [(INPUT_SCALE, INPUT_ZP), (0.078125, -128), (0.15, 3)]
RING_FRAMES, STRIDE, WINDOW, REFRACTORY = 98, 3, 3, 4


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _checked(cmd: list[str]) -> str:
    proc = _run(cmd)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def host_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C++ host build; only the tests that use it skip without a toolchain (the Python ones run)."""
    if shutil.which("cmake") is None or CXX is None:
        pytest.skip("the firmware host tests need cmake and a C++17 compiler (apt-get install cmake g++)")
    build = tmp_path_factory.mktemp("kws-host")
    _checked(["cmake", "-S", str(HOST_TEST), "-B", str(build), f"-DCMAKE_CXX_COMPILER={CXX}"])
    _checked(["cmake", "--build", str(build), "-j2", "--target", "kws_unit_tests", "kws_vectors"])
    return build


def test_cpp_unit_tests_pass_under_ctest(host_build: Path) -> None:
    proc = _run(["ctest", "--output-on-failure", "-R", "kws_unit_tests"], cwd=host_build)
    assert proc.returncode == 0 and "100% tests passed" in proc.stdout, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- bit-identity vectors


@pytest.fixture(scope="module")
def stream_raw() -> np.ndarray:
    """uint16 micro-frontend frames [T, 40] of a 4 s stream with three spoken keywords (as a device hears)."""
    voice = list_voices("espeak", 1, seed=0)[0]
    synth = Synthesizer()
    audio = np.random.default_rng(0).normal(0, 0.003, 4 * SAMPLE_RATE).astype(np.float32)
    for word, start in (("yes", 0.3), ("stop", 1.5), ("no", 2.7)):
        x = synth.synth(word, voice)
        i = int(start * SAMPLE_RATE)
        audio[i : i + len(x)] += x[: len(audio) - i]
    # One call over the whole stream: the frontend's noise and gain state carry on, as on the device.
    features = MicroFrontend()(audio)
    raw = np.round(features / np.float32(MICRO_FEATURE_SCALE))
    np.testing.assert_array_equal(raw * np.float32(MICRO_FEATURE_SCALE), features)  # exact codes
    assert features.shape == (398, 40) and raw.max() > 400  # speech, not just noise
    return raw.astype(np.uint16)


def _crafted_logits(n: int, table: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """int8 logits for n inferences covering every branch of the rule, and the cutoff that makes one
    window sum land exactly on cutoff * window (strict '>' must not fire there)."""
    c = len(LABELS)
    logits = rng.integers(-60, 21, size=(n, c)).astype(np.int8)
    tie = np.full(c, -128, np.int8)
    tie[[0, 1]] = (40, 30)
    cutoff = int(detect.probabilities_u8(tie, table)[0])

    def burst(start: int, length: int, cls: int, level: int = 100) -> None:
        logits[start : start + length, cls] = level

    burst(4, 12, 0)  # a long "yes": fires, refractory, fires again
    burst(16, 5, c - 1)  # _silence_ dominates: never a detection
    logits[24 : 24 + WINDOW] = tie  # sum == cutoff * window exactly: not fired
    burst(30, 3, 4, 35)  # a weaker "left" near the cutoff
    burst(40, 4, 8)  # "stop"
    logits[50:53, 2] = logits[50:53, 3] = 90  # two keywords tie: the lower index wins
    logits[60:62] = 127  # all equal: probabilities round half up
    return logits, cutoff


@dataclass(frozen=True)
class Pipe:
    """A streaming run's settings for the vectors file (a build's, or the crafted test's)."""

    input_scale: float = INPUT_SCALE
    input_zero_point: int = INPUT_ZP
    output_scale: float = OUTPUT_SCALE
    frames: int = RING_FRAMES
    stride: int = STRIDE
    window: int = WINDOW
    refractory: int = REFRACTORY
    labels: tuple[str, ...] = tuple(LABELS)


def write_vectors(
    path: Path,
    raw: np.ndarray,
    seed: int = 0,
    pipe: Pipe = Pipe(),
    logits: np.ndarray | None = None,
    cutoff: int | None = None,
) -> dict[str, int]:
    """Inputs and edgekd's expected outputs in the format of firmware_stub/host_test/kws_vectors.cc:
    `logits` (one row per scheduled inference, e.g. TFLite Micro's on a real stream) with `cutoff`, or
    crafted ones that reach every branch of the rule."""
    arrays: dict[str, np.ndarray | list[int]] = {}

    def bits(x: float) -> int:
        return int(np.float32(x).view(np.uint32))

    arrays["feature_scale_bits"] = [bits(MICRO_FEATURE_SCALE)]
    every = np.arange(1 << 16, dtype=np.uint16)
    arrays["quant.cases"] = [len(QUANT_CASES)]
    for i, (scale, zp) in enumerate(QUANT_CASES):
        arrays[f"quant.{i}.scale_bits"] = [bits(scale)]
        arrays[f"quant.{i}.zero_point"] = [zp]
        arrays[f"quant.{i}.raw"] = every
        arrays[f"quant.{i}.expected"] = detect.quantize_raw_features(every, scale, zp)

    table = detect.exp_table(pipe.output_scale)
    frames_q = detect.quantize_raw_features(raw, pipe.input_scale, pipe.input_zero_point)
    scheduled = list(detect.feature_windows(frames_q, pipe.frames, pipe.stride))
    if logits is None:
        logits, cutoff = _crafted_logits(len(scheduled), table, np.random.default_rng(seed))
    assert cutoff is not None and len(logits) == len(scheduled)
    detectable = [lbl not in detect.NON_KEYWORDS for lbl in pipe.labels]
    trace = detect.smooth_stream(logits, table, pipe.window, cutoff, detectable, pipe.refractory)
    arrays.update(
        {
            "pipe.frames": [pipe.frames],
            "pipe.features": [raw.shape[1]],
            "pipe.stride": [pipe.stride],
            "pipe.scale_bits": [bits(pipe.input_scale)],
            "pipe.zero_point": [pipe.input_zero_point],
            "pipe.classes": [len(pipe.labels)],
            "pipe.window": [pipe.window],
            "pipe.cutoff": [cutoff],
            "pipe.refractory": [pipe.refractory],
            "pipe.detectable": [int(d) for d in detectable],
            "pipe.exp_table": table,
            "pipe.raw": raw,
            "pipe.due_frames": [t for t, _ in scheduled],
            "pipe.windows": np.stack([w for _, w in scheduled]),
            "pipe.logits": logits,
            "pipe.probs": trace.probs,
            "pipe.sums": trace.sums,
            "pipe.detected": [int(d.detected) for d in trace.decisions],
            "pipe.label": [d.label for d in trace.decisions],
            "pipe.sum": [d.total for d in trace.decisions],
            "pipe.average": [d.average for d in trace.decisions],
        }
    )
    lines = ["edgekd-kws-vectors 1"]
    for name, values in arrays.items():
        flat = np.asarray(values).reshape(-1).astype(np.int64).tolist()
        lines.append(f"{name} {len(flat)} {' '.join(map(str, flat))}")
    path.write_text("\n".join(lines) + "\n")
    return {
        "inferences": len(scheduled),
        "detections": sum(d.detected for d in trace.decisions),
        "cutoff": cutoff,
    }


def test_reference_quantization_is_the_training_quantization(stream_raw: np.ndarray) -> None:
    features = stream_raw.astype(np.float32) * np.float32(MICRO_FEATURE_SCALE)
    np.testing.assert_array_equal(
        detect.quantize_raw_features(stream_raw, INPUT_SCALE, INPUT_ZP),
        runners.quantize_input(features, INPUT_SCALE, INPUT_ZP),
    )


def test_cpp_matches_python_bit_for_bit(host_build: Path, stream_raw: np.ndarray, tmp_path: Path) -> None:
    vectors = tmp_path / "vectors.txt"
    info = write_vectors(vectors, stream_raw)
    assert info["inferences"] == (398 - RING_FRAMES) // STRIDE + 1
    assert info["detections"] >= 3  # the crafted bursts fire; the run is not trivially quiet
    proc = _run([str(host_build / "kws_vectors"), str(vectors)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"({info['inferences']} inferences, {info['detections']} detections)" in proc.stdout


def test_cpp_agrees_with_the_stream_evaluator_event_for_event_on_a_real_stream(
    host_build: Path, models: KwsModels, tmp_path: Path
) -> None:
    """`edgekd stream`'s evaluator on a minute of real speech (the built-in pool; noise bursts without
    it) with TFLite Micro's int8 logits, against the C++ kws pipeline fed the same frontend frames and
    those logits: the C++ recomputes every window, probability, sum and decision, and each detection the
    evaluator reports is a C++ detection at the same inference. TFLite Micro itself is the wheel's C++
    build (its sources are not here to compile); the kws component is firmware_stub's own C++."""
    from edgekd.data.real_pool import negative_recordings
    from edgekd.errors import DataError
    from edgekd.stream import load_settings, stream_audio

    build = stream_build(tmp_path / "build", models)
    try:
        audio = np.concatenate([r.audio for r in negative_recordings("check", 1.0, seed=0)])
    except DataError:
        audio = speech_like(60.0, seed=3)
    settings = load_settings(build, threshold=0.105, window=2)  # the toy is never sure: fires now and then
    result = stream_audio(settings, runners.TFLMRunner(build / "model.tflite"), audio, "real", progress=False)
    raw = np.round(MicroFrontend()(audio) / np.float32(MICRO_FEATURE_SCALE)).astype(np.uint16)
    pipe = Pipe(settings.input_scale, settings.input_zero_point, settings.output_scale, settings.frames,
                settings.stride_frames, settings.window, settings.refractory, settings.labels)  # fmt: skip
    vectors = tmp_path / "vectors.txt"
    info = write_vectors(vectors, raw, pipe=pipe, logits=result.logits, cutoff=settings.cutoff)
    assert info["inferences"] == result.inferences > 500
    assert info["detections"] == len(result.detections) >= 1
    proc = _run([str(host_build / "kws_vectors"), str(vectors)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"({info['inferences']} inferences, {info['detections']} detections)" in proc.stdout
    trace = detect.smooth_stream(result.logits, settings.exp_table(), settings.window, settings.cutoff,
                                 settings.detectable, settings.refractory)  # fmt: skip
    fired = [
        (t, settings.labels[d.label]) for t, d in zip(result.due, trace.decisions, strict=True) if d.detected
    ]
    assert [(round((t - 1) * 0.01 + 0.03, 3), w) for t, w in fired] == [
        (d.time_s, d.label) for d in result.detections
    ]


def _half_to_even(x: np.ndarray, scale: float, zero_point: int, dtype: type = np.int8) -> np.ndarray:
    v = np.round(np.asarray(x, np.float32) / np.float32(scale))  # numpy rounds halves to even
    info = np.iinfo(dtype)
    return np.clip(v + zero_point, info.min, info.max).astype(dtype)


class _WiderWindow(detect.PosteriorSmoother):
    def __init__(self, n: int, window: int, cutoff: int, detectable: list[bool], refractory: int = 0) -> None:
        super().__init__(n, window + 1, cutoff, detectable, refractory)


class _ShorterRefractory(detect.PosteriorSmoother):
    def __init__(self, n: int, window: int, cutoff: int, detectable: list[bool], refractory: int = 0) -> None:
        super().__init__(n, window, cutoff, detectable, refractory - 1)


BREAKAGES: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], str]] = {
    "quantize rounds half to even": (
        lambda mp: mp.setattr(runners, "quantize_input", _half_to_even),
        "quant.1 raw",
    ),
    "probabilities round down": (
        lambda mp: mp.setattr(detect, "div_round", lambda n, d: n // d),
        "probability",
    ),
    "cutoff compared with >=": (
        lambda mp: mp.setattr(detect, "exceeds_cutoff", lambda t, c, w: t >= c * w),
        "detected",
    ),
    "smoothing window off by one": (
        lambda mp: mp.setattr(detect, "PosteriorSmoother", _WiderWindow),
        "average",  # the first inference's sums agree (one row filled); sum // window does not
    ),
    "refractory one inference shorter": (
        lambda mp: mp.setattr(detect, "PosteriorSmoother", _ShorterRefractory),
        "detected",
    ),
    "first inference one frame late": (
        lambda mp: mp.setattr(detect, "window_schedule", lambda n, w, s: list(range(w + 1, n + 1, s))),
        "inference due after frame 98",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_changing_the_python_rule_alone_fails_the_comparison(
    breakage: str, host_build: Path, stream_raw: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patch, where = BREAKAGES[breakage]
    patch(monkeypatch)
    vectors = tmp_path / "vectors.txt"
    write_vectors(vectors, stream_raw)
    proc = _run([str(host_build / "kws_vectors"), str(vectors)])
    assert proc.returncode == 1, f"{breakage}: the C++ still matched\n{proc.stdout}"
    assert "MISMATCH" in proc.stdout and where in proc.stdout, proc.stdout


def test_vectors_file_errors_are_reported(host_build: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("something else\n")
    proc = _run([str(host_build / "kws_vectors"), str(bad)])
    assert proc.returncode == 2 and "not an edgekd-kws-vectors 1 file" in proc.stderr


# ----------------------------------------------------------------------------- firmware package


def fake_build(folder: Path, **overrides: object) -> Path:
    """A minimal build dir: manifest.json, parity.json and model_data.h/.cc of stand-in model bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    model = bytes(range(256)) * 5 + b"edgekd"
    write_c_array(model, folder)
    frontend = {**MicroFrontend().params(), "n_features": 40, "clip_ms": 1000, "input_shape": [98, 40]}
    manifest: dict[str, object] = {
        "schema": "edgekd.manifest/1",
        "target": "esp32s3",
        "classes": LABELS,
        "frontend": frontend,
        "model_io": {
            "input": {
                "dtype": "int8",
                "shape": [1, 98, 40],
                "scales": [INPUT_SCALE],
                "zero_points": [INPUT_ZP],
            },
            "output": {
                "dtype": "int8",
                "shape": [1, 12],
                "scales": [OUTPUT_SCALE],
                "zero_points": [-21],
            },
        },
        "arena": {"measured_bytes": 42992, "with_headroom_bytes": 47292},
        "config": {},
        "files": {"model.tflite": {"sha256": sha256_bytes(model), "bytes": len(model)}},
    }
    manifest.update(overrides)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    ops = ["AVERAGE_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "PAD", "QUANTIZE", "RESHAPE"]
    (folder / "parity.json").write_text(json.dumps({"budget": {"ops": ops}}))
    return folder


def test_model_settings_compiles_with_model_data_and_matches_manifest(
    host_build: Path, tmp_path: Path
) -> None:
    build = fake_build(tmp_path / "esp32s3")
    written = write_firmware_package(build)
    assert written == [build / SETTINGS_HEADER]
    assert not (build / ESPHOME_MANIFEST).exists()
    header = (build / SETTINGS_HEADER).read_text()
    assert "micro_wake_word manifest: not written" in header and "uint8 [1, 1]" in header

    # The documented host step: point the host build at the build dir; nothing is copied by hand.
    _checked(["cmake", "-S", str(HOST_TEST), "-B", str(host_build), f"-DEDGEKD_BUILD_DIR={build}"])
    _checked(["cmake", "--build", str(host_build), "-j2", "--target", "settings_check"])
    out = _checked([str(host_build / "settings_check")])
    lines = [line.split(" ", 1) for line in out.splitlines()]
    got: dict[str, str] = {k: v for k, v in lines if k != "label"}
    manifest = json.loads((build / "manifest.json").read_text())
    assert [v.split() for k, v in lines if k == "label"] == [
        [lbl, "0" if lbl.startswith("_") else "1"] for lbl in LABELS
    ]
    assert int(got["num_classes"]) == len(manifest["classes"])
    assert int(got["arena"]) == 47296 and int(got["arena"]) % 16 == 0
    assert int(got["arena"]) >= manifest["arena"]["with_headroom_bytes"]
    assert int(got["arena_measured"]) == manifest["arena"]["measured_bytes"]
    assert np.float32(float(got["input_scale"])) == np.float32(manifest["model_io"]["input"]["scales"][0])
    assert int(got["input_zero_point"]) == INPUT_ZP
    assert np.float32(float(got["output_scale"])) == np.float32(OUTPUT_SCALE)
    assert int(got["output_zero_point"]) == -21
    assert [int(v) for v in got["exp_table"].split()] == detect.exp_table(OUTPUT_SCALE).tolist()
    assert (int(got["feature_frames"]), int(got["feature_count"])) == (98, 40)
    fe = manifest["frontend"]
    assert (int(got["window_ms"]), int(got["step_ms"]), int(got["channels"])) == (30, 10, 40)
    assert float(got["lower_band_limit_hz"]) == fe["lower_band_limit_hz"]
    assert float(got["upper_band_limit_hz"]) == fe["upper_band_limit_hz"]
    assert int(got["pcan_gain_bits"]) == fe["pcan_gain_control"]["gain_bits"]
    assert int(got["log_scale_shift"]) == fe["log_scale"]["scale_shift"]
    assert float(got["feature_scale"]) == MICRO_FEATURE_SCALE
    assert int(got["window"]) == detect.FALLBACK_WINDOW and int(got["stride"]) == detect.DEFAULT_STRIDE_FRAMES
    assert int(got["cutoff"]) == int(detect.FALLBACK_THRESHOLD * 255) == 204
    assert int(got["refractory"]) == 10  # ceil(98 frames / 10): one input window
    assert got["ops"].split() == [
        "AveragePool2D",
        "Conv2D",
        "DepthwiseConv2D",
        "FullyConnected",
        "Pad",
        "Quantize",
        "Reshape",
    ]
    assert int(got["num_ops"]) == 7
    assert got["model_sha256"] == manifest["files"]["model.tflite"]["sha256"]
    assert int(got["model_bytes"]) == manifest["files"]["model.tflite"]["bytes"]


def test_settings_follow_a_firmware_config_section(tmp_path: Path) -> None:
    build = fake_build(tmp_path, config={"firmware": {"threshold": 0.9, "window": 5, "stride_frames": 4}})
    s = detect.settings_from_build(build)
    assert (s.threshold, s.window, s.stride_frames, s.cutoff, s.refractory) == (0.9, 5, 4, 229, 25)
    assert s.detectable == tuple(not lbl.startswith("_") for lbl in LABELS)
    assert detect.settings_from_build(build, threshold=0.5).cutoff == 127
    header = write_firmware_package(build)[0].read_text()
    assert "kSmoothingWindow = 5;" in header and "kProbabilityCutoff = 229;" in header


def test_the_calibrated_operating_point_wins_and_auto_alone_falls_back(tmp_path: Path) -> None:
    """A build's manifest `firmware` section (the operating point its streaming check calibrated) is what
    firmware ships; a config that says auto with no calibration (a build without the check) gets the
    fallback, and says so."""
    calibrated = {
        "threshold": 0.95,
        "window": 2,
        "stride_frames": 10,
        "refractory": 12,
        "chosen_by": "calibrated",
    }
    auto = {"firmware": {"threshold": "auto", "window": "auto", "stride_frames": 10}}
    build = fake_build(tmp_path / "calibrated", config=auto, firmware=calibrated)
    s = detect.settings_from_build(build)
    assert (s.threshold, s.window, s.refractory, s.cutoff) == (0.95, 2, 12, 242)
    assert "kSmoothingWindow = 2;" in write_firmware_package(build)[0].read_text()
    fallback = detect.operating_point({"config": auto})
    assert (fallback["threshold"], fallback["window"]) == (detect.FALLBACK_THRESHOLD, detect.FALLBACK_WINDOW)
    assert fallback["chosen_by"] == "fallback (not calibrated)"
    half = detect.operating_point({"config": {"firmware": {"threshold": 0.7, "window": "auto"}}})
    assert (half["threshold"], half["window"], half["chosen_by"]) == (0.7, 3, "fallback (not calibrated)")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_io": None}, "missing field 'model_io.input'"),
        ({"classes": LABELS[:5]}, "does not hold one score per class"),
        ({"arena": {"measured_bytes": 100}}, "missing field 'arena.with_headroom_bytes'"),
        ({"config": {"firmware": {"threshold": 1.5}}}, "threshold must be in (0, 1)"),
    ],
)
def test_bad_build_dirs_fail_naming_the_field(tmp_path: Path, change: dict, message: str) -> None:
    build = fake_build(tmp_path, **change)
    with pytest.raises(EdgekdError, match=message.replace("(", r"\(").replace(")", r"\)")):
        write_firmware_package(build)


def test_missing_manifest_and_model_mismatch_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EdgekdError, match=r"manifest\.json"):
        write_firmware_package(tmp_path)
    build = fake_build(tmp_path / "b")
    (build / "model.tflite").write_bytes(b"another model")
    with pytest.raises(EdgekdError, match="belongs to another build"):
        write_firmware_package(build)


def test_esphome_manifest_only_for_a_streaming_single_word_uint8_model(tmp_path: Path) -> None:
    streaming = fake_build(
        tmp_path / "streaming",
        classes=["hey_edgekd"],
        model_io={
            "input": {
                "dtype": "int8",
                "shape": [1, 3, 40],
                "scales": [esphome.INPUT_SCALE],
                "zero_points": [-128],
            },
            "output": {"dtype": "uint8", "shape": [1, 1], "scales": [1 / 256], "zero_points": [0]},
        },
    )
    ops = ["CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CONV_2D", "LOGISTIC", "QUANTIZE"]
    (streaming / "parity.json").write_text(json.dumps({"budget": {"ops": ops}}))
    written = write_firmware_package(streaming)
    assert [p.name for p in written] == [SETTINGS_HEADER, ESPHOME_MANIFEST]
    mww = json.loads((streaming / ESPHOME_MANIFEST).read_text())
    assert mww["type"] == "micro" and mww["version"] == 2 and mww["wake_word"] == "hey_edgekd"
    assert mww["model"] == "model.tflite" and mww["trained_languages"] == ["en"]
    assert mww["micro"] == {
        "probability_cutoff": 0.801961,  # (204 + 0.5) / 255: ESPHome's int(c * 255) reads 204 back
        "feature_step_size": 10,
        "sliding_window_size": 3,
        "tensor_arena_size": 47296,
        "minimum_esphome_version": "2024.7.0",
    }
    assert esphome.manifest_problems(mww) == []  # the schema check foreign manifests pass too
    assert "kOutputIsInt8Logits = false;" in written[0].read_text()

    # edgekd's own 12-class model: every failed clause is named.
    settings = detect.settings_from_build(fake_build(tmp_path / "kws"))
    reasons = esphome_contract_violations(settings, ["CONV_2D", "FULLY_CONNECTED", "RESHAPE"])
    assert len(reasons) == 3
    assert "int8 [1, 12]" in reasons[0] and "streaming" in reasons[1] and "input quantization" in reasons[2]


def test_esphome_reads_back_every_cutoff_the_manifest_writes() -> None:
    assert [int(esphome_cutoff(k) * 255) for k in range(256)] == list(range(256))
    assert sum(int(round(k / 255, 4) * 255) != k for k in range(256)) == 125  # what rounding would lose


def test_resolver_method_names() -> None:
    assert resolver_method("CONV_2D") == "Conv2D"
    assert resolver_method("DEPTHWISE_CONV_2D") == "DepthwiseConv2D"
    assert resolver_method("FULLY_CONNECTED") == "FullyConnected"
    assert resolver_method("AVERAGE_POOL_2D") == "AveragePool2D"
    assert resolver_method("SPLIT_V") == "SplitV"
    assert resolver_method("L2_NORMALIZATION") == "L2Normalization"
    assert resolver_method("UNIDIRECTIONAL_SEQUENCE_LSTM") == "UnidirectionalSequenceLSTM"
    with pytest.raises(EdgekdError):
        resolver_method("CONV-2D")
