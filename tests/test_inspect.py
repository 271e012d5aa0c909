"""`edgekd inspect` on models edgekd did not build: INT8-ness, op set, arena, MACs, latency, suggestions.

The models come from test_runners' fixture builder (a conv net quantized with PT2E through
litert-torch, not one of edgekd's students) plus a float net whose ops ESP32-S3's op set lacks.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import KwsModels, read_tflite, write_tflite
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema_fb

from edgekd.cli import main
from edgekd.config import load_config
from edgekd.report.compare import _fmt, compare
from edgekd.report.inspect_view import render_inspect
from edgekd.report.markdown import budget_lines
from edgekd.verify.inspect import OP_COSTS, inspect_model, resolver_call
from edgekd.verify.parity import parity_report
from edgekd.verify.tflite_info import describe, smallest_working_arena

ESP = load_config("esp32s3")


@functools.cache
def _odd_model(out: Path) -> Path:
    """A float net with TANH, LOGISTIC, CONCATENATION, MEAN and SOFTMAX: ops esp32s3 does not link."""
    import litert_torch
    import torch

    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(1, 4, 3, stride=2)
            self.b = torch.nn.Conv2d(1, 4, 3, stride=2)
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.unsqueeze(1)
            y = torch.cat([torch.tanh(self.a(x)), torch.sigmoid(self.b(x))], dim=1)
            return torch.softmax(self.fc(y.mean(dim=(2, 3))), dim=-1)

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "odd.tflite"
    litert_torch.convert(Odd().eval(), (torch.randn(1, 20, 10),)).export(str(path))
    return path


@pytest.fixture(scope="session")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _odd_model(tmp_path_factory.getbasetemp() / "odd_model")


def _check(record: dict, name: str) -> dict:
    return next(c for c in record["checks"] if c["name"] == name)


def test_third_party_int8_model(models: KwsModels) -> None:
    rec = inspect_model(models.int8, ESP)
    json.dumps(rec)  # JSON-serialisable as documented
    info = describe(models.int8)
    assert rec["fully_int8"] and rec["float_tensors"] == []
    assert rec["ops"]["counts"] == {"AVERAGE_POOL_2D": 1, "CONV_2D": 1, "DEPTHWISE_CONV_2D": 2,
                                    "FULLY_CONNECTED": 1, "MEAN": 1, "QUANTIZE": 1, "RESHAPE": 1}  # fmt: skip
    assert rec["ops"]["outside_target"] == ["MEAN"]
    assert rec["ops"]["esp_nn_accelerated"] == [
        "AVERAGE_POOL_2D",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
    ]
    assert rec["ops"]["reference_kernels"] == ["MEAN", "QUANTIZE", "RESHAPE"]
    assert {t["dtype"] for t in rec["tensors"]} == {"int8", "int32"}
    assert {t["kind"] for t in rec["tensors"]} == {"input", "output", "activation", "constant"}
    assert rec["model_bytes"] == rec["flash"]["total"] == models.int8.stat().st_size
    assert rec["macs"] == info.macs == 459_992
    # headline latency: the build's flat estimate; per-op model beside it, its MACs adding up to the total
    assert rec["latency"]["ms"] == pytest.approx(459_992 / (1.0 * 240 * 1e3))
    per_op = rec["latency"]["per_op_model"]
    assert sum(r["macs"] for r in per_op["ops"]) == rec["macs"]
    assert per_op["ms"] > rec["latency"]["ms"] and all(r["source"] for r in per_op["ops"])
    assert sum(r["share"] for r in per_op["ops"]) == pytest.approx(1.0, abs=1e-3)
    ops = _check(rec, "ops_supported")
    assert not ops["passed"] and ops["value"] == ["MEAN"]
    assert "AddMean()" in ops["suggestion"] and "AVERAGE_POOL_2D" in ops["suggestion"]
    assert not rec["passed"]
    text = render_inspect(rec)
    assert "ops outside esp32s3's op set: MEAN" in text and "result: FAIL: ops_supported" in text


@pytest.mark.parametrize("kind", ["int8", "float"])
def test_arena_is_within_5_percent_of_the_smallest_that_allocates(models: KwsModels, kind: str) -> None:
    path = getattr(models, kind)
    rec = inspect_model(path, ESP)
    arena = rec["arena"]["bytes"]
    smallest = smallest_working_arena(path, 1, 2 * arena)
    assert smallest <= arena <= 1.05 * smallest
    assert rec["arena"]["with_headroom"] == int(np.ceil(arena * 1.1))
    assert rec["budget"]["arena_bytes_with_headroom"] == rec["arena"]["with_headroom"]


def test_float_model_is_reported_as_not_int8(models: KwsModels) -> None:
    rec = inspect_model(models.float, ESP)
    assert not rec["fully_int8"]
    assert rec["inputs"][0]["dtype"] == "float32" and rec["inputs"][0]["name"] in rec["float_tensors"]
    assert rec["ops"]["esp_nn_accelerated"] == []  # ESP-NN only has int8 kernels
    gate = _check(rec, "fully_int8")
    assert not gate["passed"] and "full-integer quantization" in gate["suggestion"]
    assert "fully INT8: NO" in render_inspect(rec)


def _with_uint8_output(src: Path, dst: Path) -> None:
    """Append QUANTIZE int8 -> uint8 at the output, as microWakeWord's models end (uint8 probability)."""
    model = read_tflite(src)
    graph = model.subgraphs[0]
    old = graph.outputs[0]
    out = copy.deepcopy(graph.tensors[old])
    out.type, out.name = schema_fb.TensorType.UINT8, b"probability_uint8"
    out.quantization.zeroPoint = [z + 128 for z in out.quantization.zeroPoint]
    model.buffers.append(schema_fb.BufferT())
    out.buffer = len(model.buffers) - 1
    graph.tensors.append(out)
    quantize = schema_fb.OperatorT()
    quantize.opcodeIndex = next(
        i for i, c in enumerate(model.operatorCodes) if c.builtinCode == schema_fb.BuiltinOperator.QUANTIZE
    )
    quantize.inputs, quantize.outputs = [old], [len(graph.tensors) - 1]
    graph.operators.append(quantize)
    graph.outputs = [len(graph.tensors) - 1]
    for signature in model.signatureDefs or []:
        for tensor_map in signature.outputs:
            tensor_map.tensorIndex = graph.outputs[0]
    write_tflite(model, dst)


