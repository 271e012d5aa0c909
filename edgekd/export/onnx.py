"""Export a converted QAT graph to an INT8 (QDQ) ONNX model with a dynamic batch.

Weights are stored as uint8 with their zero point moved by 128 — the same real values, so the same
trained grid as the TFLite model — because onnxruntime on x86 CPUs without VNNI (AVX2, AVX-512 without
VNNI) multiplies uint8 activations by *int8* weights with VPMADDUBSW, whose int16 sums of pairs saturate:
on real digits a ds_cnn S student's INT8 ONNX agreed with its fake-quant model on 90.3 % of clips, up to
1.5 logits apart, and on 99.3 % (0.14 apart, rounding) with uint8 weights, which take the exact U8U8
kernels (docs/DESIGN.md). ARM and VNNI machines run either form exactly.

The file must be self-contained (no external-data side file) and must load in onnxruntime, which
fuses the Q/DQ pairs into QLinearConv/QGemm; a file that fails either check is not written. The
exporter's per-node Python stack traces are dropped: they hold absolute paths of the machine that
built the model, so the same config and seed would give different bytes in another folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, NotImplemented

from edgekd.artifacts import atomic_path
from edgekd.errors import EdgekdError

INPUT_NAME, OUTPUT_NAME = "features", "logits"
STACK_TRACE = "pkg.torch.onnx.stack_trace"


def export_onnx(converted: torch.fx.GraphModule, example: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Export with the dynamo exporter (input `features`, output `logits`, float at both ends),
    check, and write atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.onnx.export(
            converted,
            (example,),
            str(tmp),
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
        )
        model = onnx.load(str(tmp))
        _drop_stack_traces(model)
        _unsigned_weights(model)
        onnx.save(model, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
            ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        except (onnx.checker.ValidationError, Fail, InvalidGraph, NotImplemented) as exc:
            raise EdgekdError(
                f"{path}: exported ONNX model does not check or load in onnxruntime: {exc}"
            ) from exc
    return path


def _drop_stack_traces(model: onnx.ModelProto) -> None:
    for graph_nodes in [model.graph.node, *(f.node for f in model.functions)]:
        for node in graph_nodes:
            kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
            del node.metadata_props[:]
            node.metadata_props.extend(kept)


def _unsigned_weights(model: onnx.ModelProto) -> None:
    """Every int8 weight initializer that a DequantizeLinear reads (with its zero point as an initializer)
    becomes uint8 with the zero point + 128: (q + 128) - (zp + 128) = q - zp, so the real values and the
    scales are unchanged, and onnxruntime fuses the pair into the same QLinearConv/QGemm with exact
    U8U8 arithmetic. Shared initializers get one twin each; the int8 originals go if nothing else
    reads them."""
    init = {i.name: i for i in model.graph.initializer}
    twins: dict[str, str] = {}

    def twin(name: str) -> str:
        if name not in twins:
            moved = numpy_helper.to_array(init[name]).astype(np.int16) + 128
            twins[name] = f"{name}_u8"
            model.graph.initializer.append(numpy_helper.from_array(moved.astype(np.uint8), twins[name]))
        return twins[name]

    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        weight, zero = init.get(node.input[0]), init.get(node.input[2])
        if weight is None or zero is None or weight.data_type != onnx.TensorProto.INT8:
            continue
        node.input[0], node.input[2] = twin(node.input[0]), twin(node.input[2])
    read = {name for node in model.graph.node for name in node.input}
    kept = [i for i in model.graph.initializer if i.name in read or i.name not in twins]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
