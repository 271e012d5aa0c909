"""Batched INT8 TFLite inference, bit-identical to TFLite Micro's reference kernels, on torch CPU.

TFLite Micro (TFLM) runs one window per invoke (~7 ms for a DS-CNN keyword model). Every int8 op is
exact integer arithmetic, so a batched float convolution reproduces it exactly as long as no partial
sum leaves the range where floats hold integers exactly; the only delicate part is the per-element
requantization, which is reproduced here in closed form (see `Requant`).

Arithmetic reproduced (TFLM `reference_integer_ops`, default build without TFLITE_SINGLE_ROUNDING):
- CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: acc = bias + sum((x - zp_in) * w) in int32 (padding
  taps skipped), then MultiplyByQuantizedMultiplier(acc, m_c, shift_c) + zp_out, clamped to the fused
  activation's range. (m_c, shift_c) = QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out))
  (a per-tensor conv filter scale is broadcast the same way); only a per-tensor FULLY_CONNECTED filter
  uses the float32 product s_in * s_w first (GetQuantizedConvolutionMultipler), as TFLM does.
  LiteRT's reference FULLY_CONNECTED differs: round(double(acc) * s_in * s_w / s_out), one rounding of
  the real value, where TFLM's fixed-point multiply rounds twice; they disagree by 1 on ~0.1-0.2% of
  outputs, those within ~2^-(r+1) of a .5 boundary (r = the right shift, 9-10 here).
- PAD / PADV2: fill with the output zero point (or the given constant).
- AVERAGE_POOL_2D: raw int8 sum over the in-bounds taps, acc > 0 ? (acc + n/2) / n : (acc - n/2) / n
  with C truncating division, clamped.
- QUANTIZE int8 -> int8: MultiplyByQuantizedMultiplier(x - zp_in, QuantizeMultiplier(s_in / s_out)) + zp_out.
- RESHAPE: a view (row-major, batch leading).

Anything else (another op, int16/uint8/int4 tensors, sparsity, several subgraphs, an option the code
does not model) raises `UnsupportedModelError` naming the op, so a caller can fall back to TFLM.

Speed: activations stay float32 tensors holding int8 values (NHWC); convolutions run on raw int8
values in float32 (exact: every partial sum is below 128 * sum|w| < 2^24, checked per layer, else
float64) with the input offset folded into the bias and padding filled with the zero point; 1x1
convs are one matmul. torch.compile fuses each layer's requantization into a single loop. About
0.4 CPU-ms per DS-CNN window against TFLM's ~7.5 (bench.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

Rounding = Literal["double", "single"]

_OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
_INT8, _INT32 = fb.TensorType.INT8, fb.TensorType.INT32
_F32_EXACT = 1 << 24  # float32 holds every integer below this exactly
_F64_EXACT_SHIFT = 42  # float64 requantization is exact for denominators 2^D, D <= 42 (see Requant)


class UnsupportedModelError(ValueError):
    """The model uses an op, type or option this engine does not reproduce; run it on TFLM instead."""


def quantize_multiplier(real: float, rounding: Rounding = "double") -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real ~= m * 2^(shift - 31), m in [2^30, 2^31) (or 0).

    frexp, round half away from zero of q * 2^31, q == 2^31 renormalised, shift < -31 flushed to 0;
    single-rounding builds also saturate shift > 30.
    """
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.copysign(math.floor(abs(q) * 2.0**31 + 0.5), q))  # std::round: half away from 0
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if rounding == "single" and shift > 30:
        return (1 << 31) - 1, 30
    return q_fixed, shift


