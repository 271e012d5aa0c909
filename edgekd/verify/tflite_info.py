"""Static facts about a .tflite model (ours or third-party) and the TFLite Micro arena it needs.

Everything here reads the model with LiteRT's reference interpreter (which also runs the flatbuffer
verifier, so a corrupt file becomes an `EdgekdError` instead of a crash inside TFLite Micro) or with
the TFLite Micro host interpreter, the same kernels the device runs. No torch import.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tflite_micro import runtime
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema_fb

from edgekd.errors import EdgekdError
from edgekd.native_log import captured_stderr

# The first arena measure_arena tries; it doubles from here up to _MAX_ARENA until allocation works.
_MIN_PROBE_ARENA = 1 << 20
_MAX_ARENA = 1 << 30
_ARENA_TOTAL_RE = re.compile(r"Arena allocation total (\d+) bytes")
_FLOAT_DTYPES = ("float16", "float32", "float64")
_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "AVERAGE_POOL_2D"}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the model; `scales`/`zero_points` are empty for unquantized tensors."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int

    @property
    def scale(self) -> float | None:
        """The per-tensor scale, or None when unquantized or per-channel."""
        return self.scales[0] if len(self.scales) == 1 else None

    @property
    def zero_point(self) -> int | None:
        """The per-tensor zero-point, or None when unquantized or per-channel."""
        return self.zero_points[0] if len(self.zero_points) == 1 else None


@dataclass(frozen=True)
class ModelInfo:
    """What a .tflite model asks of a device: ops to link, int8-ness, flash and compute."""

    path: str
    ops: list[str]
    op_set: list[str]
    tensors: list[TensorInfo]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    float_tensors: list[str]
    not_int8: list[str]  # "name (dtype)" of every tensor that keeps the model from being integer-only int8
    flash_bytes: int
    macs: int

    @property
    def is_fully_int8(self) -> bool:
        """Integer-only int8 (a uint8 model input or output allowed): nothing in `not_int8`."""
        return not self.not_int8

    @property
    def input(self) -> TensorInfo:
        """The first (for KWS models the only) input."""
        return self.inputs[0]

    @property
    def output(self) -> TensorInfo:
        """The first (for KWS models the only) output."""
        return self.outputs[0]


def open_litert(path: str | os.PathLike[str], reference: bool = True) -> Interpreter:
    """A LiteRT interpreter for `path`, after checking the file is a valid TFLite flatbuffer.

    reference=True selects the BUILTIN_REF kernels, which match TFLite Micro bit for bit except for
    rare 1-step rounding differences in int8 FULLY_CONNECTED; False selects the default (XNNPACK)
    kernels, which differ by 1 step on more int8 outputs.
    """
    p = Path(path)
    if not p.is_file():
        raise EdgekdError(f"{p}: no such model file")
    if p.stat().st_size == 0:
        raise EdgekdError(f"{p}: the model file is empty")
    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    try:
        return Interpreter(model_path=str(p), experimental_op_resolver_type=resolver)
    except (ValueError, RuntimeError) as e:
        raise EdgekdError(f"{p}: not a usable TFLite model ({e})") from e


def _label(t: TensorInfo) -> str:
    return t.name or f"#{t.index}"


def _not_int8(
    tensors: dict[int, TensorInfo], inputs: list[TensorInfo], outputs: list[TensorInfo], ops: list[dict]
) -> list[str]:
    """Tensors an int8-only kernel build cannot run: floats, and quantized activations of another type.

    Quantized activations of another type (int16 "16x8", uint8) need kernels an int8 build lacks — except
    a uint8 model input or output: the QUANTIZE at the boundary is integer-only, and it is the contract
    of some runtimes (ESPHome's micro_wake_word reads a uint8 probability).
    """
    io = {t.index for t in inputs + outputs}
    boundary = {t.index for t in inputs + outputs if t.dtype == "uint8" and t.scales}
    activations = io | {
        int(i) for op in ops for i in op["outputs"] if int(i) in tensors and tensors[int(i)].scales
    }
    suspects = [
        t
        for t in tensors.values()
        if t.dtype in _FLOAT_DTYPES or (t.index in activations - boundary and t.dtype != "int8")
    ]
    return [f"{_label(t)} ({t.dtype})" for t in suspects]


def describe(path: str | os.PathLike[str]) -> ModelInfo:
    """Read ops (in execution order), tensors, int8-ness, flash size and MACs of a .tflite model."""
    p = Path(path)
    interp = open_litert(p)
    ops = interp._get_ops_details()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    io_idx = [d["index"] for d in interp.get_input_details() + interp.get_output_details()]
    op_idx = [int(i) for op in ops for i in (*op["inputs"], *op["outputs"]) if i >= 0]
    # Only tensors the graph uses: the interpreter may add unnamed scratch tensors of its own.
    tensors = {i: _tensor_info(details[i]) for i in sorted(set(io_idx + op_idx)) if i in details}
    inputs = [tensors[d["index"]] for d in interp.get_input_details()]
    outputs = [tensors[d["index"]] for d in interp.get_output_details()]
    float_tensors = [_label(t) for t in tensors.values() if t.dtype in _FLOAT_DTYPES]
    not_int8 = _not_int8(tensors, inputs, outputs, ops)
    names = [op["op_name"] for op in ops]
    return ModelInfo(
        path=str(p),
        ops=names,
        op_set=sorted(set(names)),
        tensors=list(tensors.values()),
        inputs=inputs,
        outputs=outputs,
        float_tensors=float_tensors,
        not_int8=not_int8,
        flash_bytes=p.stat().st_size,
        macs=count_macs(p, ops, tensors),
    )


def _tensor_info(d: dict) -> TensorInfo:
    q = d["quantization_parameters"]
    return TensorInfo(
        index=int(d["index"]),
        name=d["name"],
        dtype=np.dtype(d["dtype"]).name,
        shape=tuple(int(s) for s in d["shape"]),
        scales=tuple(float(s) for s in q["scales"]),
        zero_points=tuple(int(z) for z in q["zero_points"]),
        quantized_dimension=int(q["quantized_dimension"]),
    )


def count_macs(path: Path, ops: list[dict], tensors: dict[int, TensorInfo]) -> int:
    """Multiply-accumulates for one inference (batch as stored in the model, normally 1).

    - CONV_2D: out_elements * kH * kW * in_channels_per_group (filter is [O, kH, kW, I]).
    - DEPTHWISE_CONV_2D: out_elements * kH * kW (filter is [1, kH, kW, O]; each output channel
      reads one input channel).
    - FULLY_CONNECTED: out_elements * in_features (filter is [O, I]).
    - AVERAGE_POOL_2D: out_elements * filter_h * filter_w additions, counted as MACs.
    - MEAN: in_elements additions (every input element is summed once), counted as MACs.
    Other ops (reshape, activation, quantize, ...) count as zero. The TFLite converter's logged
    "Estimated count of arithmetic ops" / 2 is close but counts pooling differently.
    """
    model = None
    total = 0
    for op in ops:
        name = op["op_name"]
        if name not in _MAC_OPS:
            continue
        ins = [tensors[int(i)] for i in op["inputs"] if i >= 0]
        out_elems = math.prod(tensors[int(op["outputs"][0])].shape)
        if name == "CONV_2D":
            _, kh, kw, cin = ins[1].shape
            total += out_elems * kh * kw * cin
        elif name == "DEPTHWISE_CONV_2D":
            total += out_elems * ins[1].shape[1] * ins[1].shape[2]
        elif name == "FULLY_CONNECTED":
            total += out_elems * ins[1].shape[-1]
        elif name == "MEAN":
            total += math.prod(ins[0].shape)
        elif name == "AVERAGE_POOL_2D":
            if model is None:
                model = schema_fb.Model.GetRootAsModel(path.read_bytes(), 0)
            table = model.Subgraphs(0).Operators(op["index"]).BuiltinOptions()
            opts = schema_fb.Pool2DOptions()
            opts.Init(table.Bytes, table.Pos)
            total += out_elems * opts.FilterHeight() * opts.FilterWidth()
    return total


def _try_tflm(path: Path, arena_size: int) -> tuple[runtime.Interpreter | None, str]:
    """(interpreter, TFLM log) when the tensors fit in `arena_size` bytes, else (None, log)."""
    with captured_stderr() as log:
        try:
            interp = runtime.Interpreter.from_file(str(path), arena_size=arena_size)
        except RuntimeError:
            interp = None
    return interp, log[0]


def smallest_working_arena(path: str | os.PathLike[str], lo: int, hi: int) -> int:
    """Smallest arena size in [lo, hi] for which TFLite Micro allocates the model (binary search).

    Assumes allocation succeeds for every size above the smallest working one.
    """
    p = Path(path)
    open_litert(p)
    interp, log = _try_tflm(p, hi)
    if interp is None:
        raise EdgekdError(f"{p}: TFLite Micro cannot allocate the model even in {hi} B:\n{log.strip()}")
    while lo < hi:
        mid = (lo + hi) // 2
        if _try_tflm(p, mid)[0] is None:
            lo = mid + 1
        else:
            hi = mid
    return hi


def measure_arena(path: str | os.PathLike[str]) -> int:
    """Tensor-arena bytes TFLite Micro needs for the model on this host (64-bit reference kernels).

    Allocates with a generous arena, runs one inference on zeros, and parses the recording
    allocator's "Arena allocation total N bytes"; then confirms N allocates (searching upward if it
    does not, e.g. for alignment) so the number returned is one that works. A 32-bit device build
    with optimized kernels (ESP-NN scratch buffers) can need a little more: keep headroom there.
    """
    p = Path(path)
    litert = open_litert(p)
    size = max(_MIN_PROBE_ARENA, 16 * p.stat().st_size)
    interp, log = _try_tflm(p, size)
    while interp is None and size < _MAX_ARENA:
        size *= 2
        interp, log = _try_tflm(p, size)
    if interp is None:
        raise EdgekdError(
            f"{p}: TFLite Micro cannot allocate the model even in {size} B "
            f"(an op it does not support?):\n{log.strip()}"
        )
    for i, d in enumerate(litert.get_input_details()):
        interp.set_input(np.zeros(d["shape"], dtype=d["dtype"]), i)
    interp.invoke()
    with captured_stderr() as report:
        interp.print_allocations()
    match = _ARENA_TOTAL_RE.search(report[0])
    if match is None:
        raise RuntimeError(f"TFLite Micro printed no arena total:\n{report[0]}")
    total = int(match.group(1))
    if _try_tflm(p, total)[0] is not None:
        return total
    return smallest_working_arena(p, total + 1, size)


def load_tflm(path: str | os.PathLike[str], arena_size: int) -> runtime.Interpreter:
    """A TFLite Micro host interpreter; a too-small arena becomes an EdgekdError naming the need."""
    p = Path(path)
    open_litert(p)
    interp, log = _try_tflm(p, arena_size)
    if interp is None:
        needed = measure_arena(p)
        raise EdgekdError(
            f"{p}: TFLite Micro could not allocate tensors in a {arena_size} B arena; "
            f"this model needs {needed} B on this host:\n{log.strip()}"
        )
    return interp