def test_a_uint8_output_is_integer_only_and_a_float_tensor_is_named(
    models: KwsModels, tmp_path: Path
) -> None:
    path = tmp_path / "uint8_out.tflite"
    _with_uint8_output(models.int8, path)
    rec = inspect_model(path, ESP)
    assert rec["outputs"][0]["dtype"] == "uint8"
    assert rec["fully_int8"] and rec["not_int8"] == [] and _check(rec, "fully_int8")["passed"]
    assert (
        "fully INT8: yes (integer-only; uint8 at the boundary: output probability_uint8)"
        in render_inspect(rec)
    )
    floats = inspect_model(models.float, ESP)
    name = floats["inputs"][0]["name"]
    assert f"{name} (float32)" in floats["not_int8"]
    assert f"{name} (float32)" in _check(floats, "fully_int8")["suggestion"]
    assert "tensors are not int8: " in render_inspect(floats)


def test_ops_outside_the_target_set_are_named(odd: Path) -> None:
    rec = inspect_model(odd, ESP)
    assert set(rec["ops"]["outside_target"]) == {"CONCATENATION", "LOGISTIC", "MEAN", "SOFTMAX", "TANH"}
    suggestion = _check(rec, "ops_supported")["suggestion"]
    for op in ("AddConcatenation()", "AddLogistic()", "AddSoftmax()", "AddTanh()"):
        assert op in suggestion
    assert "ops outside esp32s3's op set: CONCATENATION, LOGISTIC, MEAN, SOFTMAX, TANH" in render_inspect(rec)
    # With the target's op set lifted, only INT8-ness still fails.
    rec = inspect_model(odd, load_config("esp32s3", overrides=["budget.ops=null"]))
    assert [c["name"] for c in rec["checks"] if not c["passed"]] == ["fully_int8"]


