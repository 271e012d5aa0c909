"""Per-layer float-vs-INT8 comparison: which layer of the exported model loses the accuracy.

Parity says *whether* the INT8 model agrees with the float student; when it does not, this module
says *where*, in the spirit of onnxruntime's QDQ debugging tools (`create_activation_matching`).
The same held-out clips run through

- the INT8 TFLite model on LiteRT's reference kernels (TFLite Micro's arithmetic) with
  `experimental_preserve_all_tensors=True`, every intermediate tensor read back and dequantized;
- the float student (`weights/float.pt`): what parity's gates compare against;
- the same network with the QAT-trained weights (`weights/qat.pt`) in float: INT8 vs this is the
  cost of the 8-bit grid alone, and float vs this is how far QAT moved the weights;
- the fake-quant QAT graph (rebuilt with `load_qat_student`): what the INT8 model was converted
  from, so INT8 vs this isolates the converter and the kernels (a step or two of rounding when
  healthy; a trained model's deep layers drift to ~30 dB as those steps accumulate).

Matching layers. litert-torch names every output tensor after the PyTorch modules it came from
(`<Class>_<attr>/...` per level of `nn_module_stack`, several joined by `;` when ops were fused), so
each TFLite op is *anchored* to the module it computes (a conv, a residual block's ADD, the pool).
Ops that only move data (PAD, RESHAPE, TRANSPOSE) join their anchor's layer; an int8->int8 QUANTIZE
(requantization) becomes that layer's output. The float value of a layer is the output of the last
module that finishes before the next layer's anchor module runs and has the same number of elements:
that absorbs what TFLite folds or fuses into the op (batch norm, ReLU, eval-mode dropout) without a
per-architecture table. The graph output (named `serving_default_...`, no module) is anchored to the
first leaf module after the previous anchor whose output has its size (the classifier). In the QAT
graph the same point is the last fake-quantizer on the single-user chain after the anchor's last
node; a chain without one means the tensor's INT8 grid was never trained (`trained_quantizer`).

Metrics are cumulative (each layer runs on the INT8 model's own input, as on the device): SQNR (dB)
and relative L2 error over all clips, mean per-clip cosine similarity. A layer's `error_added` is its
noise-to-signal ratio (NSR = relative error squared, capped at 1) minus the previous layer's: how much
error *this* layer added. The layer adding the most is the `worst` one; ratios rather than dB
differences, because 80 -> 60 dB is harmless and 35 -> 20 dB is not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.errors import EdgekdError
from edgekd.export.flatbuffer import tensor_names

# SQNR of an exact match is infinite; JSON has no infinity, so exact layers report this ceiling.
MAX_SQNR_DB = 100.0
# Ops that only move or pad data: they belong to their anchor module's layer but are not its output.
_LAYOUT_OPS = frozenset({"RESHAPE", "PAD", "PADV2", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS"})
# Requantization (int8 -> int8) and boundary ops: the layer's value at a new scale.
_REQUANT_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


@dataclass
class _Record:
    """One PyTorch module's output during the float forward pass, in completion order."""

    path: str
    leaf: bool
    output: np.ndarray


@dataclass
class _TfliteLayer:
    """A run of TFLite ops anchored to one module; `tensor` is the index of the layer's output."""

    anchor: str | None
    ops: list[str]
    tensor: int
    shape: tuple[int, ...]
    scale: float | None
    zero_point: int


