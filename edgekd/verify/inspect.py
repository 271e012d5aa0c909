"""`edgekd inspect`: what any .tflite model (ours or a third party's) asks of a target, and whether it fits.

The figures a build writes into `parity.json`'s `budget` (model bytes, arena, ops, MACs, INT8-ness,
latency) come from the very functions `edgekd.verify.budget.measure_budget` calls — `describe`,
`measure_arena`, `Budget`, the same latency formula and the same `budget_gates` — so `inspect` on a
build's `model.tflite` and the build's report cannot disagree. On top of those, inspect adds what a
firmware engineer needs to act on a model they did not train:

- every tensor with its dtype and quantization, and which ones are float;
- the ops with their counts, which fall outside the target's op set, and which run on ESP-NN's
  optimized kernels on an ESP32-S3 (the rest run TFLite Micro's portable reference kernels);
- a per-op latency model (cycles = sum over ops of work x cycles-per-unit(op) + fixed overhead) beside
  the build's flat MACs / (MACs-per-cycle x clock) estimate;
- pass/fail per budget item, with a concrete suggestion for each failure that names the op to change.

No torch import: inspecting a model takes about a second.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.config import BudgetConfig, BuildConfig
from edgekd.errors import EdgekdError
from edgekd.export.flatbuffer import drop_bias_quantization
from edgekd.fmt import kb
from edgekd.verify import tflite_info
from edgekd.verify.budget import Budget, budget_gates, latency_estimate
from edgekd.verify.runners import host_latency
from edgekd.verify.tflite_info import ModelInfo, TensorInfo, describe, measure_arena, open_litert

SCHEMA = "edgekd.inspect/1"

# ------------------------------------------------------------------------------------------------
# ESP-NN: which TFLite Micro kernels Espressif replaces with optimized (ESP32-S3: SIMD assembly) ones.
# Source: espressif/esp-tflite-micro, tensorflow/lite/micro/kernels/esp_nn/{add, conv, depthwise_conv,
# fully_connected, mul, pooling, softmax}.cc — one file per op, each calling esp-nn's s8 functions
# (esp_nn_add_elementwise_s8, esp_nn_conv_s8, esp_nn_depthwise_conv_s8, esp_nn_fully_connected_s8,
# esp_nn_mul_elementwise_s8, esp_nn_avg_pool_s8 / esp_nn_max_pool_s8, esp_nn_softmax_s8). Only int8
# (s8) variants are optimized; float and int16 ops, and every other op (PAD, RESHAPE, QUANTIZE, MEAN,
# LOGISTIC, standalone RELU, ...), run TFLite Micro's reference kernels. esp-nn itself also has relu6,
# mean and hard-swish functions, but esp-tflite-micro does not route those TFLite ops to them (a RELU
# fused into a conv is applied by the conv kernel's activation clamp anyway).
ESP_NN_KERNELS = frozenset(
    {
        "ADD",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "MUL",
        "AVERAGE_POOL_2D",
        "MAX_POOL_2D",
        "SOFTMAX",
    }
)

# ------------------------------------------------------------------------------------------------
# Per-op latency model for an ESP32-S3 running esp-tflite-micro (ESP-NN):
#
#     cycles = sum over ops of  work(op) x factor(op) / macs_per_cycle  +  OP_OVERHEAD_CYCLES
#
# `work` is the op's MACs as counted by tflite_info (the build's MAC figure) for MAC-type ops, the
# number of output elements for element-wise / data-movement ops, and output elements x pooling
# window for MAX_POOL_2D (which tflite_info counts as 0 MACs). `factor` is the op's cost per unit of
# work relative to the baseline kernel, ESP-NN's 1x1 CONV_2D, whose throughput is the target's
# `budget.macs_per_cycle` (1.0 for esp32s3). With every factor 1 and no overhead the model reduces to
# the build's flat estimate MACs / (macs_per_cycle x clock).
#
# Factors are ratios of cycle counts from one table — esp-nn's README, "Kernelwise performance for s8
# versions" on ESP32-S3 (240 MHz, data cache 64 KB; esp-nn v1.0.x) — so the table's memory setup largely
# cancels out. Per-unit cycles of each row, divided by the baseline row's 461,398 / 409,600 = 1.126:
#
#   conv 1x1 64->64, 10x10 in:     409,600 MACs in 461,398 cycles ->  1.13 cyc/MAC  -> 1.0 (baseline)
#   conv 3x3x3 -> 64, 10x10 in:    110,592 MACs in 643,689 cycles ->  5.82 cyc/MAC  -> 5.2 (< 8 in ch)
#   depthwise 3x3x16, 18x18 in:     36,864 MACs in 191,931 cycles ->  5.21 cyc/MAC  -> 4.6
#   avg pool 3x3x16, 16x16 in:      28,224 win. in 160,580 cycles ->  5.69 cyc/unit -> 5.1
#   max pool 3x3x16, 16x16 in:      28,224 win. in  76,747 cycles ->  2.72 cyc/unit -> 2.4
#   fully connected 265 x 3:           795 MACs in   4,439 cycles ->  (4,439 - overhead) / 795
#                                      = 3.70 cyc/MAC -> 3.3
#   elementwise add, 1615 elements:              71,644 cycles    -> 44.4 cyc/elem  -> 39
#   elementwise mul, 1615 elements:              30,950 cycles    -> 19.2 cyc/elem  -> 17
#   conv 1x1 in ANSI C (reference):  409,600 MACs in 4,642,259    -> 11.3 cyc/MAC   -> 10 (reference)
#   (pooling rows assume stride 1, valid padding: 14x14x16 outputs x 9-element windows)
#
# Ops without an ESP-NN kernel run TFLite Micro's portable reference kernels
# (tensorflow/lite/kernels/internal/reference/*.h): their per-unit cost is taken as the ANSI C conv's
# 11.3 cycles per inner-loop step (factor 10) — requantizing QUANTIZE, MEAN, LOGISTIC, TANH, ... —
# except pure data movement: RESHAPE copies its input (memcpy, ~4 B/cycle: factor 0.25) and
# PAD / CONCATENATION / TRANSPOSE / slicing copy element by element with index arithmetic (estimated
# at 2 cycles per element: factor 2). Float ops never reach ESP-NN (s8 only) and use factor 10.
#
# OP_OVERHEAD_CYCLES covers TFLite Micro's per-op dispatch and the kernel's prologue (tensor lookups,
# per-channel quantization pointers, scratch setup). 1,500 cycles (6 us at 240 MHz) is an estimate,
# bounded by the smallest ESP-NN measurement above (a whole 795-MAC FULLY_CONNECTED call: 4,439 cycles).
#
# Cross-check: esp-tflite-micro's README reports Person Detection (MobileNet v1 0.25, 96x96x1,
# ~7.2 M MACs: 6.2 M pointwise, 0.8 M depthwise, 0.17 M in the 1-channel first conv) at 54 ms with
# ESP-NN on an ESP32-S3 at 240 MHz. This model predicts 45 ms at 1.0 MAC/cycle (50 ms at the table's
# measured 0.89); the flat MACs / (1.0 x 240 MHz) estimate predicts 30 ms.
OP_OVERHEAD_CYCLES = 1500
_REFERENCE_FACTOR = 10.0


@dataclass(frozen=True)
class OpCost:
    """How one op's cycles are estimated: `unit` of work, cost per unit vs the baseline, and why."""

    unit: str  # "mac" (tflite_info's MACs), "element" (output elements), "window" (outputs x window)
    factor: float
    source: str


