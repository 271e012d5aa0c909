"""The exported flatbuffer: tensor names kept beside it, not in flash; buffers aligned; nothing else moved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _models import realistic_features
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from edgekd.errors import EdgekdError
from edgekd.export.flatbuffer import (
    BUFFER_ALIGN,
    builtin_code,
    drop_bias_quantization,
    names_path,
    pack_model,
    read_model,
    strip_names,
    tensor_names,
)
from edgekd.verify.layers import compare_layers


def _with_names(model: Path) -> bytes:
    """The model as the converter wrote it: every tensor named again from the kept names."""
    restored = read_model(model.read_bytes())
    for graph, names in zip(
        restored.subgraphs, json.loads(names_path(model).read_text())["subgraphs"], strict=True
    ):
        for t, name in zip(graph.tensors, names, strict=True):
            t.name = name.encode()
    return pack_model(restored)


_CONVS = (fb.BuiltinOperator.CONV_2D, fb.BuiltinOperator.DEPTHWISE_CONV_2D)


def _biases(model: fb.ModelT) -> dict[int, tuple[int, int, int]]:
    """Every conv, depthwise and fully-connected op's bias tensor -> (op code, input, weight tensor)."""
    graph, found = model.subgraphs[0], {}
    for op in graph.operators:
        code = builtin_code(model.operatorCodes[op.opcodeIndex])
        if code in (*_CONVS, fb.BuiltinOperator.FULLY_CONNECTED):
            found[int(op.inputs[2])] = (code, int(op.inputs[0]), int(op.inputs[1]))
    return found


def _with_bias_scales(content: bytes) -> bytes:
    """The model with its conv biases' scales written back as the converter writes them: input scale x
    each channel's weight scale, zero point 0."""
    model = read_model(content)
    tensors = model.subgraphs[0].tensors
    for bias, (code, inp, weight) in _biases(model).items():
        if code in _CONVS:
            q = fb.QuantizationParametersT()
            q.scale = [tensors[inp].quantization.scale[0] * s for s in tensors[weight].quantization.scale]
            q.zeroPoint, q.quantizedDimension = [0] * len(q.scale), 0
            tensors[bias].quantization = q
    return pack_model(model)


def _outputs(content: bytes, x: np.ndarray) -> np.ndarray:
    """Reference kernels (TFLite Micro's arithmetic), one clip per invoke."""
    it = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zp = inp["quantization"]
    rows = []
    for clip in x:
        q = np.clip(np.round(clip / scale) + zp, -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], q[None])
        it.invoke()
        rows.append(it.get_tensor(out["index"]).copy())
    return np.concatenate(rows)


def test_exported_model_names_only_its_input_and_output(esp32s3_student: Path) -> None:
    model = esp32s3_student / "model.tflite"
    graph = read_model(model.read_bytes()).subgraphs[0]
    named = {i for i, t in enumerate(graph.tensors) if t.name}
    assert named == {int(graph.inputs[0]), int(graph.outputs[0])}
    kept = tensor_names(model)  # from model.names.json
    assert len(kept) == len(graph.tensors)
    # the intermediate names carry litert-torch's module hierarchy, which the per-layer comparison reads
    assert sum("edgekd.models.students.Student/" in n for n in kept) >= 10


def test_every_constant_buffer_is_16_byte_aligned(esp32s3_student: Path) -> None:
    content = (esp32s3_student / "model.tflite").read_bytes()
    model = fb.Model.GetRootAsModel(content, 0)
    starts = []
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            starts.append(buffer._tab.Vector(buffer._tab.Offset(4)))  # where Buffer.data's bytes begin
    assert len(starts) >= 10 and [s % BUFFER_ALIGN for s in starts] == [0] * len(starts)


def test_stripping_moves_only_the_names(esp32s3_student: Path) -> None:
    model = esp32s3_student / "model.tflite"
    named = _with_names(model)
    name_bytes = sum(len(n) for n in tensor_names(model))
    assert len(named) - model.stat().st_size >= 0.9 * name_bytes > 5000  # the names were a fifth of the file
    stripped, names = strip_names(named)
    stripped, _ = drop_bias_quantization(stripped)  # as the esp32s3 target exports
    assert stripped == model.read_bytes()  # deterministic: the same bytes every export
    assert names == json.loads(names_path(model).read_text())["subgraphs"]
    x = realistic_features(12, seed=31).numpy()
    np.testing.assert_array_equal(_outputs(named, x), _outputs(stripped, x))


def test_tflite_micro_model_keeps_no_conv_bias_scales_and_computes_the_same(
    esp32s3_student: Path, tmp_path: Path
) -> None:
    """The esp32s3 export drops the conv and depthwise biases' scales (12 bytes a channel) and keeps the
    fully-connected one, which LiteRT checks; TFLite Micro and LiteRT's reference kernels give the same
    outputs bit for bit with and without them."""
    from edgekd.verify.runners import TFLMRunner

    shipped = (esp32s3_student / "model.tflite").read_bytes()
    model = read_model(shipped)
    tensors, biases = model.subgraphs[0].tensors, _biases(model)
    convs = [b for b, (code, _, _) in biases.items() if code in _CONVS]
    assert len(convs) >= 10 and all(tensors[b].quantization is None for b in convs)
    assert all(tensors[b].quantization.scale is not None for b in set(biases) - set(convs))
    full = _with_bias_scales(shipped)
    restored = read_model(full).subgraphs[0].tensors
    channels = sum(len(restored[b].quantization.scale) for b in convs)
    assert len(full) - len(shipped) >= 12 * channels > 6000
    again, dropped = drop_bias_quantization(full)
    assert dropped == channels and len(again) == len(shipped)
    x = realistic_features(12, seed=33).numpy()
    np.testing.assert_array_equal(_outputs(full, x), _outputs(shipped, x))
    (tmp_path / "full.tflite").write_bytes(full)
    np.testing.assert_array_equal(
        TFLMRunner(tmp_path / "full.tflite").predict(x),
        TFLMRunner(esp32s3_student / "model.tflite").predict(x),
    )


def test_per_layer_comparison_reads_names_inside_or_beside_the_model(
    esp32s3_student: Path, tmp_path: Path
) -> None:
    """A build exported before names were stripped has them in the model and no names file."""
    old = tmp_path / "old"
    shutil.copytree(esp32s3_student, old)
    (old / "model.tflite").write_bytes(_with_names(old / "model.tflite"))
    names_path(old / "model.tflite").unlink()
    x = realistic_features(4, seed=32).numpy()
    new_rows, old_rows = compare_layers(esp32s3_student, x, max_clips=4), compare_layers(old, x, max_clips=4)
    assert len(new_rows) >= 10
    assert [(r["layer"], r["sqnr_db"]) for r in new_rows] == [(r["layer"], r["sqnr_db"]) for r in old_rows]


def test_names_that_do_not_fit_the_model_are_refused_with_the_file_named(
    esp32s3_student: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model.tflite"
    shutil.copy(esp32s3_student / "model.tflite", model)
    names = json.loads(names_path(esp32s3_student / "model.tflite").read_text())
    names["subgraphs"][0] = names["subgraphs"][0][:-1]  # one short: the names of another model
    names_path(model).write_text(json.dumps(names))
    with pytest.raises(EdgekdError, match=r"model\.names\.json: not the tensor names of model\.tflite"):
        tensor_names(model)
    names_path(model).write_text("{")
    with pytest.raises(EdgekdError, match="export the model again"):
        tensor_names(model)
