"""What ESPHome's micro_wake_word accepts, checked on a .tflite model and its v2 JSON manifest.

The facts below come from the component's public source (ESPHome >= 2024.7, manifest version 2; the
reading is in docs/DESIGN.md) and from microWakeWord's shipped models, which must pass this checker:

- Input: int8 ``[1, stride, 40]``; ESPHome copies ``stride`` frames of features into it and invokes once
  per ``stride`` frames. The features are the TFLite Micro frontend's uint16 output ``u`` mapped with
  integers only, ``clamp((u * 256 + 333) // 666 - 128, -128, 127)``: the TFLite quantization of the
  float feature ``u * 0.0390625`` with scale 3330/32768 and zero point -128. ESPHome never reads the
  model's declared input scale; microWakeWord's models declare 26/255 (0.33 % off the fed mapping, what
  they were trained and shipped with), so both declared scales pass and the other one is noted.
- Output: uint8 ``[1, 1]``, the probability in 1/255 steps of the cutoff.
- State: the model keeps its context in TFLite resource variables (VAR_HANDLE, READ_VARIABLE,
  ASSIGN_VARIABLE, initialised under CALL_ONCE); the component creates room for 20 of them.
- Ops: only the 20 its `MicroMutableOpResolver` registers (`OPS`).
- Manifest v2: exactly the keys of its schema (extra keys are rejected); the uint8 cutoff is
  ``int(probability_cutoff * 255)`` and a detection needs the window sum above ``cutoff * window``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError

MIN_ESPHOME_VERSION = "2024.7.0"
MANIFEST_VERSION = 2
N_FEATURES = 40
STEP_MS = (10, 20)  # feature_step_size values the component's frontend runs
# ESPHome's integer feature mapping: (u * FEATURE_MUL + FEATURE_DEN // 2) // FEATURE_DEN - 128.
FEATURE_MUL = 256
FEATURE_DEN = 666
INPUT_SCALE = 3330 / 32768  # the same mapping as a TFLite scale on u * 0.0390625 (= 666/256 * 0.0390625)
MWW_DECLARED_SCALE = 26 / 255  # what microWakeWord's models declare (ESPHome feeds INPUT_SCALE anyway)
INPUT_ZERO_POINT = -128
MAX_VARIABLES = 20
# After loading and after each detection, this many feature frames whose newest probability is below
# the cutoff must pass before the component can fire again (its MIN_SLICES_BEFORE_DETECTION).
COOL_OFF_FRAMES = 100
OPS = frozenset(
    {
        "CALL_ONCE",
        "VAR_HANDLE",
        "RESHAPE",
        "READ_VARIABLE",
        "STRIDED_SLICE",
        "CONCATENATION",
        "ASSIGN_VARIABLE",
        "CONV_2D",
        "MUL",
        "ADD",
        "MEAN",
        "FULLY_CONNECTED",
        "LOGISTIC",
        "QUANTIZE",
        "DEPTHWISE_CONV_2D",
        "AVERAGE_POOL_2D",
        "MAX_POOL_2D",
        "PAD",
        "PACK",
        "SPLIT_V",
    }
)
STATE_OPS = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")
_MICRO_KEYS = {
    "probability_cutoff",
    "sliding_window_size",
    "feature_step_size",
    "tensor_arena_size",
    "minimum_esphome_version",
}
_REQUIRED_KEYS = {"type", "wake_word", "author", "model", "trained_languages", "version", "micro"}
_OPTIONAL_KEYS = {"website"}


def feature_to_int8(u: np.ndarray) -> np.ndarray:
    """ESPHome's mapping of the frontend's uint16 output to the model's int8 input, bit for bit."""
    u = np.asarray(u)
    if not np.issubdtype(u.dtype, np.integer):
        raise EdgekdError(f"ESPHome maps the frontend's integer output; got {u.dtype} features")
    v = (u.astype(np.int64) * FEATURE_MUL + FEATURE_DEN // 2) // FEATURE_DEN + INPUT_ZERO_POINT
    return np.clip(v, -128, 127).astype(np.int8)


def cutoff_u8(probability_cutoff: float) -> int:
    """The uint8 cutoff ESPHome derives from a manifest's probability_cutoff (truncation)."""
    return int(probability_cutoff * 255)


def input_mapping_problem(
    scale: float | None, zero_point: int | None, microwakeword: bool = True
) -> str | None:
    """Why a declared int8 input quantization does not describe the features ESPHome feeds (None: it
    does). `microwakeword` also accepts the 26/255 microWakeWord declares; edgekd's own models, which it
    validates with their declared scale, must declare exactly the fed one."""
    accepted = (INPUT_SCALE, MWW_DECLARED_SCALE) if microwakeword else (INPUT_SCALE,)
    declared = scale is not None and any(math.isclose(scale, s, rel_tol=1e-6) for s in accepted)
    if declared and zero_point == INPUT_ZERO_POINT:
        return None
    return (
        f"input quantization (scale {scale if scale is None else f'{scale:.6g}'}, zero point {zero_point}) "
        f"is not ESPHome's fixed feature mapping (scale {INPUT_SCALE:.6g} = 3330/32768, zero point -128"
        + ("; microWakeWord's declared 26/255 is accepted)" if microwakeword else ")")
    )


def ops_problem(ops: list[str]) -> str | None:
    """Which ops the component's resolver lacks (None: it registers all of them)."""
    extra = sorted(set(ops) - OPS)
    return f"ops {extra} are not registered by ESPHome's op resolver" if extra else None


def manifest_problems(raw: Any) -> list[str]:
    """Every way `raw` breaks ESPHome's v2 manifest schema (empty: the component accepts it)."""
    if not isinstance(raw, dict):
        return ["the manifest is not a JSON object"]
    problems = [f"missing key {k!r}" for k in sorted(_REQUIRED_KEYS - raw.keys())]
    problems += [
        f"unknown key {k!r} (ESPHome rejects extra keys)"
        for k in sorted(raw.keys() - _REQUIRED_KEYS - _OPTIONAL_KEYS)
    ]
    expect = {
        "type": (lambda v: v == "micro", 'must be "micro"'),
        "version": (lambda v: v == MANIFEST_VERSION and not isinstance(v, bool), "must be 2"),
        "wake_word": (lambda v: isinstance(v, str) and v.strip() != "", "must be a non-empty string"),
        "author": (lambda v: isinstance(v, str), "must be a string"),
        "website": (lambda v: isinstance(v, str) and v.startswith(("http://", "https://")), "must be a URL"),
        "model": (
            lambda v: isinstance(v, str) and v.endswith(".tflite") and "/" not in v,
            "must be a .tflite file name beside the manifest",
        ),
        "trained_languages": (
            lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
            "must be a list of language codes",
        ),
        "micro": (lambda v: isinstance(v, dict), "must be an object"),
    }
    problems += [f"{k!r} {why}" for k, (ok, why) in expect.items() if k in raw and not ok(raw[k])]
    micro = raw.get("micro")
    if isinstance(micro, dict):
        problems += [f"missing key 'micro.{k}'" for k in sorted(_MICRO_KEYS - micro.keys())]
        problems += [
            f"unknown key 'micro.{k}' (ESPHome rejects extra keys)"
            for k in sorted(micro.keys() - _MICRO_KEYS)
        ]
        checks = {
            "probability_cutoff": (lambda v: _number(v) and 0 < v <= 1, "must be a number in (0, 1]"),
            "sliding_window_size": (lambda v: _integer(v) and v >= 1, "must be a positive integer"),
            "feature_step_size": (lambda v: v in STEP_MS and _integer(v), f"must be one of {list(STEP_MS)}"),
            "tensor_arena_size": (lambda v: _integer(v) and v > 0, "must be a positive integer (bytes)"),
            "minimum_esphome_version": (
                lambda v: isinstance(v, str) and all(p.isdigit() for p in v.split(".")) and v.count(".") == 2,
                'must be a version like "2024.7.0"',
            ),
        }
        problems += [
            f"'micro.{k}' {why} (got {micro[k]!r})"
            for k, (ok, why) in checks.items()
            if k in micro and not ok(micro[k])
        ]
    return problems


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Manifest:
    """A validated v2 manifest and the settings the component derives from it."""

    path: Path
    wake_word: str
    model: Path
    cutoff: int  # uint8, as the component truncates it
    window: int
    step_ms: int
    arena_bytes: int


def read_manifest(path: str | Path) -> Manifest:
    """Load and validate a micro_wake_word v2 manifest; every problem is named in one EdgekdError."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise EdgekdError(f"{p}: no such manifest") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekdError(f"{p}: not a JSON manifest ({e})") from e
    problems = manifest_problems(raw)
    if problems:
        raise EdgekdError(f"{p}: not a valid micro_wake_word v2 manifest:\n  - " + "\n  - ".join(problems))
    micro = raw["micro"]
    return Manifest(
        path=p,
        wake_word=raw["wake_word"],
        model=p.parent / raw["model"],
        cutoff=cutoff_u8(float(micro["probability_cutoff"])),
        window=int(micro["sliding_window_size"]),
        step_ms=int(micro["feature_step_size"]),
        arena_bytes=int(micro["tensor_arena_size"]),
    )


@dataclass(frozen=True)
class Check:
    """One clause of the contract: passed or not, with what was seen."""

    clause: str
    ok: bool
    detail: str


@dataclass
class ContractReport:
    """Every clause checked for one model (and manifest), plus the figures a user compares models by."""

    model: Path
    manifest: Path | None
    checks: list[Check]
    notes: list[str] = field(default_factory=list)
    stride: int = 0
    flash_bytes: int = 0
    arena_bytes: int = 0  # TFLite Micro on this host, resource-variable buffers included
    variables: int = 0
    macs_per_step: int = 0
    step_ms: int = 10

    @property
    def violations(self) -> list[str]:
        return [f"{c.clause}: {c.detail}" for c in self.checks if not c.ok]

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def macs_per_second(self) -> float:
        """MACs per second of audio: one invoke every `stride` feature steps."""
        return self.macs_per_step * 1000 / (self.stride * self.step_ms) if self.stride else 0.0

    def record(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "manifest": str(self.manifest) if self.manifest else None,
            "passed": self.passed,
            "checks": [c.__dict__ for c in self.checks],
            "notes": self.notes,
            "stride": self.stride,
            "flash_bytes": self.flash_bytes,
            "arena_bytes": self.arena_bytes,
            "variables": self.variables,
            "macs_per_step": self.macs_per_step,
            "macs_per_second": round(self.macs_per_second),
        }


def variable_names(path: Path) -> set[str]:
    """The shared names of the model's resource variables (every subgraph: CALL_ONCE initialises them)."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    from edgekd.export.flatbuffer import builtin_code

    model = fb.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    var_handle = fb.BuiltinOperator.VAR_HANDLE
    names = set()
    for sg in model.subgraphs or []:
        for op in sg.operators or []:
            if builtin_code(model.operatorCodes[op.opcodeIndex]) == var_handle:
                name = op.builtinOptions.sharedName if op.builtinOptions else None
                names.add((name or b"").decode() or f"#{len(names)}")
    return names


def check(model_path: str | Path, manifest_path: str | Path | None = None) -> ContractReport:
    """Check a model (and its manifest: `manifest_path`, or the model named by a manifest) against the
    component's contract. A file that is not a usable model raises EdgekdError; contract breaches are
    reported as failed checks, so a user sees all of them at once."""
    from edgekd.verify.tflite_info import describe, measure_arena

    manifest = read_manifest(manifest_path) if manifest_path is not None else None
    path = Path(model_path)
    info = describe(path)
    checks: list[Check] = []
    notes: list[str] = []
    if len(info.inputs) != 1 or len(info.outputs) != 1:
        checks.append(
            Check("io", False, f"{len(info.inputs)} inputs and {len(info.outputs)} outputs; 1 and 1 needed")
        )
    x, y = info.input, info.output
    stride = x.shape[1] if len(x.shape) == 3 else 0
    shape_ok = x.dtype == "int8" and len(x.shape) == 3 and x.shape[0] == 1 and x.shape[2] == N_FEATURES
    checks.append(
        Check("input", shape_ok, f"{x.dtype} {list(x.shape)} (int8 [1, stride, {N_FEATURES}] needed)")
    )
    mapping = input_mapping_problem(x.scale, x.zero_point)
    checks.append(
        Check("input mapping", mapping is None, mapping or f"scale {x.scale:.6g}, zero point {x.zero_point}")
    )
    if mapping is None and math.isclose(x.scale or 0, MWW_DECLARED_SCALE, rel_tol=1e-6):
        notes.append(
            "the input declares microWakeWord's 26/255; ESPHome feeds 3330/32768 (a 0.33 % gain the model "
            "was shipped with)"
        )
    checks.append(
        Check(
            "output",
            y.dtype == "uint8" and tuple(y.shape) == (1, 1),
            f"{y.dtype} {list(y.shape)} (uint8 [1, 1] probability needed)",
        )
    )
    extra = ops_problem(info.op_set)
    checks.append(Check("ops", extra is None, extra or f"{len(info.op_set)} ops, all registered"))
    variables = variable_names(path)
    stateful = bool(variables) and all(op in info.op_set for op in STATE_OPS)
    checks.append(
        Check(
            "state",
            stateful and len(variables) <= MAX_VARIABLES,
            f"{len(variables)} resource variables (1 to {MAX_VARIABLES} needed: without state a model "
            "sees only its newest frames)",
        )
    )
    arena = measure_arena(path)
    if manifest is not None:
        if manifest.model.resolve() != path.resolve():
            checks.append(Check("manifest model", False, f"names {manifest.model.name}, not {path.name}"))
        checks.append(
            Check(
                "manifest arena",
                manifest.arena_bytes >= arena,
                f"tensor_arena_size {manifest.arena_bytes} B; TFLite Micro needs {arena} B on this host",
            )
        )
        checks.append(Check("manifest", True, f"v2, cutoff {manifest.cutoff}/255, window {manifest.window}"))
    return ContractReport(
        model=path,
        manifest=manifest.path if manifest else None,
        checks=checks,
        notes=notes,
        stride=stride,
        flash_bytes=info.flash_bytes,
        arena_bytes=arena,
        variables=len(variables),
        macs_per_step=info.macs,
        step_ms=manifest.step_ms if manifest else STEP_MS[0],
    )


def microwakeword_manifests() -> dict[str, Path]:
    """microWakeWord's shipped v2 models (the `pymicro-wakeword` wheel, Apache-2.0), by wake word file
    name: the reference every check and benchmark here runs beside edgekd's models."""
    from importlib.resources import files

    try:
        root = Path(str(files("pymicro_wakeword") / "models"))
    except ModuleNotFoundError as e:
        raise EdgekdError("microWakeWord's models come with `pip install pymicro-wakeword==2.5.0`") from e
    return {p.stem: p for p in sorted(root.glob("*.json"))}
