"""Export a converted QAT graph to an INT8 (QDQ) ONNX model with a dynamic batch.

The file must be self-contained (no external-data side file) and must load in onnxruntime, which
fuses the Q/DQ pairs into QLinearConv/QGemm; a file that fails either check is not written. The
exporter's per-node Python stack traces are dropped: they hold absolute paths of the machine that
built the model, so the same config and seed would give different bytes in another folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
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
