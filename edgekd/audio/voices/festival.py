"""Festival (Debian main): two diphone voices and one HTS voice, driven through long-lived processes.

Starting festival and loading a voice costs ~0.4 s, synthesizing a word ~0.05 s, so each process keeps
one voice loaded and is fed Scheme commands on stdin. Every command is wrapped so festival answers with
an OK or ERR marker line; prosody is set from saved defaults before each word, so a clip never depends
on what the process said before.
"""

from __future__ import annotations

import atexit
import os
import select
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgekd.audio.voices.base import (
    DURATION_STRETCHES,
    GridEngine,
    Prosody,
    Voice,
    installed,
    read_wav_output,
    register,
    temp_wav,
)
from edgekd.errors import EdgekdError

START_TIMEOUT_S = 120.0  # loading a voice on a busy machine
WORD_TIMEOUT_S = 30.0
OK, ERR = "EDGEKD_OK", "EDGEKD_ERR"
VOICE_DIR = Path("/usr/share/festival/voices")


class _Prosody(NamedTuple):
    """How a kind of voice takes prosody: Scheme run once the voice is loaded to save its own defaults,
    and a template that sets the next word's prosody from them."""

    save_defaults: str
    template: str  # fields: stretch (>1 slower), rate (1 / stretch), pitch (factor on the mean F0)
    has_pitch: bool


class _FestivalVoice(NamedTuple):
    folder: str  # under VOICE_DIR
    prosody: _Prosody


# Diphone voices: duration stretch and the intonation model's target mean F0 (int_lr_params).
_DIPHONE = _Prosody(
    "(set! edgekd_base int_lr_params)",
    "(Parameter.set 'Duration_Stretch {stretch:g}) (set! int_lr_params (cons (list 'target_f0_mean "
    "(* {pitch:g} (car (cdr (assoc 'target_f0_mean edgekd_base))))) edgekd_base))",
    has_pitch=True,
)
# The HTS voice takes a speaking rate (its engine's "-r"); its F0 comes from its own model.
_HTS = _Prosody(
    "(set! edgekd_base hts_engine_params)",
    '(set! hts_engine_params (cons (list "-r" {rate:g}) edgekd_base))',
    has_pitch=False,
)
VOICES = {
    "kal_diphone": _FestivalVoice("english/kal_diphone", _DIPHONE),
    "ked_diphone": _FestivalVoice("english/ked_diphone", _DIPHONE),
    "cmu_us_slt_arctic_hts": _FestivalVoice("us/cmu_us_slt_arctic_hts", _HTS),
}


@register
class Festival(GridEngine):
    name = "festival"
    licence = "X11-style free licences (festival, festlex-cmu/-poslex, kal/ked diphones); BSD-style (slt HTS)"
    install = (
        "`apt-get install festival festlex-cmu festlex-poslex festvox-kallpc16k festvox-kdlpc16k "
        "festvox-us-slt-hts`"
    )
    humans = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt"}

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}

    def available(self) -> tuple[bool, str]:
        return installed(["festival"], [VOICE_DIR / v.folder for v in VOICES.values()])

    def speakers(self) -> list[str]:
        return list(VOICES)

    def prosodies(self, speaker: str) -> list[Prosody]:
        if not VOICES[speaker].prosody.has_pitch:
            return [(s, 1.0, ()) for s in DURATION_STRETCHES]
        return super().prosodies(speaker)

    def synth(self, text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int]:
        session = self._sessions.get(voice.name)
        if session is None or not session.alive():
            session = self._sessions[voice.name] = _Session(voice.name)
        template = VOICES[voice.name].prosody.template
        prosody = template.format(stretch=voice.speed, pitch=voice.pitch, rate=1 / voice.speed)
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        utterance = f'(utt.synth (Utterance Text "{quoted}"))'
        with temp_wav() as out:
            session.call(f'{prosody} (utt.save.wave {utterance} "{out}" \'riff)')
            return read_wav_output("festival", out, f"{text!r} with voice {voice.id}")


class _Session:
    """One `festival --pipe` process with one voice loaded."""

    def __init__(self, voice: str) -> None:
        self.voice = voice
        self._proc = subprocess.Popen(
            ["festival", "--pipe"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # diagnostics arrive in order, before the marker they belong to
        )
        atexit.register(self.close)
        self.call(f"(voice_{voice}) {VOICES[voice].prosody.save_defaults}", START_TIMEOUT_S)

    def alive(self) -> bool:
        return self._proc.poll() is None

    def call(self, scheme: str, timeout: float = WORD_TIMEOUT_S) -> None:
        """Evaluate `scheme`; raise with festival's own messages if it fails, hangs or dies."""
        marked = f'(unwind-protect (begin {scheme} (format t "{OK}\\n")) (format t "{ERR}\\n"))'
        command = f"{marked}\n(fflush nil)\n"
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(command.encode("utf-8"))
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died: reading below reports what it said
        lines = self._read_until_marker(timeout)
        if lines[-1] != OK:
            said = " | ".join(lines[:-1]) or "no message"
            raise EdgekdError(f"festival (voice {self.voice}) failed on {scheme!r}: {said}")

    def _read_until_marker(self, timeout: float) -> list[str]:
        assert self._proc.stdout is not None
        fd, buf, deadline = self._proc.stdout.fileno(), b"", time.monotonic() + timeout
        while True:
            lines = buf.decode("utf-8", errors="replace").splitlines()
            end = next((i for i, line in enumerate(lines) if line in (OK, ERR)), None)
            if end is not None:
                return lines[: end + 1]
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                self.close()
                why = "exited" if ready else f"did not answer within {timeout:g} s"
                raise EdgekdError(f"festival (voice {self.voice}) {why}: {' | '.join(lines) or 'no message'}")
            buf += chunk

    def close(self) -> None:
        if self.alive():
            self._proc.kill()
        self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()