OP_COSTS: dict[str, OpCost] = {
    "CONV_2D": OpCost("mac", 1.0, "esp-nn S3 conv 1x1 64->64: 0.89 MAC/cycle (the baseline)"),
    "CONV_2D/shallow": OpCost("mac", 5.2, "esp-nn S3 conv 3x3, 3 input channels: 0.17 MAC/cycle"),
    "DEPTHWISE_CONV_2D": OpCost("mac", 4.6, "esp-nn S3 depthwise 3x3x16: 0.19 MAC/cycle"),
    "FULLY_CONNECTED": OpCost("mac", 3.3, "esp-nn S3 fully connected 265x3: 3.7 cycles/MAC"),
    "AVERAGE_POOL_2D": OpCost("mac", 5.1, "esp-nn S3 avg pool 3x3x16: 5.7 cycles/window element"),
    "MAX_POOL_2D": OpCost("window", 2.4, "esp-nn S3 max pool 3x3x16: 2.7 cycles/window element"),
    "ADD": OpCost("element", 39.0, "esp-nn S3 elementwise add: 44 cycles/element"),
    "MUL": OpCost("element", 17.0, "esp-nn S3 elementwise mul: 19 cycles/element"),
    "SOFTMAX": OpCost("element", _REFERENCE_FACTOR, "no esp-nn figure: reference per-element cost"),
    "MEAN": OpCost("mac", _REFERENCE_FACTOR, "TFLM reference reduce: ANSI C cost per element"),
    "RESHAPE": OpCost("element", 0.25, "TFLM reshape: memcpy of the input"),
    "SQUEEZE": OpCost("element", 0.25, "TFLM squeeze: memcpy of the input"),
    "EXPAND_DIMS": OpCost("element", 0.25, "TFLM expand_dims: memcpy of the input"),
    "PAD": OpCost("element", 2.0, "TFLM reference pad: element copy with index arithmetic"),
    "CONCATENATION": OpCost("element", 2.0, "TFLM reference concatenation: element copy"),
    "TRANSPOSE": OpCost("element", 2.0, "TFLM reference transpose: element copy"),
    "STRIDED_SLICE": OpCost("element", 2.0, "TFLM reference strided slice: element copy"),
    "SLICE": OpCost("element", 2.0, "TFLM reference slice: element copy"),
}
_DEFAULT_MAC_COST = OpCost("mac", _REFERENCE_FACTOR, "TFLM reference kernel: esp-nn ANSI C conv rate")
_DEFAULT_ELEMENT_COST = OpCost(
    "element", _REFERENCE_FACTOR, "TFLM reference kernel: esp-nn ANSI C cost per element"
)

