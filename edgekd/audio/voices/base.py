"""What every offline TTS engine shares: the `Voice` value, the `Engine` interface and its registry.

An engine is one entry in `ENGINES`. It says whether it can run here (and what to install if not),
draws voices deterministically from a seed, and turns (text, voice) into raw audio at its own sample
rate; `edgekd.audio.synth.Synthesizer` does the common post-processing.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import soundfile as sf

from edgekd.errors import ConfigError, EdgekdError

# Prosody grid of the engines whose `speed` is a duration stretch (>1 slower) and `pitch` a factor on the
# voice's own mean F0 (1 = as recorded): flite, festival, RHVoice, SVOX pico.
DURATION_STRETCHES = (0.85, 0.92, 1.0, 1.1, 1.2)
PITCH_FACTORS = (0.85, 0.92, 1.0, 1.08, 1.16)
# A command-line engine that takes longer than this for one word is stuck, not slow.
CLI_TIMEOUT_S = 60.0
# How the opt-in engines (Debian contrib/non-free packages, restrictive licences) get installed.
NONFREE_SETUP = "`EDGEKD_NONFREE_VOICES=1 bash scripts/setup.sh`"

Prosody = tuple[float, float, tuple[tuple[str, float], ...]]  # (speed, pitch, extra)


@dataclass(frozen=True)
class Voice:
    """One synthesis setting of one engine; `speed`, `pitch` and `extra` mean what its engine says.

    espeak / mbrola: `name` is an espeak-ng voice ("en-us+f3", "mb-us1"), `speed` in words per minute,
    `pitch` 0-99. Piper: `speed` is length_scale, `pitch` unused (0), noise settings in `extra`.
    flite, festival, RHVoice, pico: `speed` is a duration stretch, `pitch` a factor on the voice's F0.
    Kokoro: `name` names a blend of style packs whose weights are in `extra`, `speed` is Kokoro's own.
    """

    engine: str
    name: str
    speed: float
    pitch: float
    extra: tuple[tuple[str, float], ...] = ()

    @property
    def id(self) -> str:
        """Stable identifier, e.g. "espeak:en-us+f3:s155:p45": one voice, one setting."""
        return get_engine(self.engine).voice_id(self)

    @property
    def speaker(self) -> str:
        """Who is heard: settings that differ only in prosody share it, and so do the voices of one
        recorded person across engines ("human:slt"), so a corpus split can keep a person in one split."""
        return get_engine(self.engine).speaker(self)


class Engine(ABC):
    """One offline TTS engine. Instances are per-process singletons that may keep sessions warm."""

    name: ClassVar[str]
    licence: ClassVar[str]
    install: ClassVar[str]  # how to get what it needs, shown whenever it is missing
    # voice name -> the recorded person behind it, for voices that other engines also speak
    humans: ClassVar[Mapping[str, str]] = {}

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, "") when it can synthesize here, else (False, what is missing)."""

    @abstractmethod
    def voices(self, n: int, seed: int) -> list[Voice]:
        """`n` distinct voices drawn deterministically by `seed`; a smaller draw is a prefix of a larger."""

    @abstractmethod
    def synth(self, text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int]:
        """Raw mono float audio and its sample rate. `seed` feeds engines that sample noise (Piper), so a
        clip is a pure function of its arguments whatever was synthesized before it in this process."""

    def prepare(self) -> None:  # noqa: B027 (most engines need none)
        """One-time setup that must not race: run once in the parent before worker processes start."""

    def require(self) -> None:
        ok, reason = self.available()
        if not ok:
            raise EdgekdError(f"TTS engine {self.name!r} is unavailable: {reason}. Install: {self.install}")

    def voice_id(self, voice: Voice) -> str:
        return f"{voice.engine}:{voice.name}:s{voice.speed:g}:p{voice.pitch:g}"

    def speaker(self, voice: Voice) -> str:
        human = self.humans.get(voice.name)
        return f"human:{human}" if human else f"{voice.engine}:{voice.name}"


class GridEngine(Engine):
    """An engine with a fixed set of speakers, each heard at a grid of prosody settings."""

    @abstractmethod
    def speakers(self) -> list[str]:
        """Voice names, each a distinct timbre."""

    def prosodies(self, speaker: str) -> list[Prosody]:
        return [(s, p, ()) for s in DURATION_STRETCHES for p in PITCH_FACTORS]

    def voices(self, n: int, seed: int) -> list[Voice]:
        """Every speaker's k-th prosody comes before anyone's (k+1)-th, so a small draw never puts one
        timbre in two splits; speakers and each speaker's prosodies are shuffled by `seed`."""
        rng = random.Random(seed)
        speakers = self.speakers()
        rng.shuffle(speakers)
        per_speaker: dict[str, list[Prosody]] = {}
        for spk in speakers:
            options = self.prosodies(spk)
            per_speaker[spk] = rng.sample(options, len(options))
        grid = [
            Voice(self.name, spk, *per_speaker[spk][k])
            for k in range(max(map(len, per_speaker.values()), default=0))
            for spk in speakers
            if k < len(per_speaker[spk])
        ]
        if not 0 < n <= len(grid):
            raise ConfigError(f"asked for {n} {self.name} voices; between 1 and {len(grid)} are available")
        return grid[:n]


ENGINES: dict[str, Engine] = {}


def register(cls: type[Engine]) -> type[Engine]:
    """Class decorator: one instance per process, registered under the engine's name."""
    ENGINES[cls.name] = cls()
    return cls


def get_engine(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown TTS engine {name!r}; choose one of {', '.join(ENGINES)}") from None


def installed(binaries: Sequence[str] = (), paths: Sequence[Path] = ()) -> tuple[bool, str]:
    """`Engine.available` for engines made of programs and data files: all on PATH / present?"""
    missing = [b for b in binaries if shutil.which(b) is None] + [str(p) for p in paths if not p.exists()]
    return (not missing, f"missing {', '.join(missing)}" if missing else "")


@contextmanager
def temp_wav() -> Iterator[Path]:
    """A fresh .wav path for an engine that can only write its audio to a file; removed afterwards
    (worker processes skip atexit handlers, so nothing may wait for one)."""
    fd, name = tempfile.mkstemp(prefix="edgekd-tts-", suffix=".wav")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def read_wav_output(engine: str, out: Path, what: str) -> tuple[np.ndarray, int]:
    """The audio an engine wrote to `out`; an empty file means it failed without saying so."""
    if out.stat().st_size == 0:
        raise EdgekdError(f"{engine} wrote no audio for {what}")
    audio, sr = sf.read(out, dtype="float32")
    return audio, int(sr)


def run_to_wav(
    engine: str, command: Callable[[Path], list[str]], stdin: bytes | None = None
) -> tuple[np.ndarray, int]:
    """Run a command-line engine, `command(out)`, that writes a WAV file to `out`, and read it back."""
    with temp_wav() as out:
        cmd = command(out)
        try:
            proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise EdgekdError(
                f"{engine} did not finish within {CLI_TIMEOUT_S:g} s: {' '.join(cmd)}"
            ) from None
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise EdgekdError(f"{engine} failed (exit {proc.returncode}) running {' '.join(cmd)}: {err}")
        return read_wav_output(engine, out, " ".join(cmd))


def onnx_session(model: str | bytes) -> Any:
    """An onnxruntime CPU session on one thread: a worker process per core, and float sums always in the
    same order, so a clip is the same bytes in any worker."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
