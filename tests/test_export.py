"""One trained QAT graph -> INT8 TFLite + INT8 ONNX that deploy the trained grid and agree with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _models import TinyDsCnn, realistic_features, train_steps
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from edgekd.errors import EdgekdError
from edgekd.export.onnx import STACK_TRACE, export_onnx
from edgekd.export.tflite import deployed_weight_scales, export_tflite
from edgekd.train.qat import (
    QatArtifacts,
    convert_qat,
    copy_prepared,
    freeze_observers,
    prepare_qat,
    trained_weight_scales,
)

# Every op the int8 DS-CNN may lower to; a float island would add QUANTIZE/DEQUANTIZE (or a float op).
INT8_OPS = {"RESHAPE", "CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "AVERAGE_POOL_2D", "FULLY_CONNECTED"}


@dataclasses.dataclass
class Pipeline:
    prepared: torch.fx.GraphModule
    state_before_convert: dict[str, torch.Tensor]
    code_before_convert: str
    artifacts: QatArtifacts
    tflite: Path
    onnx: Path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    torch.manual_seed(0)
    prepared = prepare_qat(TinyDsCnn(), realistic_features(2, seed=0))
    train_steps(prepared, steps=60, seed=1)
    state = {k: v.clone() for k, v in prepared.state_dict().items()}
    code = prepared.code
    artifacts = convert_qat(prepared)
    out = tmp_path_factory.mktemp("export")
    tflite = export_tflite(artifacts.for_tflite, realistic_features(1, seed=0), out / "kws.tflite")
    onnx_path = export_onnx(artifacts.for_onnx, realistic_features(2, seed=0), out / "kws.onnx")
    return Pipeline(prepared, state, code, artifacts, tflite, onnx_path)


def _reference_interpreter(path: Path) -> Interpreter:
    """The reference kernels, which match TFLite Micro bit for bit (XNNPACK does not)."""
    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    return interpreter


def test_convert_leaves_prepared_graph_untouched(pipeline: Pipeline) -> None:
    assert pipeline.prepared.code == pipeline.code_before_convert
    state = pipeline.prepared.state_dict()
    assert state.keys() == pipeline.state_before_convert.keys()
    assert all(torch.equal(v, pipeline.state_before_convert[k]) for k, v in state.items())


def test_tflite_is_int8_end_to_end(pipeline: Pipeline) -> None:
    interpreter = _reference_interpreter(pipeline.tflite)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert set(ops) <= INT8_OPS, f"float islands or unexpected ops: {ops}"
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(ops)


def test_deployed_weight_scales_are_the_trained_ones(pipeline: Pipeline) -> None:
    trained = trained_weight_scales(pipeline.prepared)
    deployed = deployed_weight_scales(pipeline.tflite)
    assert len(trained) == len(deployed) == 4
    for i, (t, d) in enumerate(zip(trained, deployed, strict=True)):
        assert t.shape == d.shape, f"weight {i}"
        np.testing.assert_allclose(
            d, t, rtol=1e-6, err_msg=f"weight {i}: deployed grid is not the trained one"
        )


def test_onnx_is_valid_int8_with_dynamic_batch(pipeline: Pipeline) -> None:
    model = onnx.load(str(pipeline.onnx))
    onnx.checker.check_model(model, full_check=True)
    # no stack traces: their absolute paths would make the bytes depend on where edgekd is installed
    assert not [p for n in model.graph.node for p in n.metadata_props if p.key == STACK_TRACE]
    assert b"students.py" not in pipeline.onnx.read_bytes()
    # weights as uint8 around zero point 128 (x86's int8 kernels saturate: see the next test)
    weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.UINT8 and i.dims]
    assert len(weights) >= 4
    assert not [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and i.dims]
    session = ort.InferenceSession(str(pipeline.onnx), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"features": realistic_features(3, seed=9).numpy()})
    assert logits.shape == (3, 12) and np.isfinite(logits).all()


def test_fake_quant_torch_tflite_and_onnx_agree(pipeline: Pipeline) -> None:
    x = realistic_features(64, seed=123)
    reference = copy_prepared(pipeline.prepared)
    freeze_observers(reference)  # otherwise evaluating moves the scales away from the exported ones
    reference.eval()
    with torch.no_grad():
        torch_top = reference(x).argmax(dim=1).numpy()

    interpreter = _reference_interpreter(pipeline.tflite)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    tflite_logits = []
    for sample in x.numpy():
        q = np.clip(np.round(sample / in_scale) + in_zero, -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], q[None])
        interpreter.invoke()
        tflite_logits.append(
            (interpreter.get_tensor(out["index"])[0].astype(np.float32) - out_zero) * out_scale
        )
    tflite_top = np.argmax(tflite_logits, axis=1)

    session = ort.InferenceSession(str(pipeline.onnx), providers=["CPUExecutionProvider"])
    onnx_top = session.run(None, {"features": x.numpy()})[0].argmax(axis=1)

    assert len(set(torch_top)) >= 3, "predictions barely vary: agreement would be trivial"
    assert np.mean(torch_top == tflite_top) >= 0.95
    assert np.mean(torch_top == onnx_top) >= 0.95


def test_onnxruntime_int8_kernels_compute_what_the_file_says(pipeline: Pipeline) -> None:
    """onnxruntime's fused int8 kernels (its default optimisation) against the same file evaluated op by
    op in float (no optimisation: exactly the QDQ semantics) on loud inputs: within two output steps. On
    x86 without VNNI, int8 weights went through VPMADDUBSW, whose int16 pair sums saturate: logits moved
    by many steps and a tenth of real clips changed class (docs/DESIGN.md)."""
    x = np.clip(realistic_features(64, seed=5).numpy() * 1.5, 0.0, 26.0)  # loud: large input codes

    def run(level: ort.GraphOptimizationLevel) -> np.ndarray:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(pipeline.onnx), options, providers=["CPUExecutionProvider"])
        return session.run(None, {"features": x})[0]

    fused = run(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    exact = run(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    step = _reference_interpreter(pipeline.tflite).get_output_details()[0]["quantization"][0]
    assert np.abs(fused - exact).max() <= 2 * step + 1e-6


class _TanhHead(torch.nn.Module):
    """tanh is not quantized by the int8 route, so the output stays float."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(40, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x))


def test_float_boundary_is_refused_and_not_written(tmp_path: Path) -> None:
    torch.manual_seed(0)
    example = realistic_features(2, seed=0)
    prepared = prepare_qat(_TanhHead(), example)
    prepared(example)
    target = tmp_path / "float.tflite"
    with pytest.raises(EdgekdError, match="output tensor .* is float32, not int8"):
        export_tflite(convert_qat(prepared).for_tflite, example[:1], target)
    assert list(tmp_path.iterdir()) == []