# What to do about an op the target does not link, beyond registering it in the firmware.
_OP_ALTERNATIVES = {
    "MEAN": "pool with AVERAGE_POOL_2D instead (torch: AvgPool2d(kernel=final feature map), not "
    "AdaptiveAvgPool2d(1) or mean)",
    "SOFTMAX": "drop the final softmax (the argmax of the logits is the same class)",
    "LOGISTIC": "use a ReLU-family activation (or drop a final sigmoid and threshold the logit)",
    "TANH": "use a ReLU-family activation",
    "HARD_SWISH": "use ReLU or ReLU6",
    "DEQUANTIZE": "convert with full-integer quantization (int8 input and output): no float boundary",
    "CONCATENATION": "use one wider conv instead of parallel branches that are concatenated",
    "MUL": "fold the scaling into the preceding conv's weights",
    "BATCH_MATMUL": "use a FULLY_CONNECTED layer (torch: nn.Linear on a flattened input)",
    "SUB": "fold the offset into a bias",
}


# ------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Graph:
    """The op list with tensors resolved, plus which tensors are activations and which are constants."""

    ops: list[dict]
    tensors: dict[int, TensorInfo]
    activations: set[int]


def _graph(path: Path, info: ModelInfo) -> _Graph:
    interp = open_litert(path)
    ops = interp._get_ops_details()
    tensors = {t.index: t for t in info.tensors}
    # Activations live in the arena: graph inputs and every op's outputs. Other op inputs are constants
    # (weights, biases, shapes) stored in the flatbuffer, i.e. in flash.
    activations = {t.index for t in info.inputs} | {int(i) for op in ops for i in op["outputs"] if i >= 0}
    return _Graph(ops, tensors, activations)


def _nbytes(t: TensorInfo) -> int:
    return math.prod(t.shape) * np.dtype(t.dtype).itemsize


def _shape(t: TensorInfo) -> str:
    return "x".join(str(d) for d in t.shape) or "scalar"


