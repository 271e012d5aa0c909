"""flite: CMU's small synthesizer (Debian main) with four English voices recorded from four people."""

from __future__ import annotations

import numpy as np

from edgekd.audio.voices.base import (
    DURATION_STRETCHES,
    GridEngine,
    Prosody,
    Voice,
    installed,
    register,
    run_to_wav,
)


@register
class Flite(GridEngine):
    name = "flite"
    licence = "BSD-style (flite and its CMU voices kal16, awb, rms, slt)"
    install = "`apt-get install flite`"
    humans = {"kal16": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}
    # rms ignores flite's F0 settings: its pitch grid would only repeat the same audio.
    FIXED_PITCH = frozenset({"rms"})

    def available(self) -> tuple[bool, str]:
        return installed(["flite"])

    def speakers(self) -> list[str]:
        return list(self.humans)

    def prosodies(self, speaker: str) -> list[Prosody]:
        if speaker in self.FIXED_PITCH:
            return [(s, 1.0, ()) for s in DURATION_STRETCHES]
        return super().prosodies(speaker)

    def synth(self, text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int]:
        cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={voice.speed:g}"]
        cmd += ["--setf", f"f0_shift={voice.pitch:g}", "-t", text]
        return run_to_wav("flite", lambda out: [*cmd, "-o", str(out)])
