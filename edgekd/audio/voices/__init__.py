"""The voice bank: every offline TTS engine edgekd can speak with, one module each, one registry.

Importing this package registers the engines in `ENGINES`.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgekd.audio.voices import espeak, festival, flite, kokoro, pico, piper, rhvoice  # noqa: F401 (registers)
from edgekd.audio.voices.base import ENGINES, Engine, Voice, get_engine
from edgekd.audio.voices.espeak import espeak_languages, espeak_variants

__all__ = [
    "ENGINES",
    "Engine",
    "Voice",
    "engine_licences",
    "espeak_languages",
    "espeak_variants",
    "get_engine",
    "list_voices",
]


def list_voices(engine: str, n: int, seed: int) -> list[Voice]:
    """`n` distinct voices of `engine` drawn deterministically by `seed`."""
    return get_engine(engine).voices(n, seed)


def engine_licences(voices: Iterable[Voice]) -> dict[str, str]:
    """Licence of each engine the voices use, for a corpus's provenance record."""
    return {name: get_engine(name).licence for name in dict.fromkeys(v.engine for v in voices)}