def _pool_window(path: Path, op_index: int) -> int:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema_fb

    model = schema_fb.Model.GetRootAsModel(path.read_bytes(), 0)
    table = model.Subgraphs(0).Operators(op_index).BuiltinOptions()
    opts = schema_fb.Pool2DOptions()
    opts.Init(table.Bytes, table.Pos)
    return opts.FilterHeight() * opts.FilterWidth()


def _cost_key(op: dict, g: _Graph) -> str:
    name = op["op_name"]
    if name == "CONV_2D":
        ins = [g.tensors[int(i)] for i in op["inputs"] if i >= 0]
        if len(ins) > 1 and len(ins[1].shape) == 4 and ins[1].shape[3] < 8:
            return "CONV_2D/shallow"
    return name


def _is_float_op(op: dict, g: _Graph) -> bool:
    idx = [int(i) for i in (*op["inputs"], *op["outputs"]) if i >= 0]
    return any(g.tensors[i].dtype in ("float16", "float32", "float64") for i in idx if i in g.tensors)


def per_op_latency(path: Path, info: ModelInfo, g: _Graph, budget: BudgetConfig) -> dict[str, Any] | None:
    """The per-op cost model (see OP_COSTS) for an MCU target; None for targets timed on the host."""
    if budget.clock_mhz is None or budget.macs_per_cycle is None:
        return None
    rows = []
    total_cycles = 0.0
    macs_total = 0
    for op in g.ops:
        name = op["op_name"]
        macs = tflite_info.count_macs(path, [op], g.tensors)
        macs_total += macs
        out = g.tensors.get(int(op["outputs"][0])) if len(op["outputs"]) else None
        elements = math.prod(out.shape) if out is not None else 0
        is_float = _is_float_op(op, g)
        key = _cost_key(op, g)
        if is_float:
            cost = _DEFAULT_MAC_COST if macs else _DEFAULT_ELEMENT_COST
            cost = OpCost(cost.unit, cost.factor, "float op: no esp-nn kernel (s8 only); reference rate")
        else:
            cost = OP_COSTS.get(key) or (_DEFAULT_MAC_COST if macs else _DEFAULT_ELEMENT_COST)
        if cost.unit == "mac":
            work = macs
        elif cost.unit == "window":
            work = elements * _pool_window(path, op["index"])
        else:
            work = elements
        cycles = work * cost.factor / budget.macs_per_cycle + OP_OVERHEAD_CYCLES
        total_cycles += cycles
        rows.append(
            {
                "index": int(op["index"]),
                "op": name,
                "cost_key": key,
                "macs": macs,
                "work": work,
                "unit": cost.unit,
                "factor": cost.factor,
                "cycles": round(cycles),
                "ms": cycles / (budget.clock_mhz * 1e3),
                "esp_nn": name in ESP_NN_KERNELS and not is_float,
                "source": cost.source,
            }
        )
    if macs_total != info.macs:  # the per-op counts must add up to the build's MAC figure
        raise RuntimeError(f"per-op MACs {macs_total} != describe() MACs {info.macs} for {path}")
    for r in rows:
        r["share"] = r["cycles"] / total_cycles if total_cycles else 0.0
    return {
        "ms": total_cycles / (budget.clock_mhz * 1e3),
        "cycles": round(total_cycles),
        "clock_mhz": budget.clock_mhz,
        "macs_per_cycle": budget.macs_per_cycle,
        "op_overhead_cycles": OP_OVERHEAD_CYCLES,
        "ops": rows,
        "source": "per-op model: esp-nn ESP32-S3 kernel benchmarks (edgekd/verify/inspect.py OP_COSTS)",
    }


# ------------------------------------------------------------------------------------------------


def _peak_activation_op(g: _Graph) -> dict[str, Any] | None:
    """The op whose activation inputs + outputs are largest: a lower bound on the arena, and where to cut."""
    best = None
    for op in g.ops:
        ins = [g.tensors[int(i)] for i in op["inputs"] if i >= 0 and int(i) in g.activations]
        outs = [g.tensors[int(i)] for i in op["outputs"] if i >= 0 and int(i) in g.tensors]
        total = sum(_nbytes(t) for t in ins + outs)
        if best is None or total > best["bytes"]:
            best = {
                "index": int(op["index"]),
                "op": op["op_name"],
                "bytes": total,
                "inputs": [_shape(t) for t in ins],
                "outputs": [_shape(t) for t in outs],
            }
    return best


