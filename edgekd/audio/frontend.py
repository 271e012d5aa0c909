"""Feature frontends: one code path for training, evaluation and INT8 calibration.

- `MicroFrontend` is the TFLite Micro audio frontend (the C code ESP-IDF/ESPHome firmware runs),
  called through `pymicro-features`, so an MCU model sees on the device exactly what it saw in training.
- `LogMel` is a plain log-mel spectrogram in torch for mobile/server targets. Its defaults give the
  same frame count as the micro frontend (98 frames for 1 s), so model input shapes match.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from edgekd.audio.io import SAMPLE_RATE, to_pcm16
from edgekd.errors import ConfigError, EdgekdError

# pymicro-features' binding multiplies the frontend's uint16 output by this (1/25.6), as microWakeWord
# and ESPHome's micro_wake_word do: float feature = uint16 * 0.0390625.
MICRO_FEATURE_SCALE = 0.0390625


class Frontend(Protocol):
    """What the rest of edgekd relies on: fixed-size float32 frames from 16 kHz audio."""

    name: str
    n_features: int

    def __call__(self, audio: np.ndarray) -> np.ndarray: ...

    def batch(self, clips: np.ndarray) -> np.ndarray: ...

    def n_frames(self, n_samples: int) -> int: ...

    def params(self) -> dict[str, Any]: ...


class MicroFrontend:
    """TFLite Micro frontend: 40 channels, 30 ms Hann window, 10 ms step, noise reduction, PCAN, log.

    Frames appear once 30 ms are buffered and then every 10 ms, so T = S // 160 - 2 (98 for 1 s);
    a trailing partial 10 ms step is dropped, as on the device. State (noise estimate, PCAN) is reset
    per clip: training clips are independent, whereas the device runs the frontend continuously.
    """

    name = "micro"
    n_features = 40
    step = 160  # samples per 10 ms step; the binding consumes exactly this many per call
    window = 480  # 30 ms

    def __init__(self) -> None:
        try:
            from pymicro_features import MicroFrontend as _Impl
        except ImportError as exc:
            raise EdgekdError(
                "the micro frontend needs pymicro-features; install it with "
                "`pip install pymicro-features==2.0.2`"
            ) from exc
        self._impl = _Impl()

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """float32 16 kHz [S] in [-1, 1] -> float32 [T, 40] (int16 conversion clips like the ADC)."""
        self._impl.reset()
        pcm = to_pcm16(audio).tobytes()
        nbytes = 2 * self.step
        frames = []
        for off in range(0, len(pcm) - nbytes + 1, nbytes):
            out = self._impl.process_samples(pcm[off : off + nbytes])
            if out.features:
                frames.append(out.features)
        return np.asarray(frames, dtype=np.float32).reshape(-1, self.n_features)

    def batch(self, clips: np.ndarray) -> np.ndarray:
        """[N, S] -> [N, T, 40]; the C frontend is streaming, so clips run one after another."""
        return np.stack([self(clip) for clip in clips])

    def n_frames(self, n_samples: int) -> int:
        return max(0, (n_samples - self.window) // self.step + 1)

    def params(self) -> dict[str, Any]:
        """Everything firmware needs to reproduce the features (values set in pymicro-features'
        src/micro_features.cpp `init_cfg`; all other behaviour is TFLM microfrontend/lib)."""
        return {
            "name": self.name,
            "implementation": "tflite-micro experimental/microfrontend via pymicro-features 2.0.2",
            "sample_rate": SAMPLE_RATE,
            "input": "int16 PCM, round(x * 32768) clipped to [-32768, 32767]",
            "window_ms": 30,
            "step_ms": 10,
            "window": "hann (0.5 - 0.5 cos(2 pi (i + 0.5) / 480)), 12-bit fixed point",
            "fft_size": 512,
            "n_channels": self.n_features,
            "lower_band_limit_hz": 125.0,
            "upper_band_limit_hz": 7500.0,
            "mel_scale": "htk (1127 ln(1 + f / 700))",
            "noise_reduction": {
                "smoothing_bits": 10,
                "even_smoothing": 0.025,
                "odd_smoothing": 0.06,
                "min_signal_remaining": 0.05,
            },
            "pcan_gain_control": {"enable_pcan": True, "strength": 0.95, "offset": 80.0, "gain_bits": 21},
            "log_scale": {"enable_log": True, "scale_shift": 6},
            "output": "uint16 = round(64 ln(energy)); float feature = uint16 * feature_scale",
            "feature_scale": MICRO_FEATURE_SCALE,
            "frames_for_1s": self.n_frames(SAMPLE_RATE),
            "state": "reset per clip",
        }


def frame_end_sample(frame: np.ndarray | int) -> np.ndarray:
    """Samples of audio a streaming micro frontend has heard when it emits frame `frame` (its 30 ms
    window ends): the clock every streaming figure (detection times, teacher alignment) is read on."""
    return MicroFrontend.step * np.asarray(frame) + MicroFrontend.window


class LogMel:
    """Log-mel spectrogram: torch.stft (center=False, periodic Hann, n_fft = window) + HTK mel filters
    (transformers' `mel_filter_bank`, unnormalised, like torchaudio's default), log(power mel + 1e-6).

    Defaults: 25 ms window (400 samples), 10 ms hop: T = (S - 400) // 160 + 1 = 98 for 1 s.
    """

    name = "logmel"

    def __init__(
        self,
        n_mels: int = 40,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        fmin: float = 20.0,
        fmax: float = 7600.0,
    ) -> None:
        from transformers.audio_utils import mel_filter_bank

        if not 0 <= fmin < fmax <= SAMPLE_RATE / 2:
            raise ConfigError(f"logmel needs 0 <= fmin < fmax <= {SAMPLE_RATE // 2} Hz, got {fmin}..{fmax}")
        self.n_features = n_mels
        self.win_ms, self.hop_ms, self.fmin, self.fmax = win_ms, hop_ms, fmin, fmax
        self.win = round(win_ms * SAMPLE_RATE / 1000)
        self.hop = round(hop_ms * SAMPLE_RATE / 1000)
        fb = mel_filter_bank(
            num_frequency_bins=self.win // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=fmin,
            max_frequency=fmax,
            sampling_rate=SAMPLE_RATE,
            norm=None,
            mel_scale="htk",
        )
        self._fb = torch.from_numpy(fb).float()
        self._window = torch.hann_window(self.win)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        return self.batch(np.asarray(audio)[None])[0]

    def batch(self, clips: np.ndarray) -> np.ndarray:
        """[N, S] -> [N, T, n_mels] in one vectorised STFT."""
        x = torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32))
        with torch.no_grad():
            spec = torch.stft(
                x,
                n_fft=self.win,
                hop_length=self.hop,
                win_length=self.win,
                window=self._window,
                center=False,
                return_complex=True,
            )
            mel = spec.abs().pow(2).transpose(1, 2) @ self._fb
            return torch.log(mel + 1e-6).numpy()

    def n_frames(self, n_samples: int) -> int:
        return max(0, (n_samples - self.win) // self.hop + 1)

    def params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sample_rate": SAMPLE_RATE,
            "n_mels": self.n_features,
            "win_ms": self.win_ms,
            "hop_ms": self.hop_ms,
            "n_fft": self.win,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "window": "hann (periodic)",
            "center": False,
            "spectrum": "power",
            "mel_scale": "htk",
            "mel_norm": None,
            "log": "ln(mel + 1e-6)",
            "frames_for_1s": self.n_frames(SAMPLE_RATE),
        }


_FRONTENDS = {"micro": MicroFrontend, "logmel": LogMel}


def make_frontend(name: str, **params: Any) -> Frontend:
    if name not in _FRONTENDS:
        raise ConfigError(f"unknown frontend {name!r}; choose one of {', '.join(_FRONTENDS)}")
    if name == "micro" and params:
        raise ConfigError(
            f"the micro frontend takes no parameters (got {', '.join(params)}): they are fixed by the "
            "device firmware"
        )
    try:
        return _FRONTENDS[name](**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for frontend {name!r}: {exc}") from exc


def compute_features(
    frontend: Frontend, clips: np.ndarray, progress: bool = False, batch_size: int = 256
) -> np.ndarray:
    """[N, S] equal-length clips -> float32 [N, T, F], batched where the frontend allows."""
    clips = np.asarray(clips, dtype=np.float32)
    n, s = clips.shape
    out = np.empty((n, frontend.n_frames(s), frontend.n_features), dtype=np.float32)
    bar = tqdm(total=n, desc=f"features ({frontend.name})", unit="clip", disable=not progress)
    with bar:
        for start in range(0, n, batch_size):
            chunk = clips[start : start + batch_size]
            out[start : start + len(chunk)] = frontend.batch(chunk)
            bar.update(len(chunk))
    return out