def _class_fullname(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _hierarchy_names(model: torch.nn.Module) -> dict[str, str]:
    """litert-torch's name for each module (`backend/debuginfo/_build.py`) -> the module's path."""
    names: dict[str, str] = {}
    modules = dict(model.named_modules())
    for path in modules:
        parts = [_class_fullname(type(model))]
        prefix: list[str] = []
        for attr in path.split(".") if path else []:
            prefix.append(attr)
            parts.append(f"{_class_fullname(type(modules['.'.join(prefix)]))}_{attr}")
        names["/".join(parts)] = path
    return names


def _anchor(tensor_name: str, names: dict[str, str]) -> str | None:
    """The module a TFLite tensor was computed by: the last module named in it (fused ops list the
    activation first and the conv last; the conv is what ran)."""
    paths = [names[entry] for entry in tensor_name.split(";") if entry in names]
    return paths[-1] if paths else None


def _float_records(model: torch.nn.Module, x: torch.Tensor) -> list[_Record]:
    """Every module's output, in the order the modules finish (children before their container)."""
    records: list[_Record] = []
    hooks = []
    for path, module in model.named_modules():
        leaf = next(module.children(), None) is None

        def hook(_m: torch.nn.Module, _i: Any, out: Any, path: str = path, leaf: bool = leaf) -> None:
            if isinstance(out, torch.Tensor):
                records.append(_Record(path, leaf, out.detach().float().numpy().copy()))

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return records


def _tflite_layers(interp: Any, tensor_name: list[str], names: dict[str, str]) -> list[_TfliteLayer]:
    """Group the TFLite ops into layers by anchor module, in execution order."""
    details = {d["index"]: d for d in interp.get_tensor_details()}
    groups: list[tuple[str | None, list[dict]]] = []
    for op in interp._get_ops_details():
        outs = [int(i) for i in op["outputs"] if int(i) >= 0]
        if not outs:
            continue
        anchor = _anchor(tensor_name[outs[0]], names)
        if anchor is not None and groups and groups[-1][0] == anchor:
            groups[-1][1].append(op)
        elif op["op_name"] in _REQUANT_OPS and groups and anchor is None:
            groups[-1][1].append(op)  # an unnamed requantization continues the layer before it
        else:
            groups.append((anchor, [op]))
    layers = []
    for anchor, ops in groups:
        valued = [op for op in ops if op["op_name"] not in _LAYOUT_OPS]
        if not valued or all(op["op_name"] in _REQUANT_OPS for op in valued):
            continue  # pure data movement (the input RESHAPE) or a lone boundary op
        out = details[int(valued[-1]["outputs"][0])]
        q = out["quantization_parameters"]
        scale = float(q["scales"][0]) if len(q["scales"]) == 1 else None
        zp = int(q["zero_points"][0]) if len(q["zero_points"]) == 1 else 0
        layers.append(
            _TfliteLayer(
                anchor,
                [op["op_name"] for op in valued],
                int(out["index"]),
                tuple(int(s) for s in out["shape"]),
                scale,
                zp,
            )
        )
    return layers


def _match(layers: list[_TfliteLayer], records: list[_Record]) -> list[tuple[_TfliteLayer, str, int]]:
    """Pair each TFLite layer with (its name, the float record holding its value); unmatched are dropped."""
    first = {}
    for i, r in enumerate(records):
        first.setdefault(r.path, i)
    numel = [math.prod(layer.shape[1:]) for layer in layers]
    starts: list[int | None] = []
    labels: list[str | None] = []
    prev = -1
    for layer, size in zip(layers, numel, strict=True):
        start, label = None, layer.anchor
        if layer.anchor is not None and layer.anchor in first and first[layer.anchor] > prev:
            start = first[layer.anchor]
        elif layer.anchor is None:  # the graph output: the first leaf of its size after the last anchor
            for i in range(prev + 1, len(records)):
                r = records[i]
                if r.leaf and math.prod(r.output.shape[1:]) == size:
                    start, label = i, r.path
                    break
        starts.append(start)
        labels.append(label)
        if start is not None:
            prev = start
    matched = []
    for k, (layer, size, start, label) in enumerate(zip(layers, numel, starts, labels, strict=True)):
        if start is None or label is None:
            continue
        end = next((s for s in starts[k + 1 :] if s is not None), len(records))
        candidates = [i for i in range(start, end) if math.prod(records[i].output.shape[1:]) == size]
        # Prefer a value in the TFLite tensor's own layout: a later flatten (tiny_conv's) has the same
        # size but NCHW-flattened element order, which no transpose of the NHWC tensor reproduces.
        same_layout = [i for i in candidates if _same_layout(records[i].output.shape, layer.shape)]
        if candidates:
            matched.append((layer, label, (same_layout or candidates)[-1]))
    return matched


def _same_layout(torch_shape: tuple[int, ...], tflite_shape: tuple[int, ...]) -> bool:
    """Whether a PyTorch activation (NCHW or [N, D]) and a TFLite one (NHWC or [N, D]) hold the same
    elements in orders `_to_torch_layout` can align."""
    t, f = tuple(torch_shape[1:]), tuple(tflite_shape[1:])
    if len(t) == 3 and len(f) == 3:
        return t == (f[2], f[0], f[1])
    return math.prod(t) == math.prod(f) and sum(d > 1 for d in t) <= 1 and sum(d > 1 for d in f) <= 1


def _to_torch_layout(values: np.ndarray, like: tuple[int, ...]) -> np.ndarray:
    """A TFLite activation (NHWC) in the element order of the PyTorch one (NCHW), flattened per clip."""
    if values.ndim == 4 and len(like) == 4 and values.shape[1:] == (like[2], like[3], like[1]):
        values = values.transpose(0, 3, 1, 2)
    return values.reshape(len(values), -1)


def _metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """SQNR, relative L2 error and mean per-clip cosine similarity of `got` against `ref` [N, D]."""
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    signal, noise = float(np.sum(ref**2)), float(np.sum((ref - got) ** 2))
    if noise == 0.0:
        sqnr = MAX_SQNR_DB
    elif signal == 0.0:
        sqnr = -MAX_SQNR_DB
    else:
        sqnr = float(np.clip(10 * np.log10(signal / noise), -MAX_SQNR_DB, MAX_SQNR_DB))
    rel = math.sqrt(noise / signal) if signal > 0 else (0.0 if noise == 0 else math.inf)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    dots = np.sum(ref * got, axis=1)
    both_zero = (np.linalg.norm(ref, axis=1) == 0) & (np.linalg.norm(got, axis=1) == 0)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(both_zero, 1.0, 0.0))
    return {
        "sqnr_db": round(sqnr, 3),
        "rel_error": float(min(rel, 1e6)),
        "cosine": float(np.mean(cos)),
        "max_abs_diff": float(np.max(np.abs(ref - got))),
    }


