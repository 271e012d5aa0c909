"""The target's budget: what an exported model asks of the device, measured once, gated once.

`measure_budget` (the build, `eval`) and `edgekd inspect` (any .tflite) fill the same `Budget` from the
same functions — `describe`, `measure_arena`, one latency formula — and `budget_gates` is the one place
the budget items are checked, so the build's `parity.json` and `inspect` cannot disagree; inspect only
adds its suggestions on top of the gates this module returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.config import BudgetConfig, BuildConfig


@dataclass(frozen=True)
class Budget:
    model_bytes: int
    arena_bytes: int | None
    ops: list[str]
    macs: int
    fully_int8: bool
    not_int8: list[str]  # "name (dtype)" of each tensor that is not int8 (tflite_info.describe)
    latency_ms: float | None
    latency_source: str

    def as_dict(self, headroom: float) -> dict[str, Any]:
        return {
            "model_bytes": self.model_bytes,
            "arena_bytes": self.arena_bytes,
            "arena_bytes_with_headroom": self.arena_with_headroom(headroom),
            "ops": self.ops,
            "macs": self.macs,
            "fully_int8": self.fully_int8,
            "not_int8": self.not_int8,
            "latency_ms": self.latency_ms,
            "latency_source": self.latency_source,
        }

    def arena_with_headroom(self, headroom: float) -> int | None:
        return None if self.arena_bytes is None else int(np.ceil(self.arena_bytes * (1.0 + headroom)))


def check(name: str, value: Any, limit: Any, op: str) -> dict[str, Any]:
    """One gate record: its name, the measured value, the limit, the comparison and the verdict."""
    passed = value >= limit if op == ">=" else value <= limit
    return {"name": name, "value": value, "limit": limit, "op": op, "passed": bool(passed), "n": None}


def budget_gates(cfg: BuildConfig, budget: Budget) -> list[dict[str, Any]]:
    """The target's budget items (model bytes, arena with headroom, op set, INT8-ness, latency).

    A target that runs TFLite Micro and has no measured arena (the model does not allocate) fails the
    arena gate with value None rather than skipping it.
    """
    b = cfg.budget
    out = []
    if b.model_bytes is not None:
        out.append(check("model_bytes", budget.model_bytes, b.model_bytes, "<="))
    if b.arena_bytes is not None and "tflm" in cfg.verify.runtimes:
        with_headroom = budget.arena_with_headroom(b.arena_headroom)
        if with_headroom is None:
            out.append(
                {"name": "arena_bytes_with_headroom", "value": None, "limit": b.arena_bytes, "op": "<="}
            )
            out[-1]["passed"] = False
        else:
            out.append(check("arena_bytes_with_headroom", with_headroom, b.arena_bytes, "<="))
    if b.ops is not None:
        extra = sorted(set(budget.ops) - set(b.ops))
        out.append(
            {
                "name": "ops_supported",
                "value": extra or "all supported",
                "limit": b.ops,
                "passed": not extra,
                "n": None,
            }
        )
    if "tflm" in cfg.verify.runtimes or "litert" in cfg.verify.runtimes:
        out.append(
            {
                "name": "fully_int8",
                "value": budget.fully_int8,
                "limit": True,
                "passed": budget.fully_int8,
                "n": None,
            }
        )
    if b.latency_ms is not None and budget.latency_ms is not None:
        out.append(check("latency_ms", round(budget.latency_ms, 3), b.latency_ms, "<="))
    return out


def latency_estimate(macs: int, budget: BudgetConfig) -> tuple[float, str] | None:
    """`(ms, source)` from MACs at the target's clock (MCU targets), or None where the host is timed."""
    if budget.clock_mhz is None or budget.macs_per_cycle is None or not macs:
        return None
    ms = macs / (budget.macs_per_cycle * budget.clock_mhz * 1e3)
    return ms, f"estimate: {macs} MACs / ({budget.macs_per_cycle} MAC/cycle x {budget.clock_mhz} MHz)"


def measure_budget(cfg: BuildConfig, model_dir: Path) -> Budget:
    """Flash, arena, ops, MACs and latency of the artifact the target's device runs (in `model_dir`)."""
    from edgekd.verify.runners import host_latency
    from edgekd.verify.tflite_info import describe, measure_arena

    tflite, onnx = model_dir / "model.tflite", model_dir / "model.onnx"
    primary = onnx if cfg.verify.primary == "onnx" else tflite
    ops: list[str] = []
    macs, fully_int8, not_int8, arena = 0, True, [], None
    if tflite.exists():
        info = describe(tflite)
        ops, macs, fully_int8, not_int8 = info.op_set, info.macs, info.is_fully_int8, info.not_int8
        arena = measure_arena(tflite) if "tflm" in cfg.verify.runtimes else None
    latency, source = latency_estimate(macs, cfg.budget) or host_latency(primary, cfg.verify.primary)
    return Budget(primary.stat().st_size, arena, ops, macs, fully_int8, not_int8, latency, source)
