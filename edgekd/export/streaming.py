"""Write the streaming student's two int8 TFLite forms from one set of quantized parameters.

`edgekd.models.streaming.StreamingStudent` (quantization-aware, observers frozen) holds everything:
per-channel int8 weights, int32 biases at scale s_in * s_w, and each activation's scale and zero point.
This module writes them as TFLite flatbuffers with only the ops ESPHome's micro_wake_word registers:

- **step form** (`write_step_model`): input int8 ``[1, stride, 40]`` (ESPHome's feature mapping), output
  uint8 ``[1, 1]``; every layer with context reads its state (VAR_HANDLE, READ_VARIABLE), concatenates
  the new frames (CONCATENATION), convolves without padding, and stores the newest frames back
  (STRIDED_SLICE, ASSIGN_VARIABLE); a CALL_ONCE subgraph sets every state to its zero point.
- **clip form** (`write_clip_model`): input int8 ``[1, T, 40]``, output uint8 ``[1, T // stride]``; the
  same layers left-padded with their zero point (PAD), so output n equals the step form's n-th invoke
  bit for bit: a state that starts at the zero point is exactly that padding.

Why not litert-torch: the graph's layout (NHWC time-major convolutions), its resource variables, a
fixed input scale and a uint8 output are the contract itself, and the PT2E route decides none of them.
The op set is small and TFLite Micro checks the result (tests/test_streaming_student.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from edgekd.artifacts import write_bytes
from edgekd.export.flatbuffer import pack_model
from edgekd.models.streaming import ActQuant, CausalConv, StreamingStudent, weight_scales

LOGISTIC_OUT = (1 / 256, -128)  # TFLite's fixed int8 sigmoid output
PROB_OUT = (1 / 256, 0)  # the uint8 probability ESPHome reads
_DTYPES = {"int8": fb.TensorType.INT8, "int32": fb.TensorType.INT32, "uint8": fb.TensorType.UINT8}


@dataclass(frozen=True)
class QLayer:
    """One convolution in integers: what both forms are written from."""

    kind: str  # "conv" or "depthwise"
    weight: np.ndarray  # int8, TFLite layout: conv [O, K, 1, I], depthwise [1, K, 1, O]
    weight_scales: np.ndarray
    bias: np.ndarray  # int32 [O]
    stride: int
    dilation: int
    state_frames: int
    relu: bool
    inp: tuple[float, int]
    out: tuple[float, int]


def _qlayer(conv: CausalConv, inp: tuple[float, int], out: ActQuant, relu: bool) -> QLayer:
    c = conv.conv
    w = c.weight.detach().double()
    s_w = weight_scales(c.weight).double()
    q = (w / s_w.view(-1, 1, 1)).round().clamp(-127, 127)  # [O, I/groups, K], as weight fake-quant
    depthwise = c.groups > 1
    layout = q.permute(1, 2, 0)[:, :, None, :] if depthwise else q.permute(0, 2, 1)[:, :, None, :]
    bias = c.bias.detach().double() / (inp[0] * s_w)
    return QLayer(
        kind="depthwise" if depthwise else "conv",
        weight=layout.numpy().astype(np.int8),
        weight_scales=s_w.numpy(),
        bias=np.round(bias.numpy()).astype(np.int32),
        stride=c.stride[0],
        dilation=c.dilation[0],
        state_frames=conv.state_frames,
        relu=relu,
        inp=inp,
        out=out.qparams(),
    )


def quantized_layers(model: StreamingStudent) -> list[QLayer]:
    """The student's convolutions in execution order, with the int8 parameters both forms share."""
    layers = []
    inp = model.input_q.qparams()
    plan = [(model.first, model.first_q, True)]
    for dw, dw_q, pw, pw_q in zip(
        model.depthwise, model.depthwise_q, model.pointwise, model.pointwise_q, strict=True
    ):
        plan += [(dw, dw_q, False), (pw, pw_q, True)]
    plan.append((model.head, model.logit_q, False))
    for conv, out, relu in plan:
        layers.append(_qlayer(conv, inp, out, relu))
        inp = out.qparams()
    return layers