def test_over_budget_suggestions_name_the_op_to_change(models: KwsModels) -> None:
    cfg = load_config(
        "esp32s3", overrides=["budget.arena_bytes=4096", "budget.model_bytes=1024", "budget.latency_ms=0.5"]
    )
    rec = inspect_model(models.int8, cfg)
    arena = _check(rec, "arena_bytes_with_headroom")
    peak = rec["arena"]["peak_op"]
    assert not arena["passed"] and f"peak is at op #{peak['index']} {peak['op']}" in arena["suggestion"]
    assert "stride 2 in the first conv" in arena["suggestion"] and "> 4.0 KB" in arena["suggestion"]
    model = _check(rec, "model_bytes")
    assert not model["passed"] and "heaviest op is #" in model["suggestion"]
    assert "drop_bias_scales" not in model["suggestion"]  # the target already drops them from its exports
    kept = inspect_model(
        models.int8,
        load_config("esp32s3", overrides=["budget.model_bytes=1024", "export.drop_bias_scales=false"]),
    )
    assert "--set export.drop_bias_scales=true (" in _check(kept, "model_bytes")["suggestion"]
    latency = _check(rec, "latency_ms")
    top = max(rec["latency"]["per_op_model"]["ops"], key=lambda r: r["cycles"])
    assert not latency["passed"] and f"#{top['index']} {top['op']}" in latency["suggestion"]


def test_figures_agree_with_the_build_budget_and_compare(models: KwsModels, tmp_path: Path) -> None:
    """The build's measure_budget, inspect and compare report the same figures for the same model."""
    from edgekd.verify.budget import measure_budget

    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(models.int8, export / "model.tflite")
    built = measure_budget(ESP, export)
    rec = inspect_model(export / "model.tflite", ESP)
    assert rec["budget"] == built.as_dict(ESP.budget.arena_headroom)
    y = np.arange(24) % len(ESP.classes)
    logits = np.eye(len(ESP.classes), dtype=np.float32)[y]
    runtimes = {n: logits for n in ("teacher_fp32", "student_fp32", "student_qat", "student_int8_tflm")}
    parity = parity_report(ESP, runtimes, y, built)
    # Build gates and inspect checks: same names, values, limits and verdicts.
    gates = {g["name"]: g for g in parity["gates"]}
    for c in rec["checks"]:
        assert {k: c[k] for k in ("value", "limit", "passed")} == {
            k: gates[c["name"]][k] for k in ("value", "limit", "passed")
        }
    # The rendered figures are the build report's own lines, and compare shows the same numbers.
    lines = budget_lines(parity)
    assert lines in render_inspect(rec)
    result = compare(parity, parity)
    for d in result.deltas:
        if d.section == "budget" and d.name in ("model_bytes", "arena_bytes", "arena_bytes_with_headroom"):
            assert _fmt(d.name, d.new).split(" (")[0] in lines
    assert f"{rec['macs']:,}" in lines and f"{rec['latency']['ms']:.2f} ms" in lines


def test_host_timed_target_keeps_the_build_arena_convention(models: KwsModels) -> None:
    """mobile runs LiteRT: the build reports no arena, nor does inspect's budget (it still measures one)."""
    rec = inspect_model(models.int8, load_config("mobile"), time_host=False)
    assert rec["budget"]["arena_bytes"] is None and rec["arena"]["bytes"] > 0
    assert rec["ops"]["esp_nn_accelerated"] is None and rec["latency"]["per_op_model"] is None
    assert rec["passed"]


def test_cost_table_and_resolver_names() -> None:
    assert resolver_call("CONV_2D") == "AddConv2D()"
    assert resolver_call("DEPTHWISE_CONV_2D") == "AddDepthwiseConv2D()"
    assert resolver_call("AVERAGE_POOL_2D") == "AddAveragePool2D()"
    assert OP_COSTS["CONV_2D"].factor == 1.0  # the baseline is the target's macs_per_cycle
    assert all(
        c.factor > 0 and c.unit in ("mac", "element", "window") and c.source for c in OP_COSTS.values()
    )


def test_cli_exit_codes_and_messages(
    models: KwsModels, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["inspect", str(tmp_path / "missing.tflite"), "--target", "esp32s3"]) == 2
    assert "missing.tflite: no such model file" in capsys.readouterr().err
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"this is not a flatbuffer" * 10)
    assert main(["inspect", str(junk), "--target", "esp32s3"]) == 2
    assert "junk.tflite: not a usable TFLite model" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path), "--target", "esp32s3"]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["inspect", str(models.int8), "--target", "nosuchtarget"]) == 2
    assert "unknown target 'nosuchtarget'" in capsys.readouterr().err

    out = tmp_path / "inspect.json"
    assert main(["inspect", str(models.int8), "--target", "esp32s3", "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "ops_supported" in text and "MEAN" in text
    assert json.loads(out.read_text())["schema"] == "edgekd.inspect/1"
    assert (
        main(["inspect", str(models.int8), "--target", "esp32s3", "--set", "budget.ops=null", "--tensors"])
        == 0
    )
    assert "result: PASS" in capsys.readouterr().out