def _heaviest_weights(g: _Graph) -> dict[str, Any] | None:
    """The op whose constant inputs (weights, bias) take the most flash, and the total of all constants."""
    best = None
    seen: set[int] = set()
    total = 0
    for op in g.ops:
        consts = [
            g.tensors[int(i)]
            for i in op["inputs"]
            if i >= 0 and int(i) not in g.activations and int(i) in g.tensors
        ]
        fresh = [t for t in consts if t.index not in seen]
        seen.update(t.index for t in fresh)
        total += sum(_nbytes(t) for t in fresh)
        size = sum(_nbytes(t) for t in consts)
        if consts and (best is None or size > best["bytes"]):
            weights = max(consts, key=_nbytes)
            best = {
                "index": int(op["index"]),
                "op": op["op_name"],
                "bytes": size,
                "shape": _shape(weights),
                "dtype": weights.dtype,
            }
    if best is not None:
        best["total_bytes"] = total
    return best


def flash_breakdown(path: Path) -> dict[str, int]:
    """Where the flatbuffer's bytes go: constant buffers, quantization parameters, tensor names, the rest.

    Tensor names and most metadata are never read by TFLite Micro, so a model over its flash budget
    because of them can be fixed without retraining.
    """
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema_fb

    data = path.read_bytes()
    model = schema_fb.Model.GetRootAsModel(data, 0)
    buffers = sum(model.Buffers(i).DataLength() for i in range(model.BuffersLength()))
    quant = names = 0
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            names += len(t.Name() or b"")
            q = t.Quantization()
            if q is not None:
                quant += 4 * (q.ScaleLength() + q.MinLength() + q.MaxLength()) + 8 * q.ZeroPointLength()
    return {
        "total": len(data),
        "buffers": buffers,
        "quantization_params": quant,
        "tensor_names": names,
        "other": len(data) - buffers - quant - names,
    }


def resolver_call(op: str) -> str:
    """TFLite Micro's MicroMutableOpResolver method for a builtin op, e.g. CONV_2D -> AddConv2D()."""
    return "Add" + "".join(p if p[0].isdigit() else p.capitalize() for p in op.split("_")) + "()"


def _suggest_arena(value: int, limit: int, arena: int, headroom: float, peak: dict | None) -> str:
    text = f"arena {kb(value)} (host {kb(arena)} + {headroom:.0%} headroom) > {kb(limit)}"
    if peak:
        text += (
            f": the peak is at op #{peak['index']} {peak['op']} (activations "
            f"{' + '.join(peak['inputs'] + peak['outputs'])} = {kb(peak['bytes'])})"
        )
    return (
        text + "; shrink the activations there: fewer channels (edgekd: --set student.width=S, or a "
        "smaller student.arch) or stride 2 in the first conv, which quarters every later activation"
    )


def _suggest_model_bytes(
    value: int, limit: int, info: ModelInfo, big: dict | None, flash: dict[str, int], bias_scales: int
) -> str:
    text = (
        f"model {kb(value)} > {kb(limit)}: buffers (weights, biases, shapes) {kb(flash['buffers'])}, "
        f"quantization parameters {kb(flash['quantization_params'])}, tensor names "
        f"{kb(flash['tensor_names'])}"
    )
    if big:
        text += (
            f"; the heaviest op is #{big['index']} {big['op']} ({big['shape']} {big['dtype']} weights, "
            f"{kb(big['bytes'])} with bias)"
        )
    text += "; fewer channels (edgekd: --set student.width=S, or a smaller student.arch)"
    if flash["tensor_names"] > value - limit:
        text += "; or strip the tensor names, which TFLite Micro never reads"
    if bias_scales:
        text += (
            f"; or --set export.drop_bias_scales=true ({kb(bias_scales)} of conv bias scales that TFLite "
            "Micro never reads)"
        )
    if not info.is_fully_int8:
        text += ", and full-integer quantization (int8 weights are 4x smaller than float32)"
    return text


