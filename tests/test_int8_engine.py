"""The batched INT8 engine reproduces TFLite Micro (the tflite_micro wheel's reference kernels) bit for bit.

On the esp32s3 student exported the real way: random windows, every intermediate tensor, a few minutes of
real speech through the continuous micro frontend (the built-in pool; noise bursts without it), real
activation clamps and per-tensor filters edited into a copy, and a negative control (single rounding must
differ) so the comparisons are not vacuous. The closed-form requantization is checked against a literal
transcription of TFLM's C++ on accumulators built to sit on rounding boundaries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import KwsModels, read_tflite, speech_like, write_tflite
from tflite_micro import runtime
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from edgekd.audio.frontend import MICRO_FEATURE_SCALE, make_frontend
from edgekd.detect import quantize_raw_features, window_schedule
from edgekd.verify.int8_engine import (
    Int8Engine,
    Requant,
    UnsupportedModelError,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)
from edgekd.verify.runners import TFLMRunner
from edgekd.verify.tflite_info import describe


def random_windows(n: int, seed: int, shape: tuple[int, ...] = (98, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, size=(n, *shape), dtype=np.int8)


def tflm(path: Path, q: np.ndarray) -> np.ndarray:
    return TFLMRunner(path).predict_quantized(q)


def edit_model(
    src: Path,
    dst: Path,
    activations: dict[int, int] | None = None,
    per_tensor: tuple[int, ...] = (),
    keep_ops: int | None = None,
) -> Path:
    """A copy of `src` with fused activations replaced (op index -> ActivationFunctionType), the filters
    of `per_tensor` ops reduced to their first scale, or only the first `keep_ops` ops (the last one's
    output becomes the model output). TFLM and the engine both run the edited file."""
    model = read_tflite(src)
    graph = model.subgraphs[0]
    for k, act in (activations or {}).items():
        graph.operators[k].builtinOptions.fusedActivationFunction = act
    for k in per_tensor:
        quant = graph.tensors[graph.operators[k].inputs[1]].quantization
        quant.scale, quant.zeroPoint, quant.quantizedDimension = quant.scale[:1], quant.zeroPoint[:1], 0
    if keep_ops is not None:
        graph.operators = graph.operators[:keep_ops]
        graph.outputs = np.array([graph.operators[-1].outputs[0]], np.int32)
    write_tflite(model, dst)
    return dst


@pytest.fixture(scope="module")
def model(esp32s3_student: Path) -> Path:
    return esp32s3_student / "model.tflite"


@pytest.fixture(scope="module")
def speech(model: Path) -> np.ndarray:
    """~4 min of real speech (the pool's check part; noise bursts without it) through the continuous
    micro frontend, quantized and windowed as `edgekd stream` does: ~2,300 windows."""
    from edgekd.data.real_pool import negative_recordings
    from edgekd.errors import DataError

    try:
        audio = np.concatenate([r.audio for r in negative_recordings("check", 4.0, seed=0)])
    except DataError:
        audio = speech_like(240.0, seed=0)
    raw = np.round(make_frontend("micro")(audio) / np.float32(MICRO_FEATURE_SCALE)).astype(np.uint16)
    info = describe(model)
    q = quantize_raw_features(raw, info.input.scales[0], info.input.zero_points[0])
    return np.stack([q[t - 98 : t] for t in window_schedule(len(q), 98, 10)])


@pytest.fixture(scope="module")
def speech_tflm(model: Path, speech: np.ndarray) -> np.ndarray:
    return tflm(model, speech)


# ------------------------------------------------------------------ the arithmetic, without TFLM


def test_quantize_multiplier_edge_cases() -> None:
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(1.0 - 2.0**-40) == (1 << 30, 1)  # q * 2^31 rounds to 2^31: renormalised
    assert quantize_multiplier(2.0**-40) == (0, 0)  # shift < -31 flushes to zero
    assert quantize_multiplier(2.0**40, "single") == ((1 << 31) - 1, 30)  # single rounding saturates
    m, shift = quantize_multiplier(0.0016)
    assert abs(m * 2.0 ** (shift - 31) - 0.0016) < 1e-12 and 1 << 30 <= m < 1 << 31


@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("force_int64", [False, True])
def test_closed_form_requant_equals_literal_cpp(rounding: str, force_int64: bool) -> None:
    """The one-floor requantization == a literal transcription of MultiplyByQuantizedMultiplier, on
    random accumulators and on accumulators built to sit at both roundings' .5 boundaries."""
    rng = np.random.default_rng(7)
    for shift in range(-22, 4):
        m = rng.integers(1 << 30, 1 << 31, 8)
        m[0], m[1] = 1 << 30, (1 << 31) - 1
        lim = int(min(2**31 - 1, 400 * 2.0 ** (1 - shift))) if shift <= 0 else (2**31 - 1) >> shift
        a = rng.integers(-lim, lim + 1, (4000, 8))
        d = 31 + max(-shift, 0) if rounding == "double" else 31 - shift
        for c in range(8):  # a * M just around odd multiples of 2^(d-1): the .5 boundaries
            k = rng.integers(-300, 300, 1000)
            mult = int(m[c]) << max(shift, 0) if rounding == "double" else int(m[c])
            a[:1000, c] = np.clip((2 * k + 1) * (1 << (d - 1)) // mult + rng.integers(-2, 3, 1000), -lim, lim)
        zp = int(rng.integers(-128, 128))
        shifts = np.full(8, shift)
        rq = Requant(np.zeros(8, np.int64), m, shifts, zp, -128, 127, rounding, np.full(8, lim), force_int64)  # type: ignore[arg-type]
        got = rq(torch.from_numpy(a.astype(np.float64))).numpy().astype(np.int64)
        want = np.clip(multiply_by_quantized_multiplier(a, m, shifts, rounding) + zp, -128, 127)  # type: ignore[arg-type]
        assert np.array_equal(got, want), f"shift {shift}"


# ------------------------------------------------------------------ against TFLite Micro


def test_random_windows_are_bit_identical_through_both_requantizations(model: Path) -> None:
    q = random_windows(256, seed=1)
    ref = tflm(model, q)
    assert np.array_equal(Int8Engine(model, compile=False).predict_quantized(q), ref)
    assert np.array_equal(Int8Engine(model, compile=False, force_int64=True).predict_quantized(q), ref)


def test_every_layer_is_bit_identical(model: Path) -> None:
    """Each intermediate tensor equals TFLM's (kPreserveAllTensors), not just the logits."""
    q = random_windows(6, seed=2)
    mine = Int8Engine(model, compile=False).intermediates(q)
    interp = runtime.Interpreter.from_file(
        str(model), arena_size=4 << 20, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors
    )
    assert len(mine) >= 14  # the input and every op's output
    for n in range(len(q)):
        interp.set_input(q[n : n + 1], 0)
        interp.invoke()
        for index, t in mine.items():
            ref = interp.GetTensor(index, 0)["tensor_data"]
            assert np.array_equal(t[n].reshape(-1), ref.reshape(-1)), f"tensor {index}, window {n}"


def test_real_speech_through_the_compiled_engine_is_bit_identical(
    model: Path, speech: np.ndarray, speech_tflm: np.ndarray
) -> None:
    assert len(speech) > 2000
    engine = Int8Engine(model, threads=2)  # the fast path `edgekd stream` uses; last batch padded
    out = engine.predict_quantized(speech)
    assert engine.compile_error is None
    assert np.array_equal(out, speech_tflm)


def test_single_rounding_differs_so_the_comparison_is_not_vacuous(
    model: Path, speech: np.ndarray, speech_tflm: np.ndarray
) -> None:
    """A TFLITE_SINGLE_ROUNDING build (close to LiteRT's reference FULLY_CONNECTED) must not match."""
    single = Int8Engine(model, compile=False, rounding="single").predict_quantized(speech)
    assert np.sum(single != speech_tflm) > 0


def test_activation_clamps_and_per_tensor_filters(model: Path, tmp_path: Path) -> None:
    """The student's RELUs with zero point -128 clamp nothing, so force real clamps (RELU6, RELU_N1_TO_1,
    RELU on the FC, whose zero point is not -128) and per-tensor conv and FC filters into a copy."""
    act = fb.ActivationFunctionType
    ops = describe(model).ops
    fc = ops.index("FULLY_CONNECTED")
    convs = [i for i, op in enumerate(ops) if op == "CONV_2D"]
    depthwise = [i for i, op in enumerate(ops) if op == "DEPTHWISE_CONV_2D"]
    edited = edit_model(
        model,
        tmp_path / "edited.tflite",
        activations={depthwise[0]: act.RELU6, convs[0]: act.RELU6, convs[1]: act.RELU_N1_TO_1, fc: act.RELU},
        per_tensor=(convs[0], convs[-1], fc),
    )
    q = random_windows(200, seed=3)
    out, ref = Int8Engine(edited, compile=False).predict_quantized(q), tflm(edited, q)
    assert np.array_equal(out, ref)
    zp = describe(edited).output.zero_points[0]
    assert out.min() >= zp and (zp > -128)  # the FC's RELU clamped at its zero point


def test_an_unsupported_op_is_named_and_the_graph_before_it_matches(
    models: KwsModels, tmp_path: Path
) -> None:
    """The tiny fixture net ends in MEAN, which the engine does not reproduce: a clear error naming it
    (callers fall back to TFLite Micro); the graph cut before it (conv 10x4 stride 2 VALID, 3x3 SAME
    depthwise, pointwise, 9x1 pool) matches."""
    with pytest.raises(UnsupportedModelError, match="MEAN"):
        Int8Engine(models.int8)
    cut = edit_model(models.int8, tmp_path / "cut.tflite", keep_ops=describe(models.int8).ops.index("MEAN"))
    q = random_windows(200, seed=4)
    assert np.array_equal(Int8Engine(cut, compile=False).predict_quantized(q), tflm(cut, q))


def test_stream_uses_the_engine_where_it_can(model: Path, models: KwsModels) -> None:
    from edgekd.stream import model_runner

    assert isinstance(model_runner(model), Int8Engine)
    assert isinstance(model_runner(models.int8), TFLMRunner)


def test_input_validation(model: Path) -> None:
    engine = Int8Engine(model, compile=False)
    with pytest.raises(ValueError, match="int8"):
        engine.predict_quantized(np.zeros((2, 98, 40), np.float32))
    with pytest.raises(ValueError):
        engine.predict_quantized(np.zeros((2, 97, 40), np.int8))
    assert engine.predict_quantized(np.zeros((0, 98, 40), np.int8)).shape == (0, 12)
