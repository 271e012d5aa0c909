"""The terminal view of `edgekd inspect`'s record (`edgekd.verify.inspect.inspect_model`).

Budget lines are the build report's own (`budget_lines`), so the same model reads the same figures in
`inspect`, `report.md` and `compare`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from edgekd.fmt import MISSING, kb, table
from edgekd.report.markdown import budget_lines


def render_inspect(record: dict[str, Any], tensors: bool = False) -> str:
    """The terminal view of an inspect record; budget lines are the build report's own (same figures)."""
    ops = record["ops"]
    per_op = record["latency"]["per_op_model"]
    op_ms: dict[str, float] = Counter()
    op_macs: dict[str, int] = Counter()
    if per_op:
        for r in per_op["ops"]:
            op_ms[r["op"]] += r["ms"]
            op_macs[r["op"]] += r["macs"]
    allowed = ops["target_op_set"]
    esp = ops["esp_nn_accelerated"]
    headers = ["op", "count", f"in {record['target']} op set"]
    if esp is not None:
        headers.append("ESP-NN kernel")
    if per_op:
        headers += ["MACs", "est. ms (per-op model)", "share"]
    op_rows = []
    for name, n in ops["counts"].items():
        row: list[Any] = [name, n, "any op" if allowed is None else ("yes" if name in allowed else "NO")]
        if esp is not None:
            row.append("yes" if name in esp else "reference")
        if per_op:
            share = op_ms[name] / per_op["ms"] if per_op["ms"] else 0.0
            row += [f"{op_macs[name]:,}", f"{op_ms[name]:.2f}", f"{share:.0%}"]
        op_rows.append(row)

    io = [
        [t["kind"], t["name"], t["dtype"], "x".join(map(str, t["shape"])), _quant_text(t)]
        for t in record["inputs"] + record["outputs"]
    ]
    dtypes = Counter(t["dtype"] for t in record["tensors"])
    culprits = record["not_int8"]
    more = f" and {len(culprits) - 5} more" if len(culprits) > 5 else ""
    uint8_io = [
        f"{t['kind']} {t['name']}" for t in record["inputs"] + record["outputs"] if t["dtype"] == "uint8"
    ]
    float_note = (
        f"NO — {len(culprits)} tensors are not int8: {', '.join(culprits[:5]) + more}"
        if culprits
        else "yes" + (f" (integer-only; uint8 at the boundary: {', '.join(uint8_io)})" if uint8_io else "")
    )
    lines = [
        f"{record['model']} — target {record['target']} (device runtime {record['primary']})",
        "",
        table(["io", "tensor", "dtype", "shape", "quantization"], io),
        "",
        f"fully INT8: {float_note}",
        f"tensors: {len(record['tensors'])} ({', '.join(f'{k} {v}' for k, v in sorted(dtypes.items()))})",
        "",
    ]
    if tensors:
        lines += [
            table(
                ["#", "tensor", "kind", "dtype", "shape", "bytes", "quantization"],
                [
                    [
                        t["index"],
                        t["name"],
                        t["kind"],
                        t["dtype"],
                        "x".join(map(str, t["shape"])),
                        t["bytes"],
                        _quant_text(t),
                    ]
                    for t in record["tensors"]
                ],
            ),  # fmt: skip
            "",
        ]
    lines += [table(headers, op_rows), ""]
    if ops["outside_target"]:
        lines.append(f"ops outside {record['target']}'s op set: {', '.join(ops['outside_target'])}")
    if esp is not None:
        lines.append(f"ESP-NN accelerated: {', '.join(esp) or 'none'}; reference kernels: "
                     f"{', '.join(ops['reference_kernels']) or 'none'}")  # fmt: skip
    if lines[-1]:
        lines.append("")
    lines.append(budget_lines({"budget": record["budget"]}))
    arena = record["arena"]
    if arena["error"]:
        lines.append(f"- tensor arena: {arena['error']}")
    elif not arena["in_budget"]:
        lines.append(
            f"- tensor arena if run on TFLite Micro: {kb(arena['bytes'])} (not in {record['target']}'s "
            f"budget: its runtime is {record['primary']})"
        )
    if per_op:
        lines.append(
            f"- per-op latency model: {per_op['ms']:.2f} ms ({per_op['cycles']:,} cycles at "
            f"{per_op['clock_mhz']:g} MHz, baseline {per_op['macs_per_cycle']:g} MAC/cycle, "
            f"{per_op['op_overhead_cycles']} cycles/op overhead; esp-nn ESP32-S3 benchmarks)"
        )
    lines.append("")
    if record["checks"]:
        check_rows = [
            [c["name"], _show(c["value"]), f"{c.get('op', '')} {_show(c['limit'])}".strip(),
             "PASS" if c["passed"] else "FAIL"]
            for c in record["checks"]
        ]  # fmt: skip
        lines += [table(["check", "value", "limit", "result"], check_rows), ""]
    for c in record["checks"]:
        if not c["passed"] and c.get("suggestion"):
            lines.append(f"- {c['name']}: {c['suggestion']}")
    failed = [c["name"] for c in record["checks"] if not c["passed"]]
    lines.append(f"result: {'PASS' if not failed else 'FAIL: ' + ', '.join(failed)}")
    return "\n".join(lines)


def _quant_text(t: dict[str, Any]) -> str:
    if "scale" in t:
        return f"scale {t['scale']:.6g}, zero point {t['zero_point']}"
    return t["quantization"]


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return f"{len(v)} ops"
    if v is None:
        return MISSING
    return str(v)
