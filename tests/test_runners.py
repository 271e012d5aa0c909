"""Runners agree as the device semantics say: TFLM ~ LiteRT(reference) to the last step, floats to 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, F, KwsModels, T, features, torch_logits

from edgekd.errors import EdgekdError
from edgekd.verify.runners import (
    LiteRTRunner,
    OrtRunner,
    TFLMRunner,
    dequantize,
    quantize_input,
)
from edgekd.verify.tflite_info import describe


def test_quantize_rounds_half_away_from_zero_and_clamps() -> None:
    x = np.array([0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, 1000.0, -1000.0], np.float32)
    assert quantize_input(x, 1.0, 0).tolist() == [1, -1, 2, 3, -3, 0, 127, -128]
    assert quantize_input(np.array([0.25, -0.25]), 0.1, 3).tolist() == [6, 0]  # 2.5 -> 3, -2.5 -> -3
    q = np.arange(-128, 128, dtype=np.int8)
    assert np.array_equal(quantize_input(dequantize(q, 0.03, 1), 0.03, 1), q)


def test_tflm_and_litert_reference_agree_to_the_step(models: KwsModels) -> None:
    """Bit-identical except int8 FULLY_CONNECTED's rounding near .5 (measured 0.1-0.3% of outputs)."""
    x = features(200, seed=100)
    tflm = TFLMRunner(models.int8).predict(x)
    ref = LiteRTRunner(models.int8, reference=True).predict(x)
    assert tflm.shape == (200, CLASSES) and tflm.dtype == np.float32
    assert np.mean(tflm == ref) > 0.99
    assert np.abs(tflm - ref).max() <= describe(models.int8).output.scale * 1.001
    # The int8 model tracks the float net to within a few output steps.
    assert np.abs(tflm - torch_logits(models.net, x)).max() < 0.05


def test_litert_xnnpack_is_within_one_step_of_tflm(models: KwsModels) -> None:
    x = features(20, seed=101)
    step = describe(models.int8).output.scale
    diff = np.abs(LiteRTRunner(models.int8, reference=False).predict(x) - TFLMRunner(models.int8).predict(x))
    assert diff.max() <= step * 1.001


def test_float_tflite_and_onnx_match_torch(models: KwsModels) -> None:
    x = features(5, seed=102)
    expected = torch_logits(models.net, x)
    for runner in (
        LiteRTRunner(models.float),
        LiteRTRunner(models.dynamic_batch),
        TFLMRunner(models.float_4d),
        LiteRTRunner(models.float_4d),
        OrtRunner(models.onnx),
    ):
        got = runner.predict(x)
        assert got.shape == (5, CLASSES), runner.name
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=runner.name)


def test_dynamic_batch_resizes_between_calls(models: KwsModels) -> None:
    runner = LiteRTRunner(models.dynamic_batch)
    x = features(3, seed=103)
    assert runner.predict(x).shape == (3, CLASSES)
    np.testing.assert_array_equal(runner.predict(x[:1]), LiteRTRunner(models.float).predict(x[:1]))


def test_features_that_do_not_fit_the_model_raise(models: KwsModels) -> None:
    with pytest.raises(EdgekdError, match=r"takes \[98, 40\] per clip"):
        TFLMRunner(models.int8).predict(np.zeros((1, 49, 40), np.float32))
    with pytest.raises(EdgekdError, match=r"\[N, T, F\]"):
        LiteRTRunner(models.int8).predict(np.zeros((T, F), np.float32))


def test_bad_onnx_file_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(EdgekdError, match="bad.onnx"):
        OrtRunner(bad)
    with pytest.raises(EdgekdError, match="missing.onnx"):
        OrtRunner(tmp_path / "missing.onnx")


def test_slow_runtimes_in_a_worker_process_give_the_same_logits(
    models: KwsModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`runtime_logits` moves TFLM and LiteRT to a child process on large inputs: same numbers, and a
    child that fails surfaces as an EdgekdError naming the model folder."""
    import shutil

    from edgekd.config import load_config
    from edgekd.verify import scoring

    cfg = load_config("esp32s3", overrides=["verify.runtimes=[tflm, litert]"])
    shutil.copy(models.int8, tmp_path / "model.tflite")
    x = features(6, seed=4)
    reference = {"student_fp32": np.zeros((6, CLASSES), np.float32)}
    here = scoring.runtime_logits(cfg, x, lambda: reference, tmp_path, progress=False)
    monkeypatch.setattr(scoring, "WORKER_MIN_CLIPS", 1)
    there = scoring.runtime_logits(cfg, x, lambda: reference, tmp_path, progress=False)
    assert list(there) == list(here) == ["student_fp32", "student_int8_litert", "student_int8_tflm"]
    for name in here:
        np.testing.assert_array_equal(there[name], here[name])
    (tmp_path / "model.tflite").write_bytes(b"not a model")
    with pytest.raises(EdgekdError, match=f"{tmp_path}: runtime worker"):
        scoring.runtime_logits(cfg, x, lambda: reference, tmp_path, progress=False)