def multiply_by_quantized_multiplier(
    x: np.ndarray, m: np.ndarray, shift: np.ndarray, rounding: Rounding = "double"
) -> np.ndarray:
    """Literal int64 transcription of TFLM's MultiplyByQuantizedMultiplier (int32 x), elementwise.

    double: RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << left, m), right);
    single: (x * m + 2^(30 - shift)) >> (31 - shift). Slow; the reference the fast paths are tested against.
    """
    x, m, shift = (np.asarray(a, dtype=np.int64) for a in (x, m, shift))
    if rounding == "single":
        total = 31 - shift
        return (x * m + (np.int64(1) << (total - 1))) >> total
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    xs = x << left
    xs = ((xs + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)  # int32 wrap of x * (1 << left)
    ab = xs * m
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    high = np.where(num >= 0, num >> 31, -((-num) >> 31))  # C++ division truncates toward zero
    high = np.where((xs == -(1 << 31)) & (m == -(1 << 31)), (1 << 31) - 1, high)
    mask = (np.int64(1) << right) - 1
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + ((high & mask) > threshold)


@dataclass(frozen=True)
class _Tensor:
    index: int
    name: str
    type: int
    shape: tuple[int, ...]
    scales: np.ndarray  # float32, empty when unquantized
    zero_points: np.ndarray  # int64
    quantized_dimension: int
    data: np.ndarray | None  # constant buffer contents, else None


class Requant:
    """acc (integer-valued, per channel on the last axis) -> clamp(MBQM(acc + bias, m_c, shift_c) + zp).

    Both TFLM roundings are one floor of a dyadic rational:
      double: RDBPOT(SRDHM(a << l, m), r) = floor(a*M/2^D + 1/2 + sign(a) * 2^-(r+1)),
              l = max(shift, 0), r = max(-shift, 0), M = m * 2^l, D = 31 + r
              (SRDHM rounds half up, (a*M + 2^30) >> 31; RDBPOT rounds half away from zero;
              nested floors merge; the 2^-(r+1) term is 0 when r == 0)
      single: floor(a*M/2^D + 1/2), M = m, D = 31 - shift
    The value is a dyadic rational with denominator 2^D. In float64, a*(M/2^D) + c is exact whenever
    its magnitude is below 2^10 and D <= 42 (numerator < 2^53); larger magnitudes clamp anyway, so the
    floor is exact. Channels with D > 42 (tiny effective scales) use exact int64 arithmetic instead.
    """

    def __init__(
        self,
        bias: np.ndarray,
        m: np.ndarray,
        shift: np.ndarray,
        zp: int,
        lo: int,
        hi: int,
        rounding: Rounding,
        acc_bound: np.ndarray,
        force_int64: bool = False,
    ) -> None:
        """bias: int64 per channel, added to acc first; acc_bound: max |TFLM int32 accumulator|."""
        m, shift = m.astype(np.int64), shift.astype(np.int64)
        left, r = np.maximum(shift, 0), np.maximum(-shift, 0)
        if rounding == "double":  # x << left happens in int32
            if np.any(acc_bound * (1 << left) >= 1 << 31):
                raise UnsupportedModelError("accumulator << left shift can overflow int32 (TFLM wraps)")
            big_m, d = m << left, 31 + r
            half_e = np.where(r > 0, np.ldexp(1.0, -(r + 1)), 0.0)
        else:  # (x * m + 2^(30 - shift)) >> (31 - shift) in int64
            big_m, d = m, 31 - shift
            half_e = np.zeros(len(m))
        self.zp, self.lo, self.hi = zp, lo, hi
        self.bias = torch.from_numpy(bias.astype(np.float64))
        self.exact_int = force_int64 or bool(np.any(d > _F64_EXACT_SHIFT))
        if self.exact_int:  # floor((a*M + R) / 2^D) with R = 2^(D-1) +- 2^(D-r-1) (0 when r == 0)
            e_num = np.where(half_e > 0, np.int64(1) << np.maximum(d - r - 1, 0), 0)
            self.big_m = torch.from_numpy(big_m)
            self.r_pos = torch.from_numpy((np.int64(1) << (d - 1)) + e_num)  # |a*M + R| < 2^63
            self.r_neg = torch.from_numpy((np.int64(1) << (d - 1)) - e_num)
            self.d = torch.from_numpy(d)
            self.bias_i = torch.from_numpy(bias.astype(np.int64))
        else:
            self.scale = torch.from_numpy(
                big_m.astype(np.float64) * np.ldexp(1.0, -d)
            )  # exact: 31-bit * 2^-D
            self.c_pos = torch.from_numpy(0.5 + zp + half_e)
            self.c_neg = torch.from_numpy(0.5 + zp - half_e)
            self.signed = bool(np.any(half_e > 0))

    def __call__(self, acc: torch.Tensor) -> torch.Tensor:
        """float32/float64 integer-valued acc [..., C] -> float32 int8 values [..., C]."""
        if self.exact_int:
            a = acc.to(torch.int64).add_(self.bias_i)
            y = torch.where(a < 0, self.r_neg, self.r_pos).addcmul_(a, self.big_m)
            y = torch.bitwise_right_shift(y, self.d).add_(self.zp)
            return y.clamp_(self.lo, self.hi).to(torch.float32)
        a = acc.to(torch.float64).add_(self.bias)
        c = torch.where(a < 0, self.c_neg, self.c_pos) if self.signed else self.c_pos
        y = torch.addcmul(c, a, self.scale)
        return y.floor_().clamp_(self.lo, self.hi).to(torch.float32)


def _exact_float32() -> Callable[[], None]:
    """Make float32 matmul/conv IEEE (no TF32/bf16 shortcuts, which would break exact integer sums)
    if someone switched them; returns a function restoring the previous settings."""
    undo: list[Callable[[], None]] = []
    if torch.get_float32_matmul_precision() != "highest":
        old = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        undo.append(lambda: torch.set_float32_matmul_precision(old))
    for part in ("matmul", "conv"):
        backend = getattr(torch.backends.mkldnn, part, None)
        value = getattr(backend, "fp32_precision", "none")
        if value not in ("none", "ieee"):
            backend.fp32_precision = "ieee"
            undo.append(lambda b=backend, v=value: setattr(b, "fp32_precision", v))

    def restore() -> None:
        for u in undo:
            u()

    return restore


def _activation_range(act: int, scale: float, zp: int, op: str) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: zp + (int)round(f / scale) in float32, within [-128, 127]."""

    def q(f: float) -> int:
        v = float(np.float32(f) / np.float32(scale))  # float32 division, as in C++
        return zp + int(math.copysign(math.floor(abs(v) + 0.5), v))  # std::round: half away from zero

    if act == fb.ActivationFunctionType.NONE:
        return -128, 127
    if act == fb.ActivationFunctionType.RELU:
        return max(-128, q(0.0)), 127
    if act == fb.ActivationFunctionType.RELU6:
        return max(-128, q(0.0)), min(127, q(6.0))
    if act == fb.ActivationFunctionType.RELU_N1_TO_1:
        return max(-128, q(-1.0)), min(127, q(1.0))
    raise UnsupportedModelError(f"{op}: fused activation {act} is not supported")


def _padding(padding: int, stride: int, dilation: int, size: int, k: int) -> tuple[int, int]:
    """TFLM ComputePaddingHeightWidth for one axis: (out size, pad before); C integer division."""
    eff = (k - 1) * dilation + 1
    out = (size + stride - 1) // stride if padding == fb.Padding.SAME else (size + stride - eff) // stride
    total = (out - 1) * stride + eff - size
    return out, max(0, int(total / 2))


class Int8Engine:
    """A fully-int8 .tflite model (one subgraph) run in batches, bit-identical to TFLite Micro.

    predict_quantized(q) takes int8 windows [N, *input shape without batch] and returns the int8
    outputs [N, prod(output shape without batch)], like `TFLMRunner.predict_quantized`.
    `rounding="single"` reproduces a TFLM build with TFLITE_SINGLE_ROUNDING=1 instead of the default.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        batch_size: int = 16,
        threads: int | None = 1,
        compile: bool = True,
        rounding: Rounding = "double",
        force_int64: bool = False,
    ) -> None:
        """batch_size: windows per forward; 16 keeps a layer's activations in L2 (fastest of 8-256 here).
        threads: torch intra-op threads during predict (None: leave torch's setting). 1 by default: on
        a shared 2-core host, 2 OpenMP threads spin at every op's barrier when the other core is busy
        and throughput collapsed (~130 windows/s); with OMP_WAIT_POLICY=PASSIVE set before torch is
        imported, 2 threads are safe and help on an idle machine. For 2 cores, 2 processes also work.
        compile: run the forward through torch.compile: it fuses the ~8 elementwise requantization
        passes per layer into one loop (~10x faster than eager). The first call compiles (~10-60 s;
        later processes hit the inductor cache); the last partial batch is padded to batch_size so the
        graph never recompiles. Falls back to eager, same arithmetic, if compilation fails.
        force_int64: requantize every layer with exact int64 ops instead of the float64 closed form."""
        self.path = Path(path)
        self.batch_size = batch_size
        self.threads = threads
        self.rounding: Rounding = rounding
        self._force_int64 = force_int64
        self._compile = compile
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.compile_error: str | None = None
        buf = self.path.read_bytes()
        model = fb.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() != 1:
            raise UnsupportedModelError(
                f"{self.path}: {model.SubgraphsLength()} subgraphs; only 1 is supported"
            )
        self._model, self._buf, sg = model, buf, model.Subgraphs(0)
        self._tensors = [self._read_tensor(sg.Tensors(i), i) for i in range(sg.TensorsLength())]
        if sg.InputsLength() != 1 or sg.OutputsLength() != 1:
            raise UnsupportedModelError(f"{self.path}: needs exactly one input and one output")
        self.input, self.output = self._tensors[sg.Inputs(0)], self._tensors[sg.Outputs(0)]
        for t, what in ((self.input, "input"), (self.output, "output")):
            if t.type != _INT8 or t.shape[:1] != (1,):
                raise UnsupportedModelError(
                    f"{self.path}: model {what} must be int8 with batch 1, got {t.shape}"
                )
        self._steps: list[Callable[[dict[int, torch.Tensor]], None]] = []
        self.ops: list[str] = []
        for k in range(sg.OperatorsLength()):
            op = sg.Operators(k)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = _OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            self.ops.append(name)
            build = getattr(self, f"_build_{name.lower()}", None)
            if build is None:
                raise UnsupportedModelError(f"{self.path}: op #{k} {name} is not supported")
            ins = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(i) for i in op.OutputsAsNumpy()]
            if len(outs) != 1:
                raise UnsupportedModelError(f"{name} (op #{k}): {len(outs)} outputs")
            label = f"{name} (op #{k})"
            self._check_activation(label, [self._tensors[i] for i in ins[:1] + outs])
            self._steps.append(build(label, op, ins, self._tensors[outs[0]]))

    # ---------------------------------------------------------------------------------- parsing

    def _read_tensor(self, t: fb.Tensor, index: int) -> _Tensor:
        if t.Sparsity() is not None:
            raise UnsupportedModelError(f"tensor {t.Name()!r}: sparse tensors are not supported")
        q = t.Quantization()
        scales = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else np.zeros(0, np.float32)
        zps = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else np.zeros(0, np.int64)
        data = None
        b = self._model.Buffers(t.Buffer())
        if b is not None and b.Offset() > 1:  # buffers stored after the flatbuffer (models > 2 GB)
            data = np.frombuffer(self._buf, np.uint8, count=b.Size(), offset=b.Offset())
        elif b is not None and b.DataLength():
            data = b.DataAsNumpy()
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        if data is not None:
            dtype = {_INT8: np.int8, _INT32: np.int32}.get(t.Type())
            data = None if dtype is None else data.view(dtype).reshape(shape)
        return _Tensor(
            index,
            (t.Name() or b"").decode(),
            t.Type(),
            shape,
            np.asarray(scales, np.float32),
            np.asarray(zps, np.int64),
            q.QuantizedDimension() if q is not None else 0,
            data,
        )

    def _check_activation(self, op: str, ts: list[_Tensor]) -> None:
        for t in ts:
            if t.type != _INT8 or len(t.scales) != 1 or len(t.zero_points) != 1:
                raise UnsupportedModelError(f"{op}: tensor {t.name!r} is not a per-tensor int8 activation")
            if t.shape[:1] != (1,):
                raise UnsupportedModelError(f"{op}: tensor {t.name!r} shape {t.shape} has no leading batch 1")

    def _const(self, op: str, i: int, dtype: type, what: str) -> _Tensor:
        t = self._tensors[i]
        if t.data is None or t.data.dtype != dtype:
            raise UnsupportedModelError(f"{op}: {what} must be a constant {np.dtype(dtype).name} tensor")
        return t

    @staticmethod
    def _options(label: str, op: fb.Operator, cls: type, required: bool = True) -> object:
        table = op.BuiltinOptions()
        if table is None:
            if required:
                raise UnsupportedModelError(f"{label}: no builtin options")
            return None
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    @staticmethod
    def _qp(t: _Tensor) -> tuple[float, int]:
        return float(t.scales[0]), int(t.zero_points[0])

    def _requant(
        self,
        op: str,
        x: _Tensor,
        w: _Tensor,
        w64: np.ndarray,
        bias: np.ndarray,
        out: _Tensor,
        act: int,
        channel_axis: int,
        fully_connected: bool = False,
    ) -> Requant:
        """Per-channel (m, shift) exactly as TFLM derives them; w64 is the filter as int64 [cout, taps].

        The engine convolves raw int8 inputs, so the input offset moves into the bias:
        bias + sum((x - zp) * w) = (bias - zp * sum(w)) + sum(x * w), padding taps filled with zp.
        """
        s_in, zp_in = self._qp(x)
        n_out = len(w64)
        s_out, zp_out = self._qp(out)
        if np.any(w.zero_points != 0):
            raise UnsupportedModelError(f"{op}: filter zero point != 0")
        if len(w.scales) == 1 and fully_connected:  # GetQuantizedConvolutionMultipler: float32 s_in * s_w
            reals = [float(np.float32(s_in) * w.scales[0]) / float(s_out)] * n_out
        elif len(w.scales) == 1:  # conv: PopulateConvolutionQuantizationParams broadcasts, double products
            reals = [float(s_in) * float(w.scales[0]) / float(s_out)] * n_out
        elif len(w.scales) == n_out and w.quantized_dimension == channel_axis:  # per channel, double
            reals = [float(s_in) * float(s) / float(s_out) for s in w.scales]
        else:
            raise UnsupportedModelError(
                f"{op}: {len(w.scales)} filter scales (axis {w.quantized_dimension}) "
                f"for {n_out} output channels"
            )
        mq = [quantize_multiplier(r, self.rounding) for r in reals]
        if any(m < 0 for m, _ in mq):
            raise UnsupportedModelError(f"{op}: negative effective scale")
        acc_bound = np.abs(bias) + 255 * np.abs(w64).sum(1)
        if np.any(acc_bound >= 1 << 31):
            raise UnsupportedModelError(f"{op}: the int32 accumulator can overflow")
        lo, hi = _activation_range(act, s_out, zp_out, op)
        folded = bias - zp_in * w64.sum(1)
        return Requant(
            folded,
            np.array([m for m, _ in mq]),
            np.array([s for _, s in mq]),
            zp_out,
            lo,
            hi,
            self.rounding,
            acc_bound,
            self._force_int64,
        )

    def _bias(self, op: str, ins: list[int], n_out: int) -> np.ndarray:
        if len(ins) < 3 or ins[2] < 0:
            return np.zeros(n_out, np.int64)
        b = self._const(op, ins[2], np.int32, "bias").data.reshape(-1)
        if b.size != n_out:
            raise UnsupportedModelError(f"{op}: bias has {b.size} values for {n_out} channels")
        return b.astype(np.int64)

    # ---------------------------------------------------------------------------------- ops

    def _build_reshape(self, op: str, o: fb.Operator, ins: list[int], out: _Tensor) -> Callable:
        x = self._tensors[ins[0]]  # TFLM copies the bytes, whatever the quantization parameters
        if math.prod(x.shape) != math.prod(out.shape):
            raise UnsupportedModelError(f"{op}: changes the size")
        shape = out.shape[1:]
        return lambda env: env.__setitem__(out.index, env[x.index].reshape(-1, *shape))

    def _conv_common(self, op: str, ins: list[int], out: _Tensor, opts: object, depthwise: bool) -> Callable:
        x, w = self._tensors[ins[0]], self._const(op, ins[1], np.int8, "filter")
        if len(x.shape) != 4 or len(w.data.shape) != 4 or len(out.shape) != 4:
            raise UnsupportedModelError(f"{op}: needs 4-D input, filter and output")
        _, h, wd, cin = x.shape
        _, oh, ow, cout = out.shape
        if depthwise:  # filter [1, kh, kw, cout], cout = cin * depth_multiplier, channel oc reads oc // dm
            _, kh, kw, fc = w.data.shape
            if fc != cout or cout % cin:
                raise UnsupportedModelError(f"{op}: filter channels {fc} vs input {cin} / output {cout}")
            weight = w.data.transpose(3, 0, 1, 2)  # [cout, 1, kh, kw]
            groups = cin
        else:  # filter [cout, kh, kw, cin / groups]
            fc_out, kh, kw, fc_in = w.data.shape
            if fc_out != cout or cin % fc_in:
                raise UnsupportedModelError(f"{op}: filter shape {w.data.shape} vs input channels {cin}")
            weight = w.data.transpose(0, 3, 1, 2)  # [cout, cin / groups, kh, kw]
            groups = cin // fc_in
        sh, sw = opts.StrideH(), opts.StrideW()
        dh, dw = opts.DilationHFactor(), opts.DilationWFactor()
        (eh, pt), (ew, pl) = _padding(opts.Padding(), sh, dh, h, kh), _padding(opts.Padding(), sw, dw, wd, kw)
        if (eh, ew) != (oh, ow):
            raise UnsupportedModelError(f"{op}: output shape {out.shape} != computed {(oh, ow)}")
        # bottom/right padding so the strided windows TFLM reads all exist (extra rows are never read)
        pb = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - (h + pt))
        pr = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - (wd + pl))
        zp_in = self._qp(x)[1]
        w64 = weight.astype(np.int64).reshape(cout, -1)
        abs_sum = np.abs(w64).sum(1)
        rq = self._requant(
            op,
            x,
            w,
            w64,
            self._bias(op, ins, cout),
            out,
            opts.FusedActivationFunction(),
            channel_axis=3 if depthwise else 0,
        )
        # float32 is exact iff every partial sum stays below 2^24: |x| <= 128 (raw int8, or zp padding)
        dtype = torch.float32 if 128 * int(abs_sum.max()) < _F32_EXACT else torch.float64
        wt = torch.from_numpy(weight.astype(np.float32)).to(dtype)
        pointwise = (kh, kw, sh, sw, groups, pt, pl, pb, pr) == (1, 1, 1, 1, 1, 0, 0, 0, 0)
        wmat = wt.reshape(cout, cin).t().contiguous() if pointwise else None
        pad, zp_f = (pl, pr, pt, pb), float(zp_in)

        def run(env: dict[int, torch.Tensor]) -> None:
            xi = env[x.index].to(dtype)
            if pointwise:  # 1x1 conv == [N*H*W, cin] @ [cin, cout] on the NHWC layout
                acc = (xi.reshape(-1, cin) @ wmat).reshape(-1, oh, ow, cout)
            else:
                xc = xi.permute(0, 3, 1, 2)  # NCHW view of NHWC memory (channels_last)
                if any(pad):
                    xc = F.pad(xc, pad, value=zp_f)
                acc = F.conv2d(xc, wt, stride=(sh, sw), dilation=(dh, dw), groups=groups)
                acc = acc[:, :, :oh, :ow].permute(0, 2, 3, 1)
            env[out.index] = rq(acc)

        return run

    def _build_conv_2d(self, op: str, o: fb.Operator, ins: list[int], out: _Tensor) -> Callable:
        return self._conv_common(op, ins, out, self._options(op, o, fb.Conv2DOptions), depthwise=False)

    def _build_depthwise_conv_2d(self, op: str, o: fb.Operator, ins: list[int], out: _Tensor) -> Callable:
        opts = self._options(op, o, fb.DepthwiseConv2DOptions)
        x = self._tensors[ins[0]]
        dm = opts.DepthMultiplier()
        if dm and out.shape[3] != x.shape[3] * dm:  # TFLM derives the multiplier from the shapes
            raise UnsupportedModelError(f"{op}: depth_multiplier {dm} inconsistent with shapes")
        return self._conv_common(op, ins, out, opts, depthwise=True)

    def _build_fully_connected(self, op: str, o: fb.Operator, ins: list[int], out: _Tensor) -> Callable:
        opts = self._options(op, o, fb.FullyConnectedOptions, required=False)
        if opts is not None and opts.WeightsFormat() != fb.FullyConnectedOptionsWeightsFormat.DEFAULT:
            raise UnsupportedModelError(f"{op}: shuffled weights are not supported")
        x, w = self._tensors[ins[0]], self._const(op, ins[1], np.int8, "weights")
        cout, k = w.data.shape
        per_window = math.prod(x.shape) // k
        if per_window * k != math.prod(x.shape) or math.prod(out.shape) != per_window * cout:
            raise UnsupportedModelError(
                f"{op}: input {x.shape} / output {out.shape} vs weights {w.data.shape}"
            )
        act = opts.FusedActivationFunction() if opts is not None else fb.ActivationFunctionType.NONE
        rq = self._requant(
            op,
            x,
            w,
            w.data.astype(np.int64),
            self._bias(op, ins, cout),
            out,
            act,
            channel_axis=0,
            fully_connected=True,
        )
        wmat = torch.from_numpy(w.data.astype(np.float64).T.copy())  # tiny: float64, always exact
        shape = out.shape[1:]

        def run(env: dict[int, torch.Tensor]) -> None:
            acc = env[x.index].to(torch.float64).reshape(-1, k) @ wmat
            env[out.index] = rq(acc).reshape(-1, *shape)

        return run

    def _build_pad(self, op: str, o: fb.Operator, ins: list[int], out: _Tensor) -> Callable:
        x = self._tensors[ins[0]]
        pads = self._const(op, ins[1], np.int32, "paddings").data.reshape(-1, 2)
        if self._qp(x) != self._qp(out) or len(pads) != len(x.shape) or np.any(pads < 0) or np.any(pads[0]):
            raise UnsupportedModelError(f"{op}: paddings {pads.tolist()} / quantization not supported")
        value = float(self._qp(out)[1])  # PAD fills with the output zero point
        if len(ins) > 2 and ins[2] >= 0:  # PADV2's constant
            value = float(self._const(op, ins[2], np.int8, "constant_values").data.reshape(-1)[0])
        flat = [int(p) for pair in pads[:0:-1] for p in pair]  # F.pad order: last axis first

        def run(env: dict[int, torch.Tensor]) -> None:
            env[out.index] = F.pad(env[x.index], flat, value=value)

        return run

    _build_padv2 = _build_pad

    def _build_average_pool_2d(self, op: str, o: fb.Operator, ins: list[int], out: _Tensor) -> Callable:
        opts = self._options(op, o, fb.Pool2DOptions)
        x = self._tensors[ins[0]]
        if len(x.shape) != 4 or self._qp(x) != self._qp(out):
            raise UnsupportedModelError(f"{op}: needs a 4-D input with the output's quantization")
        _, h, wd, c = x.shape
        _, oh, ow, _ = out.shape
        kh, kw, sh, sw = opts.FilterHeight(), opts.FilterWidth(), opts.StrideH(), opts.StrideW()
        (eh, pt), (ew, pl) = _padding(opts.Padding(), sh, 1, h, kh), _padding(opts.Padding(), sw, 1, wd, kw)
        if (eh, ew) != (oh, ow):
            raise UnsupportedModelError(f"{op}: output shape {out.shape} != computed {(oh, ow)}")
        pb = max(0, (oh - 1) * sh + kh - (h + pt))
        pr = max(0, (ow - 1) * sw + kw - (wd + pl))
        pad = (pl, pr, pt, pb)
        ones = F.pad(torch.ones(1, 1, h, wd, dtype=torch.float64), pad)
        count = F.avg_pool2d(ones, (kh, kw), (sh, sw), divisor_override=1)[0, 0, :oh, :ow]
        if torch.any(count == 0):
            raise UnsupportedModelError(f"{op}: a window with no input taps (TFLM fails)")
        count = count[None, :, :, None]
        half = torch.floor(count / 2)
        lo, hi = _activation_range(opts.FusedActivationFunction(), *self._qp(out), op)
        dtype = torch.float32 if 128 * kh * kw < _F32_EXACT else torch.float64

        def run(env: dict[int, torch.Tensor]) -> None:
            xc = F.pad(env[x.index].to(dtype).permute(0, 3, 1, 2), pad)  # zeros add nothing to the sum
            acc = F.avg_pool2d(xc, (kh, kw), (sh, sw), divisor_override=1)[:, :, :oh, :ow]
            acc = acc.permute(0, 2, 3, 1).to(torch.float64)
            # C: acc > 0 ? (acc + n/2) / n : (acc - n/2) / n, truncating; exact in float64
            q = torch.trunc((acc + torch.where(acc > 0, half, -half)) / count)
            env[out.index] = q.clamp_(lo, hi).to(torch.float32)

        return run

    def _build_quantize(self, op: str, o: fb.Operator, ins: list[int], out: _Tensor) -> Callable:
        x = self._tensors[ins[0]]
        (s_in, zp_in), (s_out, zp_out) = self._qp(x), self._qp(out)
        m, shift = quantize_multiplier(float(s_in) / float(s_out), self.rounding)
        if m < 0:
            raise UnsupportedModelError(f"{op}: negative scale")
        bound = np.array([255], np.int64)
        rq = Requant(
            np.array([-zp_in], np.int64),
            np.array([m]),
            np.array([shift]),
            zp_out,
            -128,
            127,
            self.rounding,
            bound,
            self._force_int64,
        )
        return lambda env: env.__setitem__(out.index, rq(env[x.index]))

    # ---------------------------------------------------------------------------------- running

    def predict_quantized(self, q: np.ndarray) -> np.ndarray:
        """int8 windows [N, *input shape[1:]] -> int8 outputs [N, prod(output shape[1:])]."""
        x = np.asarray(q)
        if x.dtype != np.int8 or x.shape[1:] != self.input.shape[1:]:
            raise ValueError(
                f"expected int8 [N, {', '.join(map(str, self.input.shape[1:]))}], got {x.dtype} {x.shape}"
            )
        out = np.empty((len(x), math.prod(self.output.shape[1:])), np.int8)
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        restore = _exact_float32()
        try:
            with torch.inference_mode():
                for i in range(0, len(x), self.batch_size):
                    chunk = x[i : i + self.batch_size]
                    if self._compile and len(chunk) < self.batch_size:  # fixed shape: no recompile
                        chunk = np.concatenate(
                            [chunk, np.zeros((self.batch_size - len(chunk), *chunk.shape[1:]), np.int8)]
                        )
                    y = self._run(torch.from_numpy(chunk).to(torch.float32))[: len(out) - i]
                    out[i : i + len(y)] = y.reshape(len(y), -1).to(torch.int8).numpy()
        finally:
            torch.set_num_threads(before)
            restore()
        return out

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if not self._compile:
            return self._forward(x)
        if self._compiled is None:
            # Dynamo caches graphs per code object; a code object of its own keeps engines from sharing
            # (and exhausting) one recompile limit, after which dynamo silently runs eager.
            scope: dict[str, object] = {"forward": self._forward}
            exec("def int8_forward(x):\n    return forward(x)\n", scope)
            self._compiled = torch.compile(scope["int8_forward"], dynamic=False)
        try:
            return self._compiled(x)
        except Exception as e:  # no C++ compiler, unsupported torch build...: same arithmetic, eager
            self.compile_error, self._compile = f"{type(e).__name__}: {e}", False
            return self._forward(x)

    def _forward(self, x: torch.Tensor, keep: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        env = {self.input.index: x}
        for step in self._steps:
            step(env)
        if keep is not None:
            keep.update(env)
        return env[self.output.index]

    def intermediates(self, q: np.ndarray) -> dict[int, np.ndarray]:
        """Every activation tensor (by tensor index) for int8 windows q, run eagerly: for layer checks."""
        keep: dict[int, torch.Tensor] = {}
        with torch.inference_mode():
            self._forward(torch.from_numpy(np.asarray(q, np.int8)).to(torch.float32), keep)
        return {i: t.to(torch.int8).numpy() for i, t in keep.items()}
