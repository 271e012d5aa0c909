"""Reference decision logic for streaming keyword detection: rules the firmware reproduces bit for bit.

edgekd scores whole 1 s clips; a device hears an endless stream. Between the model and a "keyword
heard" event the firmware (`firmware_stub/components/kws`) runs four steps, and each is defined here
in integer or exactly-rounded float32 arithmetic so that the C++ port can be *bit-identical* (a host
test feeds the same inputs to both and compares every value):

1. **Feature quantization** (`quantize_raw_features`): the micro frontend's uint16 output ``u`` becomes
   the float feature ``float32(u) * 0.0390625`` (exact in float32) and then the int8 model input via
   `edgekd.verify.runners.quantize_input`, TFLite's QUANTIZE rule (float32 division by the scale,
   round half away from zero, + zero point, clamp). The firmware calls ``std::round(f / scale)`` on
   the same float32 values, which IEEE 754 makes identical.
2. **Feature ring** (`window_schedule`): the newest `frames` quantized frames form the model input,
   oldest first. The first inference runs once the ring is full, then every `stride` frames.
3. **Posterior** (`probabilities_u8`): the exported model ends at the classifier's int8 *logits* (no
   SOFTMAX op). Softmax needs ``exp``, whose float results differ between libm builds, so it is
   computed from a 256-entry table generated here once per build (`exp_table`, written into
   `model_settings.h`): with d = max(q) - q_i in [0, 255],
   ``e_i = table[d]`` = round(65536 * exp(-d * output_scale)) (the zero point cancels), and
   ``p_i = (255 * e_i + S // 2) // S`` with ``S = sum(e)``: a uint8 probability, 255 meaning 1.0,
   the scale ESPHome's micro_wake_word uses for its model outputs.
4. **Smoothing and threshold** (`PosteriorSmoother`): the last `window` probability vectors are kept
   (zeros before the first inference and after each detection); their per-class uint32 sums are
   compared with ``cutoff * window`` where ``cutoff = int(threshold * 255)``; the best *keyword*
   class (lowest index on ties; ``_unknown_``/``_silence_`` never fire) is detected when its sum is
   strictly greater. This is exactly ESPHome micro_wake_word's rule (``sum > probability_cutoff *
   sliding_window_size``), extended to many classes. A detection clears the history and starts a
   refractory period of `refractory` inferences (default: until the 1 s input window has slid past
   the word, ceil(frames / stride)), so one spoken word fires once although a whole-clip model keeps
   seeing it for up to a second.

Only integer operations follow the table and the cutoff, which are data computed here, so nothing in
steps 3-4 depends on the C++ compiler's floating point.

`settings_from_build` gathers everything the firmware needs from a build's `manifest.json`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.audio.frontend import MICRO_FEATURE_SCALE
from edgekd.build_dir import BuildDir
from edgekd.config import SILENCE, UNKNOWN, FirmwareConfig
from edgekd.errors import EdgekdError
from edgekd.verify import runners

# The operating point a build ships is in its manifest's `firmware` section: calibrated by the build's
# streaming check (`firmware.threshold: auto`) or fixed in the config. Where neither is there (a config
# says auto for a target without the streaming check, a build from an older edgekd), these apply:
# ESPHome's common micro_wake_word values, never evaluated for false accepts.
FALLBACK_THRESHOLD = 0.8  # mean keyword probability over the window that fires
FALLBACK_WINDOW = 3  # inferences averaged (ESPHome's sliding_window_size)
DEFAULT_STRIDE_FRAMES = FirmwareConfig().stride_frames  # 10 ms feature frames between inferences
# The refractory period defaults to default_refractory(frames, stride): one model window.

PROB_ONE = 255  # uint8 probability meaning 1.0
EXP_ONE = 1 << 16  # exp_table[0]: Q16 fixed point
EXP_TABLE_SIZE = 256  # every possible int8 logit difference
NON_KEYWORDS = (UNKNOWN, SILENCE)
ARENA_ALIGN = 16  # TFLite Micro aligns its arena; sizes are rounded up to this


# ------------------------------------------------------------------------------------ quantization


def quantize_raw_features(raw: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """uint16 micro-frontend output -> int8 model input, as the firmware computes it from the frontend.

    The float feature ``float32(u) * float32(0.0390625)`` is exact (u * 5 / 128 needs < 24 bits), so
    this equals `quantize_input` applied to the features edgekd trains on.
    """
    u = np.asarray(raw)
    if u.dtype != np.uint16:
        raise EdgekdError(f"raw micro-frontend features must be uint16, got {u.dtype}")
    features = u.astype(np.float32) * np.float32(MICRO_FEATURE_SCALE)
    return runners.quantize_input(features, scale, zero_point)


# ------------------------------------------------------------------------------------ feature ring


def window_schedule(n_frames: int, window_frames: int, stride: int) -> list[int]:
    """Frame counts after which the firmware runs an inference on frames [t - window_frames, t).

    The first inference runs when the ring first holds `window_frames` frames, then every `stride`
    frames: t = window_frames + k * stride <= n_frames.
    """
    if window_frames < 1 or stride < 1:
        raise EdgekdError(f"window_frames ({window_frames}) and stride ({stride}) must be >= 1")
    return list(range(window_frames, n_frames + 1, stride))


def feature_windows(frames: np.ndarray, window_frames: int, stride: int) -> Iterator[tuple[int, np.ndarray]]:
    """(t, frames[t - window_frames : t]) for every scheduled inference over a stream of frames [T, F]."""
    for t in window_schedule(len(frames), window_frames, stride):
        yield t, frames[t - window_frames : t]


# ------------------------------------------------------------------------------------ posterior


def exp_table(output_scale: float) -> np.ndarray:
    """uint32[256]: round(65536 * exp(-d * output_scale)) for d = 0..255 (round half up, float64).

    Generated once per build and shipped in `model_settings.h`, so firmware never evaluates exp.
    """
    if not (math.isfinite(output_scale) and output_scale > 0):
        raise EdgekdError(f"output scale must be a positive number, got {output_scale}")
    d = np.arange(EXP_TABLE_SIZE, dtype=np.float64)
    return np.floor(EXP_ONE * np.exp(-d * float(output_scale)) + 0.5).astype(np.uint32)


def div_round(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Non-negative integer division rounding halves up: (num + den // 2) // den."""
    return (num + den // 2) // den


def probabilities_u8(logits: np.ndarray, table: np.ndarray) -> np.ndarray:
    """int8 logits [..., C] -> uint8 softmax probabilities [..., C] (255 = 1.0) via `table`."""
    q = np.asarray(logits)
    if q.dtype != np.int8:
        raise EdgekdError(f"logits must be the model's int8 output, got {q.dtype}")
    t = np.asarray(table, dtype=np.int64)
    if t.shape != (EXP_TABLE_SIZE,) or t[0] <= 0 or t.min() < 0 or t.max() > EXP_ONE:
        raise EdgekdError(
            f"the exp table must hold {EXP_TABLE_SIZE} values in [0, {EXP_ONE}] with table[0] > 0, "
            f"got shape {t.shape}"
        )
    q32 = q.astype(np.int64)
    e = t[q32.max(axis=-1, keepdims=True) - q32]
    s = e.sum(axis=-1, keepdims=True)  # >= table[0] > 0: the max logit contributes 65536
    return div_round(PROB_ONE * e, s).astype(np.uint8)


# ------------------------------------------------------------------------------------ smoothing


def probability_cutoff(threshold: float) -> int:
    """uint8 cutoff for a probability threshold in (0, 1): int(threshold * 255), as ESPHome computes it."""
    if not 0.0 < threshold < 1.0:
        raise EdgekdError(f"detection threshold must be in (0, 1), got {threshold}")
    return int(threshold * PROB_ONE)


def default_refractory(frames: int, stride: int) -> int:
    """Inferences until the input window has slid past everything it held at a detection:
    ceil(frames / stride), so a whole-clip model reports one spoken word once."""
    return -(-frames // stride)


def exceeds_cutoff(total: int, cutoff: int, window: int) -> bool:
    """The detection test on a window sum: strictly above cutoff * window (ESPHome's rule)."""
    return total > cutoff * window


@dataclass(frozen=True)
class Decision:
    """One inference's outcome: the best keyword class, its window sum and average, and whether it fired."""

    detected: bool
    label: int  # best detectable class, -1 if none is detectable
    total: int  # its window sum of uint8 probabilities
    average: int  # total // window


class PosteriorSmoother:
    """Moving sum of uint8 probabilities over the last `window` inferences, a strict cutoff and a
    refractory period.

    Mirrors `kws::PosteriorSmoother` (firmware_stub/components/kws/src/smoothing.cc) step for step:
    each update stores the probabilities, recomputes the per-class window sums, picks the best keyword
    (lowest index on ties) and fires when its sum exceeds cutoff * window and no refractory period is
    running. A detection clears the history and suppresses the next `refractory` updates: the
    whole-clip model keeps seeing the same word until it has slid out of its input window.
    """

    def __init__(
        self, n_classes: int, window: int, cutoff: int, detectable: Sequence[bool], refractory: int = 0
    ) -> None:
        if n_classes < 1 or window < 1 or not 0 <= cutoff <= PROB_ONE or refractory < 0:
            raise EdgekdError(
                f"bad smoother settings: classes {n_classes} (>= 1), window {window} (>= 1), "
                f"cutoff {cutoff} (0..255), refractory {refractory} (>= 0)"
            )
        if len(detectable) != n_classes:
            raise EdgekdError(f"detectable mask has {len(detectable)} entries for {n_classes} classes")
        self.n_classes, self.window, self.cutoff, self.refractory = n_classes, window, cutoff, refractory
        self.detectable = [bool(d) for d in detectable]
        self.history = np.zeros((window, n_classes), dtype=np.uint8)
        self.sums = np.zeros(n_classes, dtype=np.uint32)
        self._next = 0
        self._cooldown = 0

    def reset(self) -> None:
        self.history[:] = 0
        self.sums[:] = 0
        self._next = 0
        self._cooldown = 0

    def update(self, probs: np.ndarray) -> Decision:
        p = np.asarray(probs)
        if p.dtype != np.uint8 or p.shape != (self.n_classes,):
            raise EdgekdError(f"probabilities must be uint8[{self.n_classes}], got {p.dtype}{list(p.shape)}")
        self.history[self._next] = p
        self._next = (self._next + 1) % self.window
        self.sums = self.history.astype(np.uint32).sum(axis=0, dtype=np.uint32)
        best, total = -1, 0
        for c in range(self.n_classes):
            if self.detectable[c] and (best < 0 or int(self.sums[c]) > total):
                best, total = c, int(self.sums[c])
        detected = best >= 0 and self._cooldown == 0 and exceeds_cutoff(total, self.cutoff, self.window)
        if self._cooldown > 0:
            self._cooldown -= 1
        if detected:
            self.history[:] = 0  # the next detection needs fresh evidence
            self._next = 0
            self._cooldown = self.refractory
        return Decision(detected, best, total, total // self.window)


@dataclass
class StreamTrace:
    """Every intermediate value of `smooth_stream`, for comparison with the firmware."""

    probs: np.ndarray  # uint8 [N, C]
    sums: np.ndarray  # uint32 [N, C], after each update (before a detection's reset)
    decisions: list[Decision] = field(default_factory=list)


def smooth_stream(
    logits: np.ndarray,
    table: np.ndarray,
    window: int,
    cutoff: int,
    detectable: Sequence[bool],
    refractory: int = 0,
) -> StreamTrace:
    """Run probabilities + smoothing over a sequence of int8 logits [N, C]."""
    q = np.asarray(logits)
    if q.ndim != 2:
        raise EdgekdError(f"logits must be [N, C], got shape {list(q.shape)}")
    smoother = PosteriorSmoother(q.shape[1], window, cutoff, detectable, refractory)
    probs = probabilities_u8(q, table)
    sums = np.zeros((len(q), q.shape[1]), dtype=np.uint32)
    decisions = []
    for i, p in enumerate(probs):
        decisions.append(smoother.update(p))
        sums[i] = smoother.sums
    return StreamTrace(probs, sums, decisions)


def detections(
    probs: np.ndarray, window: int, cutoff: int, detectable: Sequence[bool], refractory: int = 0
) -> list[tuple[int, Decision]]:
    """The (inference index, Decision) of every detection `smooth_stream` makes, without stepping
    through every inference: what sweeping many operating points over hours of audio needs.

    A detection needs its keyword's window sum above cutoff * window, and a sum after a reset only
    holds fewer of the same non-negative terms, so only inferences whose plain rolling sum (no resets)
    exceeds the cutoff can fire. Those are visited in order with the smoother's rules: none within
    `refractory` inferences after a detection, the history since the last detection only, the best
    keyword by lowest index on ties. Equal to `smooth_stream` decision for decision (tested).
    """
    p = np.asarray(probs, dtype=np.int64)
    keep = np.flatnonzero(np.asarray(detectable, dtype=bool))
    if not len(keep) or not len(p):
        return []
    csum = np.vstack([np.zeros((1, p.shape[1]), np.int64), np.cumsum(p, axis=0)])
    ends = np.arange(1, len(p) + 1)
    rolling = csum[ends] - csum[np.maximum(ends - window, 0)]
    limit = cutoff * window
    out: list[tuple[int, Decision]] = []
    last = -(1 << 40)  # no detection yet
    for j in np.flatnonzero(rolling[:, keep].max(axis=1) > limit):
        if j <= last + refractory:
            continue
        start = max(last + 1, j - window + 1, 0)
        sums = csum[j + 1, keep] - csum[start, keep]
        best = int(np.argmax(sums))  # the first maximum: the lowest class index on ties
        total = int(sums[best])
        if total > limit:
            out.append((int(j), Decision(True, int(keep[best]), total, total // window)))
            last = int(j)
    return out


# ------------------------------------------------------------------------------------ build settings


@dataclass(frozen=True)
class FirmwareSettings:
    """What firmware needs to run a build's model exactly as edgekd defined it."""

    build_dir: Path
    target: str
    labels: tuple[str, ...]
    frontend: dict[str, Any]
    input_shape: tuple[int, ...]
    input_scale: float
    input_zero_point: int
    output_dtype: str  # "int8" logits (edgekd's models) or "uint8" probabilities (micro_wake_word style)
    output_shape: tuple[int, ...]
    output_scale: float
    output_zero_point: int
    arena_measured_bytes: int
    arena_bytes: int  # measured + headroom, rounded up to ARENA_ALIGN
    threshold: float
    window: int
    stride_frames: int
    refractory: int  # inferences after a detection that cannot fire

    @property
    def detectable(self) -> tuple[bool, ...]:
        """Keyword classes fire detections; `_unknown_` and `_silence_` never do."""
        return tuple(label not in NON_KEYWORDS for label in self.labels)

    @property
    def keywords(self) -> tuple[str, ...]:
        return tuple(k for k, d in zip(self.labels, self.detectable, strict=True) if d)

    @property
    def cutoff(self) -> int:
        return probability_cutoff(self.threshold)

    @property
    def frames(self) -> int:
        """Feature frames per model input (the ring's capacity)."""
        return self.input_shape[1]

    @property
    def n_features(self) -> int:
        return math.prod(self.input_shape[2:])

    def exp_table(self) -> np.ndarray:
        return exp_table(self.output_scale)


def _field(obj: Any, dotted: str, where: Path) -> Any:
    cur = obj
    for key in dotted.split("."):
        if not isinstance(cur, dict) or key not in cur:
            raise EdgekdError(
                f"{where}: missing field '{dotted}'; the build dir is incomplete or from an older edgekd "
                "(rebuild with `edgekd build`)"
            )
        cur = cur[key]
    return cur


_ZP_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}


def _quant(tensor: dict[str, Any], name: str, where: Path, dtypes: tuple[str, ...]) -> tuple[float, int]:
    dtype = tensor.get("dtype")
    if dtype not in dtypes:
        raise EdgekdError(
            f"{where}: model_io.{name}.dtype is {dtype!r}; firmware needs {' or '.join(dtypes)}"
        )
    scales, zps = tensor.get("scales") or [], tensor.get("zero_points") or []
    if len(scales) != 1 or len(zps) != 1:
        raise EdgekdError(f"{where}: model_io.{name} needs one per-tensor scale and zero point")
    scale, zp = float(scales[0]), int(zps[0])
    lo, hi = _ZP_RANGE[dtype]
    if not (math.isfinite(scale) and scale > 0) or not lo <= zp <= hi:
        raise EdgekdError(f"{where}: model_io.{name} has an invalid scale {scale} or zero point {zp}")
    return scale, zp


def settings_from_build(
    build_dir: str | Path,
    threshold: float | None = None,
    window: int | None = None,
    stride_frames: int | None = None,
    refractory: int | None = None,
) -> FirmwareSettings:
    """Read labels, frontend, input/output quantization, arena and operating point from
    `<build_dir>/manifest.json` (`settings_from_manifest`); the arguments override the operating point."""
    build = BuildDir(Path(build_dir))
    return settings_from_manifest(build.manifest(), build.path, threshold, window, stride_frames, refractory)


def operating_point(manifest: dict[str, Any]) -> dict[str, Any]:
    """The decision parameters a build ships: its manifest's resolved `firmware` section, else the
    numbers of its config's `firmware` section, else the fallbacks (`chosen_by` says which)."""
    resolved = manifest.get("firmware")
    if resolved:
        return resolved
    fw = (manifest.get("config") or {}).get("firmware") or {}
    fixed = {k: fw[k] for k in ("threshold", "window") if isinstance(fw.get(k), int | float)}
    return {
        "threshold": fixed.get("threshold", FALLBACK_THRESHOLD),
        "window": fixed.get("window", FALLBACK_WINDOW),
        "stride_frames": fw.get("stride_frames", DEFAULT_STRIDE_FRAMES),
        "refractory": fw.get("refractory"),
        "chosen_by": "config" if len(fixed) == 2 else "fallback (not calibrated)",
    }


def settings_from_manifest(
    manifest: dict[str, Any],
    build_dir: Path,
    threshold: float | None = None,
    window: int | None = None,
    stride_frames: int | None = None,
    refractory: int | None = None,
) -> FirmwareSettings:
    """The firmware settings a manifest describes (the build's own, or the facts a build stage gathers
    before the manifest exists). Decision parameters come from the arguments, else `operating_point`.
    Inconsistent facts (labels vs output width, frontend vs input shape) are errors naming the field,
    because firmware built from them would silently misbehave.
    """
    path = build_dir / BuildDir.MANIFEST
    labels = tuple(str(c) for c in _field(manifest, "classes", path))
    frontend = dict(_field(manifest, "frontend", path))
    model_in, model_out = _field(manifest, "model_io.input", path), _field(manifest, "model_io.output", path)
    in_scale, in_zp = _quant(model_in, "input", path, ("int8",))
    out_scale, out_zp = _quant(model_out, "output", path, ("int8", "uint8"))
    in_shape = tuple(int(d) for d in model_in.get("shape", []))
    out_shape = tuple(int(d) for d in model_out.get("shape", []))
    if len(in_shape) < 3 or in_shape[0] != 1:
        raise EdgekdError(f"{path}: model_io.input.shape {list(in_shape)} is not [1, frames, features]")
    if not out_shape or math.prod(out_shape) != len(labels):
        raise EdgekdError(
            f"{path}: model_io.output.shape {list(out_shape)} does not hold one score per class "
            f"({len(labels)} classes)"
        )
    n_feat = frontend.get("n_channels", frontend.get("n_features"))
    if n_feat is not None and math.prod(in_shape[2:]) != int(n_feat):
        raise EdgekdError(
            f"{path}: model_io.input.shape {list(in_shape)} does not match frontend n_features {n_feat}"
        )
    measured = int(_field(manifest, "arena.measured_bytes", path))
    headroom = int(_field(manifest, "arena.with_headroom_bytes", path))
    if measured <= 0 or headroom < measured:
        raise EdgekdError(f"{path}: arena.with_headroom_bytes {headroom} < arena.measured_bytes {measured}")
    op = operating_point(manifest)
    stride = int(stride_frames if stride_frames is not None else op["stride_frames"])
    if stride < 1:
        raise EdgekdError(f"{path}: config.firmware.stride_frames must be >= 1, got {stride}")
    muted = refractory if refractory is not None else op.get("refractory")
    settings = FirmwareSettings(
        build_dir=build_dir,
        target=str(manifest.get("target", "unknown")),
        labels=labels,
        frontend=frontend,
        input_shape=in_shape,
        input_scale=in_scale,
        input_zero_point=in_zp,
        output_dtype=str(model_out["dtype"]),
        output_shape=out_shape,
        output_scale=out_scale,
        output_zero_point=out_zp,
        arena_measured_bytes=measured,
        arena_bytes=-(-headroom // ARENA_ALIGN) * ARENA_ALIGN,
        threshold=float(threshold if threshold is not None else op["threshold"]),
        window=int(window if window is not None else op["window"]),
        stride_frames=stride,
        refractory=int(muted if muted is not None else default_refractory(in_shape[1], stride)),
    )
    try:
        probability_cutoff(settings.threshold)
    except EdgekdError as e:
        raise EdgekdError(f"{path}: config.firmware.threshold (or the argument): {e}") from e
    if not 1 <= settings.window <= 255 or settings.refractory < 0:
        raise EdgekdError(
            f"{path}: config.firmware.window must be 1..255 and config.firmware.refractory >= 0, got "
            f"{settings.window} and {settings.refractory}"
        )
    if not any(settings.detectable):
        raise EdgekdError(f"{path}: classes {list(labels)} contain no keyword to detect")
    return settings
