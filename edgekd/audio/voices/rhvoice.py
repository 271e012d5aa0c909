"""RHVoice (opt-in, Debian non-free): the four English voices recorded from CMU ARCTIC speakers, LGPL.

The package also installs evgeniy-eng and lyubov, which are CC-BY-NC-ND: they are never used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.audio.voices.base import (
    NONFREE_SETUP,
    GridEngine,
    Voice,
    installed,
    register,
    run_to_wav,
)

VOICE_DIR = Path("/usr/share/RHVoice/voices")


@register
class RHVoice(GridEngine):
    name = "rhvoice"
    licence = "LGPL-2.1-or-later (RHVoice and its voices alan, bdl, clb, slt)"
    install = f"{NONFREE_SETUP} (Debian non-free: rhvoice rhvoice-english)"
    humans = {"alan": "alan", "bdl": "bdl", "clb": "clb", "slt": "slt"}

    def available(self) -> tuple[bool, str]:
        return installed(["RHVoice-test"], [VOICE_DIR / v for v in self.humans])

    def speakers(self) -> list[str]:
        return list(self.humans)

    def synth(self, text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int]:
        # rate and pitch are percentages of the voice's own (100 = as recorded)
        cmd = ["RHVoice-test", "-p", voice.name, "-r", f"{100 / voice.speed:.0f}"]
        cmd += ["-t", f"{100 * voice.pitch:.0f}"]
        return run_to_wav("RHVoice", lambda out: [*cmd, "-o", str(out)], stdin=text.encode("utf-8"))
