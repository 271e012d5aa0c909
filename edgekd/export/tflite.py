"""Export a converted QAT graph to a fully INT8 TFLite flatbuffer.

Microcontroller targets run int8 kernels only, so a model whose input or output stayed float would
need a float QUANTIZE/DEQUANTIZE at its boundary that the device may not have: such a model is
refused rather than written. The converter's tensor names are moved out of the flatbuffer into
`model.names.json` beside it (`edgekd.export.flatbuffer`): a fifth of the flash, never read on a device;
for TFLite Micro the conv biases' scales go too (`drop_bias_scales`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgekd.artifacts import atomic_path, write_json
from edgekd.errors import EdgekdError
from edgekd.export.flatbuffer import drop_bias_quantization, names_path, strip_names

if TYPE_CHECKING:
    from ai_edge_litert.interpreter import Interpreter

# Ops whose second input is a per-channel quantized weight.
_WEIGHTED_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"})


def export_tflite(
    converted: torch.fx.GraphModule,
    example: torch.Tensor,
    path: str | os.PathLike[str],
    drop_bias_scales: bool = False,
) -> Path:
    """Convert with litert-torch and write atomically, tensor names kept in `names_path(path)`; the
    model's input shape is `example`'s (use a batch of 1 for devices). `drop_bias_scales`: for TFLite
    Micro only (`drop_bias_quantization`). Raises EdgekdError if a boundary tensor is not int8."""
    import litert_torch  # ~10 s and ~0.5 GB: only paid by callers that export
    from litert_torch.quantize.quant_config import QuantConfig

    from edgekd.train.qat import make_quantizer

    # The quantizer only tells the converter to lower Q/DQ pairs statically; scales come from the graph.
    model = litert_torch.convert(
        converted, (example,), quant_config=QuantConfig(pt2e_quantizer=make_quantizer())
    )
    path = Path(path)
    content, names = strip_names(model.model_content())
    if drop_bias_scales:
        content, _ = drop_bias_quantization(content)
    with atomic_path(path) as tmp:
        tmp.write_bytes(content)
        _check_int8_boundaries(tmp, shown_as=path)
        write_json(names_path(path), {"subgraphs": names})
    return path


def _interpreter(path: str | os.PathLike[str]) -> Interpreter:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path))


def _check_int8_boundaries(path: Path, shown_as: Path) -> None:
    interpreter = _interpreter(path)
    for kind, details in (
        ("input", interpreter.get_input_details()),
        ("output", interpreter.get_output_details()),
    ):
        for tensor in details:
            if tensor["dtype"] != np.int8:
                raise EdgekdError(
                    f"{shown_as}: {kind} tensor {tensor['name']!r} is {np.dtype(tensor['dtype']).name}, "
                    "not int8; the model must be quantized end to end (use ReLU-family activations "
                    "and average pooling, which the int8 route supports)"
                )


def deployed_weight_scales(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """Per-channel scales of conv/fully-connected weights in execution order, to compare with the
    scales the model was trained with."""
    interpreter = _interpreter(path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    scales = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in _WEIGHTED_OPS:
            weight = tensors[int(op["inputs"][1])]
            scales.append(np.asarray(weight["quantization_parameters"]["scales"], dtype=np.float64))
    return scales
