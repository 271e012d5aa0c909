"""Runners: one `predict(features) -> logits` interface over TFLite Micro, LiteRT and onnxruntime.

Parity code compares runners without caring which interpreter is behind each. Every runner takes
float32 features [N, T, F] and returns dequantized float32 logits [N, C]; int8 models are fed
through `quantize_input` and read back through `dequantize`, the one implementation of TFLite's
quantize/dequantize arithmetic that firmware should mirror.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from edgekd.errors import EdgekdError
from edgekd.native_log import captured_stderr
from edgekd.verify.tflite_info import load_tflm, measure_arena, open_litert

# Added to the measured arena when TFLMRunner picks the size: the host allocator's alignment can
# move the smallest working size by a few bytes between runs.
ARENA_HEADROOM = 1024


class Runner(Protocol):
    """A model behind an interpreter."""

    name: str

    def predict(self, features: np.ndarray) -> np.ndarray:
        """float32 features [N, T, F] -> dequantized float32 logits [N, C]."""
        ...


def quantize_input(
    x: np.ndarray, scale: float, zero_point: int, dtype: type[np.integer] = np.int8
) -> np.ndarray:
    """Quantize floats exactly as TFLite's reference QUANTIZE kernel (and TFLite Micro) does.

    q = clamp(round(x / scale) + zero_point, dtype.min, dtype.max), where the division is in
    float32 (`val / static_cast<float>(scale)`) and round is C's `std::round`: halves round AWAY
    from zero (2.5 -> 3, -2.5 -> -3), unlike numpy's round-half-to-even.
    """
    v = np.asarray(x, dtype=np.float32) / np.float32(scale)
    whole = np.trunc(v)
    rounded = np.where(np.abs(v - whole) == 0.5, whole + np.sign(v), np.round(v))
    info = np.iinfo(dtype)
    return np.clip(rounded + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """(q - zero_point) * scale in float32, as TFLite's DEQUANTIZE kernel computes it."""
    return (np.asarray(q, dtype=np.int32) - zero_point).astype(np.float32) * np.float32(scale)


def _quant_params(detail: dict, path: Path) -> tuple[float, int]:
    q = detail["quantization_parameters"]
    if len(q["scales"]) != 1:
        raise EdgekdError(f"{path}: integer input/output tensor without a per-tensor scale")
    return float(q["scales"][0]), int(q["zero_points"][0])


def _encode(x: np.ndarray, detail: dict, path: Path) -> np.ndarray:
    """Float features -> the model's input tensor (quantized for integer inputs)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    return quantize_input(x, *_quant_params(detail, path), dtype=dtype.type)


def _decode(y: np.ndarray, detail: dict, path: Path) -> np.ndarray:
    """The model's output tensor -> float32 logits [batch, C]."""
    if np.dtype(detail["dtype"]).kind == "f":
        out = y.astype(np.float32)
    else:
        out = dequantize(y, *_quant_params(detail, path))
    return out.reshape(len(out), -1)


def _fit(features: np.ndarray, clip_shape: tuple[int, ...] | None, path: Path) -> np.ndarray:
    """Check [N, T, F] features (N >= 1); reshape to [N, *clip_shape] (e.g. [N, T, F, 1]) if given."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 3 or len(x) == 0:
        raise EdgekdError(f"{path}: features must be [N, T, F] with N >= 1, got shape {x.shape}")
    if clip_shape is None:
        return x
    if math.prod(x.shape[1:]) != math.prod(clip_shape):
        want = [int(d) for d in clip_shape]
        raise EdgekdError(f"{path}: the model takes {want} per clip, features are {list(x.shape[1:])}")
    return x.reshape((len(x), *clip_shape))


def _require_batch_one(shape: np.ndarray, path: Path) -> None:
    if shape[0] != 1:
        raise EdgekdError(f"{path}: fixed batch {shape[0]} is unsupported; export with batch 1")


class TFLMRunner:
    """TFLite Micro host interpreter: the device's reference kernels, one clip at a time."""

    def __init__(self, path: str | os.PathLike[str], arena_size: int | None = None) -> None:
        self.path = Path(path)
        self.name = "tflm"
        self.arena_size = measure_arena(self.path) + ARENA_HEADROOM if arena_size is None else arena_size
        self._interp = load_tflm(self.path, self.arena_size)
        self._in = self._interp.get_input_details(0)
        self._out = self._interp.get_output_details(0)
        _require_batch_one(self._in["shape"], self.path)

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = _fit(features, tuple(self._in["shape"][1:]), self.path)
        logits = np.empty((len(x), math.prod(self._out["shape"][1:])), dtype=np.float32)
        for i, clip in enumerate(x):
            self._interp.set_input(_encode(clip[None], self._in, self.path), 0)
            self._interp.invoke()
            logits[i] = _decode(self._interp.get_output(0), self._out, self.path)[0]
        return logits

    def predict_quantized(self, q: np.ndarray) -> np.ndarray:
        """Already-quantized inputs [N, *input shape] in the model's input dtype -> the raw outputs
        [N, C] in its output dtype: what firmware feeds and reads, with no float step in between."""
        out = np.empty((len(q), math.prod(self._out["shape"][1:])), dtype=self._out["dtype"])
        for i, clip in enumerate(np.asarray(q, dtype=self._in["dtype"])):
            self._interp.set_input(clip[None], 0)
            self._interp.invoke()
            out[i] = self._interp.get_output(0).reshape(-1)
        return out


