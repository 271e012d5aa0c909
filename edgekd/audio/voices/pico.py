"""SVOX pico (opt-in, Debian non-free `libttspico-utils`): two recorded English voices, US and GB."""

from __future__ import annotations

from xml.sax.saxutils import escape

import numpy as np

from edgekd.audio.voices.base import (
    NONFREE_SETUP,
    GridEngine,
    Voice,
    installed,
    register,
    run_to_wav,
)


@register
class Pico(GridEngine):
    name = "pico"
    licence = "Apache-2.0 (SVOX pico engine and lingware)"
    install = f"{NONFREE_SETUP} (Debian non-free: libttspico-utils)"

    def available(self) -> tuple[bool, str]:
        return installed(["pico2wave"])

    def speakers(self) -> list[str]:
        return ["en-US", "en-GB"]

    def synth(self, text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int]:
        # pico has no prosody flags, only markup: speed and pitch levels in percent (100 = as recorded).
        # pico2wave picks the format from the name, which must end in .wav.
        marked = (
            f"<speed level='{100 / voice.speed:.0f}'><pitch level='{100 * voice.pitch:.0f}'>"
            f"{escape(text)}</pitch></speed>"
        )
        return run_to_wav("pico2wave", lambda out: ["pico2wave", "-l", voice.name, "-w", str(out), marked])
