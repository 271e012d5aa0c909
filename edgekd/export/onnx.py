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

from edgekd.artifacts import atomic_path
from edgekd.errors import EdgekdError


def export_onnx(
    converted: torch.fx.GraphModule, example: torch.Tensor, path: str | os.PathLike[str]
) -> Path:
    """Export with the dynamo exporter, check, and write atomically."""
    path = Path(path)
    batch = torch.export.Dim("batch", min=1)
    with atomic_path(path) as tmp:
        program = torch.onnx.export(
            converted,
            (example,),
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: batch},),
            input_names=["features"],
            output_names=["logits"],
            verbose=False,
        )
        program.save(str(tmp), external_data=False)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
            ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        except (onnx.checker.ValidationError, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
            raise EdgekdError(f"{path}: exported ONNX model is invalid: {exc}") from exc
    return path