class LiteRTRunner:
    """LiteRT (TFLite) interpreter; reference=True uses the BUILTIN_REF kernels, closest to TFLM.

    The reference kernels match TFLM bit for bit except int8 FULLY_CONNECTED: LiteRT rounds the real
    value once (round(acc * s_in * s_w / s_out)) where TFLM's fixed-point multiplier rounds twice, so
    they differ by 1 step, either way, on outputs within ~1e-3 of a .5 boundary (0.1-0.3 %).
    reference=False uses the default XNNPACK kernels, what a phone or desktop app would run (1 step
    apart on more outputs).
    Models with a dynamic batch dimension run the whole batch at once, others one clip at a time.
    """

    def __init__(self, path: str | os.PathLike[str], reference: bool = True) -> None:
        self.path = Path(path)
        self.name = "litert-ref" if reference else "litert-xnnpack"
        with captured_stderr():  # the default kernels print an "XNNPACK delegate created" banner
            self._interp = open_litert(self.path, reference)
            self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._dynamic = self._in["shape_signature"][0] == -1
        if not self._dynamic:
            _require_batch_one(self._in["shape"], self.path)

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = _fit(features, tuple(self._in["shape"][1:]), self.path)
        if self._dynamic:
            if len(x) != self._interp.get_input_details()[0]["shape"][0]:
                self._interp.resize_tensor_input(self._in["index"], [len(x), *x.shape[1:]], strict=True)
                self._interp.allocate_tensors()
            batches = [x]
        else:
            batches = [clip[None] for clip in x]
        out = self._interp.get_output_details()[0]
        return np.concatenate([self._run(b, out) for b in batches])

    def _run(self, batch: np.ndarray, out: dict) -> np.ndarray:
        self._interp.set_tensor(self._in["index"], _encode(batch, self._in, self.path))
        self._interp.invoke()
        return _decode(self._interp.get_tensor(out["index"]), out, self.path)


class OrtRunner:
    """onnxruntime on CPU; QDQ (INT8) ONNX models take and return floats like float ones."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = "onnxruntime"
        if not self.path.is_file() or self.path.stat().st_size == 0:
            raise EdgekdError(f"{self.path}: missing or empty ONNX model file")
        try:
            self._sess = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's pybind errors derive only from Exception
            raise EdgekdError(f"{self.path}: onnxruntime cannot load the model ({e})") from e
        inp = self._sess.get_inputs()[0]
        self._input_name = inp.name
        self._batch = inp.shape[0]
        self._clip_shape = tuple(inp.shape[1:])

    def predict(self, features: np.ndarray) -> np.ndarray:
        static = all(isinstance(d, int) for d in self._clip_shape)
        x = _fit(features, self._clip_shape if static else None, self.path)
        batches = [clip[None] for clip in x] if self._batch == 1 else [x]
        logits = [self._sess.run(None, {self._input_name: b})[0] for b in batches]
        return np.concatenate([y.reshape(len(y), -1) for y in logits]).astype(np.float32)


def median_ms(run: Callable[[], object], repeats: int = 20) -> float:
    """Median wall time of `run()` in milliseconds after one warm-up call (first calls allocate)."""
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def host_latency(path: str | os.PathLike[str], primary: str, repeats: int = 20) -> tuple[float, str]:
    """`(ms, source)`: median batch-1 latency on this host, zeros input, on the kernels a phone or server
    runs (XNNPACK LiteRT, onnxruntime; TFLite Micro for an MCU) — not the reference kernels of parity.

    The build times its primary artifact; `inspect` has only a .tflite, so an onnx-primary target is
    timed as LiteRT there and the source says so.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {
            i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
            for i in sess.get_inputs()
        }
        run, runtime = (lambda: sess.run(None, feeds)), "onnx"
    elif primary == "tflm":
        interp = load_tflm(path, measure_arena(path) + ARENA_HEADROOM)
        for i, d in enumerate(open_litert(path).get_input_details()):
            interp.set_input(np.zeros(d["shape"], dtype=d["dtype"]), i)
        run, runtime = interp.invoke, "tflm"
    else:
        with captured_stderr():  # LiteRT prints an "XNNPACK delegate created" banner
            lite = open_litert(path, reference=False)
            lite.allocate_tensors()
        for d in lite.get_input_details():
            lite.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
        run, runtime = lite.invoke, "litert"
    ms = median_ms(run, repeats)
    note = "" if primary == runtime else f"; the target runs {primary}, timed as {runtime}"
    return ms, f"measured on this host ({runtime}, fast kernels, batch 1, median of {repeats}{note})"