def _suggest_ops(outside: list[str], target: str) -> str:
    parts = []
    for op in outside:
        alt = _OP_ALTERNATIVES.get(op)
        parts.append(
            f"{op}: " + (f"{alt}, or " if alt else "") + f"register {resolver_call(op)} in the firmware"
        )
    return f"ops not in {target}'s op set: " + "; ".join(parts) + " (then add it to the target's budget.ops)"


def _suggest_int8(not_int8: list[str]) -> str:
    shown = ", ".join(not_int8[:3]) + (f" and {len(not_int8) - 3} more" if len(not_int8) > 3 else "")
    return (
        f"not fully INT8: {shown}; convert with full-integer quantization and int8 input "
        "and output (edgekd's export does; TFLiteConverter: a representative dataset, "
        "inference_input_type/inference_output_type = int8)"
    )


def _suggest_latency(value: float, limit: float, per_op: dict | None) -> str:
    text = f"latency {value:.2f} ms > {limit:g} ms"
    if per_op and per_op["ops"]:
        top = max(per_op["ops"], key=lambda r: r["cycles"])
        text += (
            f": the costliest op is #{top['index']} {top['op']} ({top['share']:.0%} of the per-op model's "
            "cycles)"
        )
    return text + "; fewer MACs there: fewer channels (--set student.width=S) or stride 2 in the first conv"


def _checks(
    cfg: BuildConfig,
    budget: Budget,
    info: ModelInfo,
    g: _Graph,
    arena_error: str | None,
    per_op: dict | None,
) -> list[dict[str, Any]]:
    """The build's budget gates (`budget_gates`: same names, values and limits as parity.json), each
    failing one with a suggestion that names what to change."""
    b = cfg.budget
    out = budget_gates(cfg, budget)
    for gate in out:
        if gate["passed"]:
            continue
        name = gate["name"]
        if name == "model_bytes":
            content, bias_scales = Path(info.path).read_bytes(), 0
            if cfg.verify.primary == "tflm" and not cfg.export.drop_bias_scales:
                smaller, channels = drop_bias_quantization(content)
                bias_scales = len(content) - len(smaller) if channels else 0
            gate["suggestion"] = _suggest_model_bytes(
                budget.model_bytes,
                b.model_bytes or 0,
                info,
                _heaviest_weights(g),
                flash_breakdown(Path(info.path)),
                bias_scales,
            )
        elif name == "arena_bytes_with_headroom" and gate["value"] is None:
            gate["suggestion"] = f"TFLite Micro could not allocate the model: {arena_error}"
        elif name == "arena_bytes_with_headroom":
            gate["suggestion"] = _suggest_arena(
                gate["value"],
                b.arena_bytes or 0,
                budget.arena_bytes or 0,
                b.arena_headroom,
                _peak_activation_op(g),
            )
        elif name == "ops_supported":
            gate["suggestion"] = _suggest_ops(gate["value"], cfg.target)
        elif name == "fully_int8":
            gate["suggestion"] = _suggest_int8(budget.not_int8)
        elif name == "latency_ms" and budget.latency_ms is not None:
            gate["suggestion"] = _suggest_latency(budget.latency_ms, b.latency_ms or 0.0, per_op)
    return out


def _tensor_record(t: TensorInfo, g: _Graph, inputs: set[int], outputs: set[int]) -> dict[str, Any]:
    if t.index in inputs:
        kind = "input"
    elif t.index in outputs:
        kind = "output"
    elif t.index in g.activations:
        kind = "activation"
    else:
        kind = "constant"
    if not t.scales:
        quant = "none"
    elif len(t.scales) == 1:
        quant = "per-tensor"
    else:
        quant = f"per-channel (axis {t.quantized_dimension})"
    rec: dict[str, Any] = {
        "index": t.index,
        "name": t.name,
        "kind": kind,
        "dtype": t.dtype,
        "shape": list(t.shape),
        "bytes": _nbytes(t),
        "quantization": quant,
    }
    if t.scale is not None:
        rec["scale"], rec["zero_point"] = t.scale, t.zero_point
    return rec


