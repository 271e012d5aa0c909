"""espeak-ng: many formant voices and variants, less natural, very fast; and MBROLA diphone voices
spoken through it (opt-in: their databases are Debian non-free)."""

from __future__ import annotations

import io
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf

from edgekd.audio.voices.base import NONFREE_SETUP, GridEngine, Prosody, Voice, installed, register
from edgekd.errors import EdgekdError

# espeak-ng prosody levels: words per minute (default 175) and pitch 0-99 (default 50).
ESPEAK_SPEEDS = (130, 155, 180, 205)
ESPEAK_PITCHES = (30, 45, 60, 75)


@register
class Espeak(GridEngine):
    name = "espeak"
    licence = "GPL-3.0-or-later (espeak-ng and its voices)"
    install = "`apt-get install espeak-ng` or synthesize with other engines only"

    def available(self) -> tuple[bool, str]:
        return installed(["espeak-ng"])

    def speakers(self) -> list[str]:
        self.require()
        variants = [f"{lang}+{var}" for lang in espeak_languages() for var in espeak_variants()]
        return [*espeak_languages(), *variants]

    def prosodies(self, speaker: str) -> list[Prosody]:
        return [(float(s), float(p), ()) for s in ESPEAK_SPEEDS for p in ESPEAK_PITCHES]

    def synth(self, text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int]:
        # Text goes through stdin so a word starting with "-" is never parsed as a flag.
        cmd = ["espeak-ng", "-v", voice.name, "-s", f"{voice.speed:g}", "-p", f"{voice.pitch:g}", "--stdout"]
        proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True)
        if proc.returncode != 0 or not proc.stdout:
            raise EdgekdError(
                f"espeak-ng failed for voice {voice.id}: {proc.stderr.decode(errors='replace').strip()}; "
                "check the voice name with `espeak-ng --voices=en`"
            )
        audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
        return audio, int(sr)


@register
class Mbrola(Espeak):
    """espeak-ng's front end with MBROLA's recorded diphones (four native English databases)."""

    name = "mbrola"
    licence = (
        "MBROLA databases us1/us2/us3/en1: use only with the MBROLA program, never sold or put in a sold "
        "product (non-commercial); mbrola AGPL-3.0; espeak-ng GPL-3.0-or-later"
    )
    install = f"{NONFREE_SETUP} (Debian contrib/non-free: mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1)"
    DATABASES = ("us1", "us2", "us3", "en1")

    def available(self) -> tuple[bool, str]:
        return installed(["espeak-ng", "mbrola"], [Path("/usr/share/mbrola") / d / d for d in self.DATABASES])

    def speakers(self) -> list[str]:
        return [f"mb-{d}" for d in self.DATABASES]


@cache
def espeak_languages() -> tuple[str, ...]:
    """English voices espeak-ng can speak by itself (the MBROLA ones are the `mbrola` engine)."""
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
    lines = subprocess.run(["espeak-ng", flag], capture_output=True, text=True, check=True).stdout
    lines = lines.splitlines()
    header = lines[0]
    cols = ["Pty", "Language", "Age/Gender", "VoiceName", "File", "Other Languages"]
    starts = [header.index(c) for c in cols] + [None]
    return [
        {c: line[starts[i] : starts[i + 1]].strip() for i, c in enumerate(cols)}
        for line in lines[1:]
        if line.strip()
    ]