def _is_fake_quant(graph_module: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    from torchao.quantization.pt2e import FakeQuantize

    return node.op == "call_module" and isinstance(graph_module.get_submodule(node.target), FakeQuantize)


def _fake_quant_points(
    graph_module: torch.fx.GraphModule, anchors: Sequence[str]
) -> list[tuple[str, bool] | None]:
    """For each anchor module, the QAT-graph node holding the value the TFLite layer computes, and
    whether that node is a fake-quantizer (i.e. training saw this tensor's INT8 grid).

    Start at the anchor's last node and follow single-user edges through what TFLite folds into the
    op (batch norm, activation, flatten, eval dropout, the quantizers themselves) until a node of
    another layer's module; the value is the last fake-quantizer passed, else the last node reached.
    `None` where the anchor has no node in the graph.
    """
    nodes = list(graph_module.graph.nodes)
    scopes = {n: [p for p, _ in (n.meta.get("nn_module_stack") or {}).values()] for n in nodes}
    # The innermost module a node was traced in; a node of another anchor starts the next layer.
    innermost = {n: max(paths, key=len) if paths else "" for n, paths in scopes.items()}
    anchor_set = set(anchors)
    points: list[tuple[str, bool] | None] = []
    for anchor in anchors:
        inside = [n for n in nodes if anchor in scopes[n]]
        if not inside:
            points.append(None)
            continue
        node, last_fq = inside[-1], None
        while True:
            if _is_fake_quant(graph_module, node):
                last_fq = node
            users = [u for u in node.users if u.op != "output"]
            if len(users) != 1 or innermost[users[0]] in anchor_set - {anchor}:
                break
            node = users[0]
        points.append((last_fq.name, True) if last_fq is not None else (node.name, False))
    return points


def _capture_nodes(
    graph_module: torch.fx.GraphModule, x: torch.Tensor, wanted: set[str]
) -> dict[str, np.ndarray]:
    """Outputs of the named nodes of an FX graph for input `x`."""
    captured: dict[str, np.ndarray] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            result = super().run_node(n)
            if n.name in wanted and isinstance(result, torch.Tensor):
                captured[n.name] = result.detach().float().numpy().copy()
            return result

    with torch.no_grad():
        Recorder(graph_module).run(x)
    return captured


def _input_fake_quant(graph_module: torch.fx.GraphModule) -> str | None:
    """The fake-quantize node applied to the model input: forward from the input placeholder."""
    node = next((n for n in graph_module.graph.nodes if n.op == "placeholder"), None)
    while node is not None:
        if _is_fake_quant(graph_module, node):
            return node.name

        users = [u for u in node.users if u.op != "call_module" or "guard" not in str(u.target)]
        node = users[0] if len(users) == 1 else None
    return None


def _open_preserving(path: Path) -> Any:
    """LiteRT reference kernels (TFLite Micro's arithmetic) keeping every intermediate tensor."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if not path.is_file() or path.stat().st_size == 0:
        raise EdgekdError(f"{path}: missing or empty TFLite model")
    try:
        interp = Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
            experimental_preserve_all_tensors=True,
        )
    except (ValueError, RuntimeError) as e:
        raise EdgekdError(f"{path}: not a usable TFLite model ({e})") from e
    interp.allocate_tensors()
    return interp


def compare_layers(build_dir: Path, features: np.ndarray, max_clips: int = 32) -> list[dict[str, Any]]:
    """Per-layer comparison of a build's INT8 TFLite model with its float student.

    `features` are held-out float features [N, T, F] (the build's frontend); the first `max_clips`
    are used. Returns one row per matched layer in execution order, starting with the input
    quantization:
    `{index, layer, op, shape, scale, sqnr_db, rel_error, cosine, max_abs_diff, error_added,
    sqnr_qat_float_db, int8_range, clipped_fraction, sqnr_fake_quant_db, max_steps_fake_quant,
    trained_quantizer, worst}`; `layer` is the PyTorch module path (`blocks.2.0.0`), metrics are
    JSON-safe floats (SQNR capped at +-MAX_SQNR_DB), fake-quant fields are None where the QAT graph
    has no matching node. Exactly one row has `worst: True` and a `cause`: "conversion",
    "quantization" or "qat_drift".
    """
    from edgekd.build_dir import BuildDir
    from edgekd.models.restore import load_qat_student, make_student

    build = BuildDir(build_dir)
    cfg = build.config()
    weights = build.weights
    for name in ("float.pt", "qat.pt"):
        if not (weights / name).is_file():
            raise EdgekdError(f"{build.path}: weights/{name} is missing; per-layer comparison needs it")
    x = np.asarray(features, dtype=np.float32)[: max(1, max_clips)]
    if x.ndim != 3 or len(x) == 0:
        raise EdgekdError(f"features must be [N, T, F] with N >= 1, got shape {x.shape}")
    xt = torch.from_numpy(x)

    student = make_student(cfg, tuple(x.shape[1:]))
    student.load_state_dict(torch.load(weights / "float.pt", weights_only=True))
    student.eval()
    names = _hierarchy_names(student)
    records = _float_records(student, xt)
    # The same network with the QAT-trained weights and batch-norm statistics, still in float: the
    # QAT state dict names them exactly like the float model (plus the quantizers' own entries).
    qat_state = torch.load(weights / "qat.pt", weights_only=True)
    own = student.state_dict()
    qat_records: list[_Record] | None = None
    if own.keys() <= qat_state.keys():  # else (a QAT graph named differently) that reference is skipped
        student.load_state_dict({k: v for k, v in qat_state.items() if k in own}, strict=True)
        qat_records = _float_records(student, xt)

    interp = _open_preserving(build.tflite)
    matched = _match(_tflite_layers(interp, tensor_names(build.tflite), names), records)
    if not matched:
        raise EdgekdError(
            f"{build.tflite}: no layer could be matched to the float student's modules "
            "(tensor names do not carry litert-torch's module hierarchy)"
        )
    int8_input, int8_values = _run_int8(interp, x, [layer for layer, _, _ in matched])

    # Fake-quant QAT graph: the activations its quantizers emit.
    qat = load_qat_student(cfg, weights, xt[:2])
    fq_input = _input_fake_quant(qat)
    fq_points = [
        (fq_input, True) if fq_input else None,
        *_fake_quant_points(qat, [label for _, label, _ in matched]),
    ]
    fq_values = _capture_nodes(qat, xt, {p[0] for p in fq_points if p is not None})

    in_q = interp.get_input_details()[0]["quantization_parameters"]
    flat_x = x.reshape(len(x), -1)
    points = [
        _Point(
            "input",
            "QUANTIZE (input)",
            tuple(x.shape[1:]),
            float(in_q["scales"][0]),
            int(in_q["zero_points"][0]),
            int8_input,
            flat_x,
            flat_x if qat_records is not None else None,
        )
    ]
    for layer, label, i in matched:
        ref = records[i].output
        ops = [op for op in layer.ops if op not in _REQUANT_OPS] or layer.ops
        points.append(
            _Point(
                label,
                "+".join(ops),
                tuple(ref.shape[1:]),
                layer.scale,
                layer.zero_point,
                _to_torch_layout(int8_values[layer.tensor], ref.shape),
                ref.reshape(len(ref), -1),
                None if qat_records is None else qat_records[i].output.reshape(len(ref), -1),
            )
        )
    rows = []
    for k, (point, fq) in enumerate(zip(points, fq_points, strict=True)):
        fake_quant = None if fq is None else (fq_values.get(fq[0]), fq[1])
        rows.append({"index": k, **_row(point, fake_quant)})
    _mark_worst(rows)
    return rows


def _nsr(sqnr_db: float | None) -> float | None:
    """Noise-to-signal power ratio of an SQNR in dB, capped at 1: below 0 dB nothing of the signal is
    left, so a layer downstream of a broken one cannot "add" more error than the broken one did."""
    return None if sqnr_db is None else min(10.0 ** (-sqnr_db / 10.0), 1.0)


def _added(rows: Sequence[dict[str, Any]], i: int, key: str) -> float | None:
    """How much noise-to-signal ratio row i adds over row i-1 against one reference (`key` is its SQNR)."""
    now = _nsr(rows[i].get(key))
    before = _nsr(rows[i - 1].get(key)) if i > 0 else 0.0
    return None if now is None or before is None else now - before


def _mark_worst(rows: list[dict[str, Any]]) -> None:
    """Set `error_added` on every row, `worst` on the one adding the most error against the float
    student, and that row's `cause`: the reference that accounts for at least half of what it adds.

    Noise powers of independent error sources add, so against the float student a layer's added error
    is roughly (QAT drift) + (8-bit grid) + (conversion); the fake-quant reference sees only the last,
    the QAT-float reference the last two.
    """
    for i, r in enumerate(rows):
        r["error_added"] = float(_added(rows, i, "sqnr_db") or 0.0)
    worst = max(range(len(rows)), key=lambda i: rows[i]["error_added"])
    for i, r in enumerate(rows):
        r["worst"] = i == worst
    w = rows[worst]
    fq, qf = _added(rows, worst, "sqnr_fake_quant_db"), _added(rows, worst, "sqnr_qat_float_db")
    if fq is not None and fq >= 0.5 * w["error_added"]:
        w["cause"] = "conversion"
    elif qf is not None and qf >= 0.5 * w["error_added"]:
        w["cause"] = "quantization"
    else:
        w["cause"] = "qat_drift"


def _run_int8(
    interp: Any, x: np.ndarray, layers: list[_TfliteLayer]
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The dequantized INT8 input [N, D] and every layer's dequantized output, one clip at a time
    (models are exported with batch 1), quantized exactly as the runners and the firmware do."""
    from edgekd.verify.runners import dequantize, quantize_input

    inp = interp.get_input_details()[0]
    q = inp["quantization_parameters"]
    if len(q["scales"]) != 1:
        raise EdgekdError("per-layer comparison needs a per-tensor quantized model input")
    scale, zp = float(q["scales"][0]), int(q["zero_points"][0])
    clip_shape = tuple(int(d) for d in inp["shape"][1:])
    inputs, values = [], {layer.tensor: [] for layer in layers}
    for clip in x:
        qx = quantize_input(clip.reshape(1, *clip_shape), scale, zp, np.dtype(inp["dtype"]).type)
        inputs.append(dequantize(qx, scale, zp).reshape(-1))
        interp.set_tensor(inp["index"], qx)
        interp.invoke()
        for layer in layers:
            raw = interp.get_tensor(layer.tensor)
            if raw.dtype.kind in "iu":
                values[layer.tensor].append(dequantize(raw, layer.scale or 1.0, layer.zero_point))
            else:
                values[layer.tensor].append(raw.astype(np.float32))
    return np.stack(inputs), {t: np.concatenate(v) for t, v in values.items()}


@dataclass
class _Point:
    """One compared tensor: the INT8 model's value and the two float references, all [N, D] in
    PyTorch element order (`qat_float_ref` None when the QAT weights could not be loaded)."""

    layer: str
    op: str
    shape: tuple[int, ...]
    scale: float | None
    zero_point: int
    int8: np.ndarray
    float_ref: np.ndarray
    qat_float_ref: np.ndarray | None


def _row(p: _Point, fake_quant: tuple[np.ndarray | None, bool] | None) -> dict[str, Any]:
    """One layer's metrics. `fake_quant` is the QAT graph's value at this point and whether a
    fake-quantizer produced it."""
    row: dict[str, Any] = {"layer": p.layer, "op": p.op, "shape": list(p.shape), "scale": p.scale}
    row.update(_metrics(p.float_ref, p.int8))
    same_weights = p.qat_float_ref if p.qat_float_ref is not None else p.float_ref
    row["sqnr_qat_float_db"] = (
        None if p.qat_float_ref is None else _metrics(p.qat_float_ref, p.int8)["sqnr_db"]
    )
    row["int8_range"], row["clipped_fraction"] = None, None
    if p.scale:  # values the same weights produce in float that the INT8 grid cannot represent
        lo, hi = (-128 - p.zero_point) * p.scale, (127 - p.zero_point) * p.scale
        row["int8_range"] = [float(lo), float(hi)]
        outside = (same_weights < lo - p.scale / 2) | (same_weights > hi + p.scale / 2)

        row["clipped_fraction"] = float(np.mean(outside))
    value, trained = fake_quant if fake_quant is not None else (None, None)
    if value is not None and value.size == p.int8.size:
        fq = value.reshape(p.int8.shape)  # the QAT graph is PyTorch: already in the same element order
        row["sqnr_fake_quant_db"] = _metrics(fq, p.int8)["sqnr_db"]
        row["max_steps_fake_quant"] = float(np.max(np.abs(fq - p.int8)) / p.scale) if p.scale else None
        # False: the QAT graph never quantized this tensor, so the converter chose its INT8 grid.
        row["trained_quantizer"] = bool(trained)
    else:
        row["sqnr_fake_quant_db"], row["max_steps_fake_quant"], row["trained_quantizer"] = None, None, None
    return row