def inspect_model(path: str | os.PathLike[str], cfg: BuildConfig, time_host: bool = True) -> dict[str, Any]:
    """Everything a target needs to know about a .tflite model, as a JSON-serialisable record.

    `record["budget"]` has exactly the keys and values of `parity.json`'s `budget` for the same model
    and target (latency too, where the target estimates it; a host-timed latency is re-timed here).
    time_host=False skips host timing for targets without a latency estimate (latency_ms is then None).
    """
    p = Path(path)
    if not p.exists():
        raise EdgekdError(f"{p}: no such model file")
    if p.is_dir():
        raise EdgekdError(f"{p}: is a directory; pass the .tflite file (e.g. {p / 'model.tflite'})")
    info = describe(p)
    g = _graph(p, info)
    arena: int | None = None
    arena_error = None
    try:
        arena = measure_arena(p)
    except EdgekdError as e:
        arena_error = str(e).split("\n", 1)[0]
    b = cfg.budget
    per_op = per_op_latency(p, info, g, b)
    estimate = latency_estimate(info.macs, b)
    if estimate is not None:
        latency, latency_source = estimate
    elif time_host:
        latency, latency_source = host_latency(p, cfg.verify.primary)
    else:
        latency, latency_source = None, "not timed"
    # The build measures the arena only for targets that run TFLite Micro; `budget` mirrors it exactly,
    # and `record["arena"]` keeps the measurement for every target.
    budget_arena = arena if "tflm" in cfg.verify.runtimes else None
    budget = Budget(
        info.flash_bytes, budget_arena, info.op_set, info.macs, info.is_fully_int8, info.not_int8,
        latency, latency_source,
    )  # fmt: skip
    outside = sorted(set(info.op_set) - set(b.ops)) if b.ops is not None else []
    esp_nn = cfg.target.startswith("esp32") and cfg.verify.primary == "tflm"
    float_ops = {op["op_name"] for op in g.ops if _is_float_op(op, g)}
    accelerated = (
        sorted(o for o in info.op_set if o in ESP_NN_KERNELS and o not in float_ops) if esp_nn else []
    )
    counts = Counter(info.ops)
    checks = _checks(cfg, budget, info, g, arena_error, per_op)
    inputs = {t.index for t in info.inputs}
    outputs = {t.index for t in info.outputs}
    return {
        "schema": SCHEMA,
        "model": str(p),
        "target": cfg.target,
        "primary": cfg.verify.primary,
        "inputs": [_tensor_record(t, g, inputs, outputs) for t in info.inputs],
        "outputs": [_tensor_record(t, g, inputs, outputs) for t in info.outputs],
        "tensors": [_tensor_record(t, g, inputs, outputs) for t in info.tensors],
        "fully_int8": info.is_fully_int8,
        "float_tensors": info.float_tensors,
        "not_int8": info.not_int8,
        "ops": {
            "sequence": info.ops,
            "counts": {op: counts[op] for op in info.op_set},
            "outside_target": outside,
            "target_op_set": b.ops,
            "esp_nn_accelerated": accelerated if esp_nn else None,
            "reference_kernels": sorted(set(info.op_set) - set(accelerated)) if esp_nn else None,
        },
        "model_bytes": info.flash_bytes,
        "flash": flash_breakdown(p),
        "arena": {
            "bytes": arena,
            "headroom": b.arena_headroom,
            "with_headroom": replace(budget, arena_bytes=arena).arena_with_headroom(b.arena_headroom),
            "in_budget": "tflm" in cfg.verify.runtimes,
            "source": "TFLite Micro host interpreter (recording allocator), confirmed to allocate",
            "error": arena_error,
            "peak_op": _peak_activation_op(g),
        },
        "macs": info.macs,
        "latency": {"ms": latency, "source": latency_source, "per_op_model": per_op},
        "budget": budget.as_dict(b.arena_headroom),
        "checks": checks,
        "passed": all(c["passed"] for c in checks),
    }
