"""Runners agree as the device semantics say: TFLM ~ LiteRT(reference) to the last step, floats to 1e-4."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema_fb

from edgekd.errors import EdgekdError
from edgekd.verify.runners import (
    LiteRTRunner,
    OrtRunner,
    TFLMRunner,
    dequantize,
    quantize_input,
)
from edgekd.verify.tflite_info import describe

T, F, CLASSES = 98, 40, 12


@dataclass(frozen=True)
class KwsModels:
    """A tiny conv KWS net and its exports; `net` maps float32 [N, T, F] to logits [N, 12]."""

    net: object
    int8: Path
    float: Path
    float_4d: Path  # float model whose input is [1, T, F, 1]
    dynamic_batch: Path  # float model with input shape signature [-1, T, F]
    onnx: Path  # float ONNX with a dynamic batch dimension


def features(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, T, F)).astype(np.float32)


@functools.cache
def build_models(out: Path) -> KwsModels:
    """Convert the fixture net once per session (~5 s): float/INT8 TFLite via litert-torch, ONNX."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    class Net(torch.nn.Module):
        """conv (10x4, stride 2) -> depthwise 3x3 -> pointwise -> avg-pool (9x1) -> global mean -> linear."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, (10, 4), stride=2)
            self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.pw = torch.nn.Conv2d(8, 16, 1)
            self.pool = torch.nn.AvgPool2d((9, 1))
            self.mean = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(16, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.conv(x.unsqueeze(1)))
            x = torch.relu(self.pw(torch.relu(self.dw(x))))
            return self.fc(self.mean(self.pool(x)).flatten(1))

    class Channels(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x[..., 0])

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = Net().eval()
    example = (torch.from_numpy(features(1, 0)),)
    paths = {name: out / f"{name}.tflite" for name in ("int8", "float", "float_4d", "dynamic_batch")}
    litert_torch.convert(net, example).export(str(paths["float"]))
    litert_torch.convert(Channels(net).eval(), (example[0][..., None],)).export(str(paths["float_4d"]))
    _with_dynamic_batch(paths["float"], paths["dynamic_batch"])

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(net, example).module(), quantizer)
    for clip in features(16, seed=1):  # the export is batch 1
        prepared(torch.from_numpy(clip[None]))
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
        str(paths["int8"])
    )

    onnx_path = out / "float.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(
        net,
        (torch.from_numpy(features(2, 0)),),
        str(onnx_path),
        dynamo=True,
        external_data=False,
        dynamic_shapes=({0: batch},),
    )
    return KwsModels(net=net, onnx=onnx_path, **paths)


def _with_dynamic_batch(src: Path, dst: Path) -> None:
    """Mark the input batch dynamic (-1) and make the leading RESHAPE infer it.

    litert-torch 0.10 fails to convert this net with a dynamic batch, so the flatbuffer is edited.
    """
    model = schema_fb.ModelT.InitFromObj(schema_fb.Model.GetRootAsModel(src.read_bytes(), 0))
    graph = model.subgraphs[0]
    new_shape = graph.tensors[graph.operators[0].inputs[1]]
    model.buffers[new_shape.buffer].data = np.array([-1, T, F, 1], np.int32).view(np.uint8)
    graph.tensors[graph.inputs[0]].shapeSignature = np.array([-1, T, F], np.int32)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(builder.Output())


def torch_logits(net: object, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> KwsModels:
    return build_models(tmp_path_factory.getbasetemp() / "kws_models")


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
