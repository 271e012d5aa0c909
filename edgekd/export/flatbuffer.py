"""Write TFLite flatbuffers the way devices read them, and keep what they never read out of flash.

Packing and names are shared by both exporters (the converter's model and the hand-built streaming one);
the bias scales are the converter's:

- **Packing with aligned buffers.** TFLite's schema asks for every constant buffer to start on a 16-byte
  boundary (`data:[ubyte] (force_align: 16)`): TFLite Micro reads int32 biases and int8 weights through
  plain pointers into the flatbuffer, and SIMD kernels (ESP-NN on the ESP32-S3) load weights in 16-byte
  words. flatbuffers' Python object API ignores `force_align` and packs byte vectors 4-byte aligned, so
  `pack_model` writes the buffers itself.
- **Stripping tensor names.** litert-torch names every tensor after the chain of PyTorch modules it came
  from: ~10.6 KB of a 48.9 KB DS-CNN S flatbuffer (22 %), flash the device never reads. `strip_names`
  drops them, keeping the graph's input and output names, and returns them so the build can keep them
  beside the model (`names_path`) for the per-layer comparison, which matches layers by those names.
- **Dropping bias scales the kernels never read** (TFLite Micro targets only). An int8 conv's int32 bias
  is on the scale input scale x weight scale by construction, and TFLite Micro's conv and depthwise
  kernels (ESP-NN's too) derive their requantization from the input, weight and output scales alone; the
  converter still writes a scale and an int64 zero point for every bias channel: 9.5 of a six-block DS-CNN
  S's 56.2 KB. `drop_bias_quantization` removes them from CONV_2D and DEPTHWISE_CONV_2D biases (outputs
  bit for bit the same on TFLite Micro and LiteRT's reference kernels). Not for phones: LiteRT's XNNPACK
  delegate declines a conv whose bias has no scale and runs it on the slower builtin kernels.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from edgekd.errors import EdgekdError

BUFFER_ALIGN = 16  # the schema's force_align on Buffer.data


class _AlignedBuffer(fb.BufferT):
    """A BufferT whose data vector starts on a BUFFER_ALIGN boundary of the finished file."""

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 (the object API's name)
        data = None
        if self.data is not None and len(self.data):
            raw = np.asarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(raw), BUFFER_ALIGN)
            builder.head = builder.head - len(raw)
            builder.Bytes[builder.head : builder.head + len(raw)] = raw
            data = builder.EndVector()  # StartVector recorded the length
        fb.BufferStart(builder)
        if data is not None:
            fb.BufferAddData(builder, data)
        fb.BufferAddOffset(builder, self.offset)
        fb.BufferAddSize(builder, self.size)
        return fb.BufferEnd(builder)


def pack_model(model: fb.ModelT) -> bytes:
    """The finished `.tflite` bytes of `model` (left as it is), every constant buffer 16-byte aligned."""
    packed = copy.copy(model)
    packed.buffers = []
    for buffer in model.buffers or []:
        aligned = _AlignedBuffer()
        aligned.data, aligned.offset, aligned.size = buffer.data, buffer.offset, buffer.size
        packed.buffers.append(aligned)
    builder = flatbuffers.Builder(0)
    builder.Finish(packed.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_model(content: bytes) -> fb.ModelT:
    """A `.tflite` file's contents as the schema's object tree, to edit and `pack_model` again."""
    return fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(content, 0))


def strip_names(content: bytes) -> tuple[bytes, list[list[str]]]:
    """`content` without its tensor names (a subgraph's inputs and outputs keep theirs), and every
    subgraph's names by tensor index as they were."""
    model = read_model(content)
    names = []
    for graph in model.subgraphs or []:
        tensors = graph.tensors or []
        names.append([(t.name or b"").decode() for t in tensors])
        # (numpy arrays: `or []` would drop an input at index 0)
        boundary = {int(i) for ends in (graph.inputs, graph.outputs) if ends is not None for i in ends}
        for i, t in enumerate(tensors):
            if i not in boundary:
                t.name = b""
    return pack_model(model), names


def builtin_code(code: fb.OperatorCodeT) -> int:
    """An operator code's BuiltinOperator: the schema keeps codes below 127 in `deprecatedBuiltinCode`
    too, and the larger of the two fields is the op."""
    return max(code.builtinCode, code.deprecatedBuiltinCode)


# Ops whose requantization TFLite Micro derives from input, weight and output scales, never the bias's.
_BIAS_SCALE_IMPLIED = frozenset({fb.BuiltinOperator.CONV_2D, fb.BuiltinOperator.DEPTHWISE_CONV_2D})


def drop_bias_quantization(content: bytes) -> tuple[bytes, int]:
    """`content` without the quantization parameters of its CONV_2D and DEPTHWISE_CONV_2D biases, and
    how many bias channels lost theirs. FULLY_CONNECTED keeps its bias scale: LiteRT checks it there."""
    model = read_model(content)
    dropped = 0
    for graph in model.subgraphs or []:
        for op in graph.operators or []:
            if builtin_code(model.operatorCodes[op.opcodeIndex]) not in _BIAS_SCALE_IMPLIED:
                continue
            if op.inputs is None or len(op.inputs) < 3 or op.inputs[2] < 0:
                continue  # no bias
            bias = graph.tensors[op.inputs[2]]
            if bias.type == fb.TensorType.INT32 and bias.quantization and bias.quantization.scale is not None:
                dropped += len(bias.quantization.scale)
                bias.quantization = None
    return pack_model(model), dropped


def names_path(model: Path) -> Path:
    """Where a stripped model's tensor names are kept: `model.names.json` beside `model.tflite`."""
    return model.with_name(f"{model.stem}.names.json")


def tensor_names(model: Path) -> list[str]:
    """The main subgraph's tensor names by index: from `names_path` when export kept them there, else
    from the model itself (a model exported before names were stripped, or a third-party one)."""
    graph = fb.Model.GetRootAsModel(model.read_bytes(), 0).Subgraphs(0)
    inline = [(graph.Tensors(i).Name() or b"").decode() for i in range(graph.TensorsLength())]
    kept = names_path(model)
    if not kept.is_file():
        return inline
    try:
        names = json.loads(kept.read_text())["subgraphs"][0]
        if not (
            isinstance(names, list) and len(names) == len(inline) and all(isinstance(n, str) for n in names)
        ):
            raise ValueError(f"expected {len(inline)} tensor names")
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise EdgekdError(
            f"{kept}: not the tensor names of {model.name} ({e}); export the model again (`edgekd build`), "
            f"or delete {kept.name} if {model.name} still carries its names"
        ) from e
    return names
