"""Export a converted QAT graph to an INT8 (QDQ) ONNX model with a dynamic batch.

The file must be self-contained (no external-data side file) and must load in onnxruntime, which
fuses the Q/DQ pairs into QLinearConv/QGemm; a file that fails either check is not written.
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
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
            ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        except (onnx.checker.ValidationError, Fail, InvalidGraph, NotImplemented) as exc:
            raise EdgekdError(
                f"{path}: exported ONNX model does not check or load in onnxruntime: {exc}"
            ) from exc
    return path
