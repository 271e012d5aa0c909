"""ESPHome's micro_wake_word inference loop, run on the host with TFLite Micro's own kernels.

What the component does with a microphone stream, step by step (its public source; docs/DESIGN.md):

1. the TFLite Micro frontend runs continuously (30 ms window, 10 ms step, 40 channels; its noise and
   gain state start fresh when detection starts) and yields uint16 features;
2. each frame is mapped to int8 with `contract.feature_to_int8` (integers only, not the model's scale);
3. frames are copied into the model's ``[1, stride, 40]`` input and the model is invoked once every
   ``stride`` frames; the uint8 output enters a ring of the last ``window`` probabilities;
4. after each invoke the word is detected when the ring's sum exceeds ``cutoff * window`` — unless the
   cool-off runs: after start and after each detection (which also zeroes the ring) the component
   waits for ``COOL_OFF_FRAMES`` frames whose newest probability is below the cutoff.

`pymicro-wakeword` runs the same models differently (another input rounding, no clamp, a float mean, no
cool-off), so a figure measured with it is not what an ESPHome device does; this module is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.audio.frontend import MICRO_FEATURE_SCALE, MicroFrontend, frame_end_sample
from edgekd.audio.io import SAMPLE_RATE
from edgekd.errors import EdgekdError
from edgekd.esphome.contract import COOL_OFF_FRAMES, Manifest, feature_to_int8, read_manifest


def frontend_u16(audio: np.ndarray) -> np.ndarray:
    """float32 16 kHz audio -> the frontend's uint16 features [T, 40], one continuous run.

    pymicro-features returns ``u * 0.0390625`` as float32, which is exact (u * 5 / 128 < 2^24), so
    rounding the quotient recovers the integers ESPHome maps.
    """
    features = MicroFrontend()(audio)
    return np.round(features / np.float32(MICRO_FEATURE_SCALE)).astype(np.uint16)


def frame_end_s(frame: int) -> float:
    """When the audio of feature frame `frame` has been heard (its 30 ms window ends)."""
    return float(frame_end_sample(frame)) / SAMPLE_RATE


@dataclass(frozen=True)
class StreamRun:
    """One stream through the component: uint8 probability per invoke and the frames that fired."""

    probabilities: np.ndarray  # uint8 [T // stride]
    stride: int
    detections: list[int]  # feature-frame index at which each detection fired

    @property
    def times_s(self) -> list[float]:
        return [round(frame_end_s(f), 3) for f in self.detections]


def detect(
    probabilities: np.ndarray, stride: int, cutoff: int, window: int, cool_off: int = COOL_OFF_FRAMES
) -> list[int]:
    """The component's decision over a stream's probabilities (one per invoke, in order), frame by
    frame as it runs it: returns the feature frames at which it detects the word."""
    ring = np.zeros(window, dtype=np.int64)
    newest = 0  # the ring slot of the latest probability (the component advances, then writes)
    ignore = -cool_off
    fired = []
    for frame in range(len(probabilities) * stride):
        invoked = (frame + 1) % stride == 0
        if invoked:
            newest = (newest + 1) % window
            ring[newest] = probabilities[frame // stride]
        if ring[newest] < cutoff:
            ignore = min(ignore + 1, 0)
        if invoked and ignore >= 0 and ring.sum() > cutoff * window:
            fired.append(frame)
            ring[:] = 0
            ignore = -cool_off
    return fired


class WakeWordEngine:
    """One micro_wake_word model as the component runs it (TFLite Micro, resource variables and all)."""

    def __init__(self, manifest: Manifest, cutoff: int | None = None, window: int | None = None) -> None:
        from edgekd.verify.tflite_info import load_tflm

        if not manifest.model.is_file():
            raise EdgekdError(f"{manifest.path}: its model {manifest.model} is not there")
        self.manifest = manifest
        self.cutoff = manifest.cutoff if cutoff is None else cutoff
        self.window = manifest.window if window is None else window
        if not 0 <= self.cutoff <= 255 or self.window < 1:
            raise EdgekdError(f"cutoff {self.cutoff} must be in 0..255 and window {self.window} at least 1")
        # the arena the component allocates: a manifest that promises too little fails here, as on the device
        self._interp = load_tflm(manifest.model, manifest.arena_bytes)
        shape = tuple(self._interp.get_input_details(0)["shape"])
        if len(shape) != 3 or shape[0] != 1:
            raise EdgekdError(
                f"{manifest.model}: input {list(shape)} is not a streaming [1, stride, 40] input"
            )
        self.stride = int(shape[1])

    @classmethod
    def from_manifest(
        cls, path: str | Path, cutoff: int | None = None, window: int | None = None
    ) -> WakeWordEngine:
        return cls(read_manifest(path), cutoff, window)

    def probabilities(self, q: np.ndarray, progress: str | None = None) -> np.ndarray:
        """int8 features [T, 40] -> uint8 probability per invoke [T // stride]; state starts fresh.
        `progress`: a bar's label (hours of audio take minutes), or None for no bar."""
        from tqdm import tqdm

        self._interp.reset()  # resource variables back to their CALL_ONCE initial values
        steps = len(q) // self.stride
        out = np.empty(steps, dtype=np.uint8)
        for k in tqdm(range(steps), desc=progress, unit="invoke", unit_scale=True, disable=progress is None):
            self._interp.set_input(q[None, k * self.stride : (k + 1) * self.stride], 0)
            self._interp.invoke()
            out[k] = self._interp.get_output(0).reshape(-1)[0]
        return out

    def run(self, audio: np.ndarray, progress: str | None = None) -> StreamRun:
        """float32 16 kHz audio through the whole loop (frontend, mapping, model, decision)."""
        probs = self.probabilities(feature_to_int8(frontend_u16(audio)), progress)
        return StreamRun(probs, self.stride, detect(probs, self.stride, self.cutoff, self.window))