class _Builder:
    """A TFLite model under construction: buffers, op codes and one subgraph at a time."""

    def __init__(self) -> None:
        self.model = fb.ModelT()
        self.model.version = 3
        self.model.description = b"edgekd streaming student"
        self.model.buffers = [fb.BufferT()]  # buffer 0: empty, for every activation
        self.model.operatorCodes = []
        self.model.subgraphs = []
        self._codes: dict[int, int] = {}

    def subgraph(self, name: str) -> _Subgraph:
        sg = _Subgraph(self, name)
        self.model.subgraphs.append(sg.sg)
        return sg

    def code(self, op: int, version: int) -> int:
        if op not in self._codes:
            c = fb.OperatorCodeT()
            c.builtinCode = op
            c.deprecatedBuiltinCode = min(op, fb.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            c.version = version
            self._codes[op] = len(self.model.operatorCodes)
            self.model.operatorCodes.append(c)
        return self._codes[op]

    def buffer(self, data: np.ndarray) -> int:
        b = fb.BufferT()
        b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
        self.model.buffers.append(b)
        return len(self.model.buffers) - 1

    def write(self, path: Path) -> Path:
        return write_bytes(path, pack_model(self.model))


_OPTIONS = {
    fb.BuiltinOperator.CONV_2D: (fb.BuiltinOptions.Conv2DOptions, fb.Conv2DOptionsT, 3),
    fb.BuiltinOperator.DEPTHWISE_CONV_2D: (
        fb.BuiltinOptions.DepthwiseConv2DOptions,
        fb.DepthwiseConv2DOptionsT,
        3,
    ),
    fb.BuiltinOperator.PAD: (fb.BuiltinOptions.PadOptions, fb.PadOptionsT, 2),
    fb.BuiltinOperator.RESHAPE: (fb.BuiltinOptions.ReshapeOptions, fb.ReshapeOptionsT, 1),
    fb.BuiltinOperator.CONCATENATION: (fb.BuiltinOptions.ConcatenationOptions, fb.ConcatenationOptionsT, 2),
    fb.BuiltinOperator.STRIDED_SLICE: (fb.BuiltinOptions.StridedSliceOptions, fb.StridedSliceOptionsT, 2),
    fb.BuiltinOperator.VAR_HANDLE: (fb.BuiltinOptions.VarHandleOptions, fb.VarHandleOptionsT, 1),
    fb.BuiltinOperator.READ_VARIABLE: (fb.BuiltinOptions.ReadVariableOptions, fb.ReadVariableOptionsT, 1),
    fb.BuiltinOperator.ASSIGN_VARIABLE: (
        fb.BuiltinOptions.AssignVariableOptions,
        fb.AssignVariableOptionsT,
        1,
    ),
    fb.BuiltinOperator.CALL_ONCE: (fb.BuiltinOptions.CallOnceOptions, fb.CallOnceOptionsT, 1),
    fb.BuiltinOperator.LOGISTIC: (fb.BuiltinOptions.NONE, None, 2),
    fb.BuiltinOperator.QUANTIZE: (fb.BuiltinOptions.QuantizeOptions, fb.QuantizeOptionsT, 1),
}


class _Subgraph:
    def __init__(self, builder: _Builder, name: str) -> None:
        self.b = builder
        self.sg = fb.SubGraphT()
        self.sg.name = name.encode()
        self.sg.tensors, self.sg.operators, self.sg.inputs, self.sg.outputs = [], [], [], []

    def tensor(
        self,
        name: str,
        shape: list[int],
        dtype: str,
        q: tuple[np.ndarray | float, np.ndarray | int] | None = None,
        data: np.ndarray | None = None,
        axis: int = 0,
    ) -> int:
        t = fb.TensorT()
        t.name = name.encode()
        t.shape = np.array(shape, dtype=np.int32)
        t.type = fb.TensorType.RESOURCE if dtype == "resource" else _DTYPES[dtype]
        t.buffer = 0 if data is None else self.b.buffer(data)
        if q is not None:
            t.quantization = fb.QuantizationParametersT()
            scales = np.atleast_1d(np.asarray(q[0], dtype=np.float32))
            t.quantization.scale = scales
            t.quantization.zeroPoint = np.broadcast_to(np.asarray(q[1], dtype=np.int64), scales.shape).copy()
            t.quantization.quantizedDimension = axis
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def const_i32(self, name: str, values: list[int] | list[list[int]]) -> int:
        arr = np.asarray(values, dtype=np.int32)
        return self.tensor(name, list(arr.shape), "int32", data=arr)

    def op(self, code: int, inputs: list[int], outputs: list[int], **options: object) -> None:
        kind, cls, version = _OPTIONS[code]
        o = fb.OperatorT()
        o.opcodeIndex = self.b.code(code, version)
        o.inputs, o.outputs = np.array(inputs, np.int32), np.array(outputs, np.int32)
        o.builtinOptionsType = kind
        if cls is not None:
            opt = cls()
            for k, v in options.items():
                setattr(opt, k, v)
            o.builtinOptions = opt
        self.sg.operators.append(o)

    def conv(self, layer: QLayer, x: int, frames_out: int, name: str) -> int:
        """The layer's convolution (VALID) on `x` [1, frames, 1, C_in] -> [1, frames_out, 1, C_out]."""
        o_axis = 0 if layer.kind == "conv" else 3
        channels = layer.weight.shape[o_axis]
        w = self.tensor(
            f"{name}/weight", list(layer.weight.shape), "int8", (layer.weight_scales, 0), layer.weight, o_axis
        )
        bias_scales = layer.inp[0] * layer.weight_scales
        b = self.tensor(f"{name}/bias", [channels], "int32", (bias_scales, 0), layer.bias)
        y = self.tensor(name, [1, frames_out, 1, channels], "int8", layer.out)
        act = fb.ActivationFunctionType.RELU if layer.relu else fb.ActivationFunctionType.NONE
        common = {
            "padding": fb.Padding.VALID,
            "strideW": 1,
            "strideH": layer.stride,
            "fusedActivationFunction": act,
            "dilationWFactor": 1,
            "dilationHFactor": layer.dilation,
        }
        if layer.kind == "conv":
            self.op(fb.BuiltinOperator.CONV_2D, [x, w, b], [y], **common)
        else:
            self.op(fb.BuiltinOperator.DEPTHWISE_CONV_2D, [x, w, b], [y], depthMultiplier=1, **common)
        return y

    def head(self, logits: int, steps: int) -> None:
        """[1, steps, 1, 1] int8 logits -> uint8 probabilities [1, steps] as the subgraph's output."""
        flat_q = self.sg.tensors[logits].quantization
        q = (flat_q.scale, flat_q.zeroPoint)
        flat = self.tensor("logits", [1, steps], "int8", q)
        self.op(fb.BuiltinOperator.RESHAPE, [logits, self.const_i32("logits/shape", [1, steps])], [flat])
        sig = self.tensor("sigmoid", [1, steps], "int8", LOGISTIC_OUT)
        self.op(fb.BuiltinOperator.LOGISTIC, [flat], [sig])
        prob = self.tensor("probability", [1, steps], "uint8", PROB_OUT)
        self.op(fb.BuiltinOperator.QUANTIZE, [sig], [prob])
        self.sg.outputs = [prob]

    def features_input(self, frames: int, n_features: int, q: tuple[float, int]) -> int:
        x = self.tensor("features", [1, frames, n_features], "int8", q)
        self.sg.inputs = [x]
        x4 = self.tensor("features/nhwc", [1, frames, 1, n_features], "int8", q)
        self.op(
            fb.BuiltinOperator.RESHAPE,
            [x, self.const_i32("features/shape", [1, frames, 1, n_features])],
            [x4],
        )
        return x4


def _channels_in(layer: QLayer) -> int:
    return layer.weight.shape[3]


def write_clip_model(model: StreamingStudent, frames: int, path: Path) -> Path:
    """The clip form for `frames` feature frames (a multiple of the stride)."""
    spec = model.spec
    if frames % spec.stride:
        raise ValueError(f"frames {frames} must be a multiple of the stride {spec.stride}")
    b = _Builder()
    sg = b.subgraph("clip")
    x = sg.features_input(frames, spec.n_features, model.input_q.qparams())
    length = frames
    for i, layer in enumerate(quantized_layers(model)):
        if layer.state_frames:
            padded = sg.tensor(
                f"layer{i}/padded",
                [1, length + layer.state_frames, 1, _channels_in(layer)],
                "int8",
                layer.inp,
            )
            pads = sg.const_i32(f"layer{i}/pads", [[0, 0], [layer.state_frames, 0], [0, 0], [0, 0]])
            sg.op(fb.BuiltinOperator.PAD, [x, pads], [padded])
            x = padded
        length = length // layer.stride
        x = sg.conv(layer, x, length, f"layer{i}")
    sg.head(x, length)
    return b.write(path)


def write_step_model(model: StreamingStudent, path: Path) -> Path:
    """The step form ESPHome runs: `stride` new frames per invoke, context in resource variables."""
    spec = model.spec
    layers = quantized_layers(model)
    b = _Builder()
    sg = b.subgraph("step")
    init = b.subgraph("init_states")
    sg.op(fb.BuiltinOperator.CALL_ONCE, [], [], initSubgraphIndex=1)
    x = sg.features_input(spec.stride, spec.n_features, model.input_q.qparams())
    new = spec.stride
    for i, layer in enumerate(layers):
        if layer.state_frames:
            name, c = f"layer{i}/state", _channels_in(layer)
            shape = [1, layer.state_frames, 1, c]
            init_handle = init.tensor(f"{name}/handle", [], "resource")
            init.op(fb.BuiltinOperator.VAR_HANDLE, [], [init_handle], container=b"", sharedName=name.encode())
            zeros = init.tensor(
                f"{name}/zero", shape, "int8", layer.inp, np.full(shape, layer.inp[1], np.int8)
            )
            init.op(fb.BuiltinOperator.ASSIGN_VARIABLE, [init_handle, zeros], [])
            handle = sg.tensor(f"{name}/handle", [], "resource")
            sg.op(fb.BuiltinOperator.VAR_HANDLE, [], [handle], container=b"", sharedName=name.encode())
            state = sg.tensor(name, shape, "int8", layer.inp)
            sg.op(fb.BuiltinOperator.READ_VARIABLE, [handle], [state])
            window = sg.tensor(f"{name}/window", [1, layer.state_frames + new, 1, c], "int8", layer.inp)
            sg.op(fb.BuiltinOperator.CONCATENATION, [state, x], [window], axis=1)
            kept = sg.tensor(f"{name}/next", shape, "int8", layer.inp)
            begin = sg.const_i32(f"{name}/begin", [0, new, 0, 0])
            end = sg.const_i32(f"{name}/end", [0, 0, 0, 0])
            step = sg.const_i32(f"{name}/strides", [1, 1, 1, 1])
            # masks: dims 0, 2, 3 whole; dim 1 from `new` to the end
            sg.op(
                fb.BuiltinOperator.STRIDED_SLICE,
                [window, begin, end, step],
                [kept],
                beginMask=0b1101,
                endMask=0b1111,
            )
            sg.op(fb.BuiltinOperator.ASSIGN_VARIABLE, [handle, kept], [])
            x = window
        new = 1  # after the strided first layer, one frame per invoke
        x = sg.conv(layer, x, 1, f"layer{i}")
    sg.head(x, 1)
    return b.write(path)
