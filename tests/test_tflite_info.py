"""Static model facts and TFLM arena sizing, checked against hand counts and real allocation."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import KwsModels

from edgekd.errors import EdgekdError
from edgekd.verify.runners import TFLMRunner
from edgekd.verify.tflite_info import describe, measure_arena, smallest_working_arena


def test_describe_int8_model(models: KwsModels) -> None:
    info = describe(models.int8)
    assert info.ops == [
        "RESHAPE",
        "DEPTHWISE_CONV_2D",  # the 1-input-channel conv becomes depthwise (multiplier 8)
        "DEPTHWISE_CONV_2D",
        "CONV_2D",
        "AVERAGE_POOL_2D",
        "QUANTIZE",  # int8 -> int8 requantize between the two pools
        "MEAN",
        "FULLY_CONNECTED",
    ]
    assert info.op_set == sorted(set(info.ops))
    assert info.is_fully_int8 and info.float_tensors == []
    for t in (info.input, info.output):
        assert t.dtype == "int8" and t.scale is not None and t.zero_point is not None
    assert info.input.shape == (1, 98, 40) and info.output.shape == (1, 12)
    assert info.flash_bytes == models.int8.stat().st_size
    conv = 45 * 19 * 8 * (10 * 4)  # out 45x19x8, each a 10x4x1 window
    depthwise = 45 * 19 * 8 * (3 * 3)
    pointwise = 45 * 19 * 16 * 8
    avg_pool = 5 * 19 * 16 * 9  # out 5x19x16, each sums a 9x1 window
    mean = 5 * 19 * 16  # sums every input element
    fc = 16 * 12
    assert info.macs == conv + depthwise + pointwise + avg_pool + mean + fc == 459_992


def test_describe_float_model_names_float_tensors(models: KwsModels) -> None:
    info = describe(models.float)
    assert not info.is_fully_int8
    assert info.input.dtype == "float32" and info.input.scale is None
    assert info.input.name in info.float_tensors and info.output.name in info.float_tensors
    assert info.macs == describe(models.int8).macs


def test_measure_arena_is_the_smallest_working_size(models: KwsModels) -> None:
    for path in (models.int8, models.float):
        measured = measure_arena(path)
        smallest = smallest_working_arena(path, 1, 2 * measured)
        assert smallest <= measured <= 1.05 * smallest, path.name


def test_too_small_arena_names_the_need(models: KwsModels) -> None:
    needed = measure_arena(models.int8)
    with pytest.raises(EdgekdError, match=rf"in a {needed // 2} B arena; this model needs {needed} B"):
        TFLMRunner(models.int8, arena_size=needed // 2)


@pytest.mark.parametrize("content", [b"", b"garbage, not a flatbuffer" * 20, None])
def test_invalid_model_file_raises(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "broken.tflite"
    if content is not None:
        path.write_bytes(content)
    for call in (describe, measure_arena, TFLMRunner):
        with pytest.raises(EdgekdError, match="broken.tflite"):
            call(path)


def test_truncated_model_raises(tmp_path: Path, models: KwsModels) -> None:
    path = tmp_path / "truncated.tflite"
    path.write_bytes(models.int8.read_bytes()[:2000])
    with pytest.raises(EdgekdError, match="not a usable TFLite model"):
        TFLMRunner(path)
