"""Per-layer float-vs-INT8 comparison on a small real build: healthy layers agree, a damaged one is named.

The build directory is made by hand the way `run_build` lays it out (config.json, weights/float.pt,
weights/qat.pt, model.tflite), from a DS-CNN S trained a few steps and QAT-trained a few more, so the
test exercises the real conversion and the real module names in about half a minute.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _models import realistic_features
from conftest import student_build

from edgekd.models.students import DS_CNN_WIDTHS
from edgekd.report.layers import layers_md, worst_layer
from edgekd.verify.layers import compare_layers

S_BLOCKS = len(DS_CNN_WIDTHS["S"].blocks)
DS_CNN_S_LAYERS = [
    "input",
    "stem.0",
    *[f"blocks.{b}.{i}.0" for b in range(S_BLOCKS) for i in range(2)],
    "pool",
    "fc",
]


@pytest.fixture(scope="module")
def build(esp32s3_student: Path) -> Path:
    return esp32s3_student  # read only: the damage tests copy it first


@pytest.fixture(scope="module")
def clips() -> np.ndarray:
    return realistic_features(16, seed=123).numpy()


@pytest.fixture(scope="module")
def healthy(build: Path, clips: np.ndarray) -> list[dict]:
    return compare_layers(build, clips, max_clips=16)


def test_healthy_model_every_layer_matched_with_high_sqnr(healthy: list[dict]) -> None:
    rows = healthy
    assert [r["layer"] for r in rows] == DS_CNN_S_LAYERS
    ops = {r["layer"]: r["op"] for r in rows}
    assert all(
        ops[f"blocks.{b}.0.0"] == "DEPTHWISE_CONV_2D" and ops[f"blocks.{b}.1.0"] == "CONV_2D"
        for b in range(S_BLOCKS)
    )
    assert ops["pool"] == "AVERAGE_POOL_2D" and ops["fc"] == "FULLY_CONNECTED"
    for r in rows:
        for key in (
            "sqnr_db",
            "rel_error",
            "cosine",
            "error_added",
            "sqnr_qat_float_db",
            "sqnr_fake_quant_db",
        ):
            assert np.isfinite(r[key]), (r["layer"], key)
        assert r["sqnr_db"] > 20, r
        assert r["cosine"] > 0.99, r
        assert r["trained_quantizer"] is True, r  # every tensor's grid was trained
        assert r["sqnr_fake_quant_db"] > 30, r  # INT8 reproduces the graph it was converted from
    assert sum(r["worst"] for r in rows) == 1
    json.dumps(rows, allow_nan=False)  # storable as-is next to parity.json


def _corrupt_weights(src: Path, dst: Path, layer_index: int) -> str:
    """Negate the int8 weights of the `layer_index`-th conv/FC op in a copy of `src`; return its op name."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(src))
    interp.allocate_tensors()
    weighted = [
        op
        for op in interp._get_ops_details()
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    ]
    op = weighted[layer_index]
    weights = interp.get_tensor(int(op["inputs"][1]))
    data = src.read_bytes()
    original = weights.astype(np.int8).tobytes()
    assert data.count(original) == 1  # the weight buffer, found by content
    negated = np.clip(-weights.astype(np.int16), -127, 127).astype(np.int8).tobytes()
    dst.write_bytes(data.replace(original, negated))
    return op["op_name"]


def test_corrupted_layer_is_named_worst(
    build: Path, clips: np.ndarray, healthy: list[dict], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(build, broken)
    # Weighted ops in order: stem, then (depthwise, pointwise) per block: index 4 is blocks.1.1's conv.
    assert _corrupt_weights(build / "model.tflite", broken / "model.tflite", 4) == "CONV_2D"
    rows = compare_layers(broken, clips, max_clips=16)
    worst = worst_layer(rows)
    assert worst is not None and worst["layer"] == "blocks.1.1.0"
    assert worst["cause"] == "conversion"  # the INT8 file no longer computes what was trained
    assert worst["sqnr_db"] < 10 and worst["sqnr_fake_quant_db"] < 10
    before = rows.index(worst)
    assert [r["sqnr_db"] for r in rows[:before]] == [r["sqnr_db"] for r in healthy[:before]]
    md = layers_md(rows)
    assert "Worst layer: `blocks.1.1.0` (CONV_2D)" in md and "| **blocks.1.1.0** |" in md
    assert "converter or kernel problem, or a damaged model file" in md


def test_every_mobilenet_activation_has_a_trained_quantizer(tmp_path: Path, clips: np.ndarray) -> None:
    """Regression: the residual ADD feeding the pool had no QAT quantizer, so the converter borrowed the
    post-pool scale and clipped ~10% of its values; the head conv before pooling gives it one."""
    rows = compare_layers(student_build(tmp_path / "build", "mobile"), clips, max_clips=8)
    assert [r["layer"] for r in rows if not r["trained_quantizer"]] == []
