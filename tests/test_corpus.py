"""The labelled corpus: Speech Commands folders and the offline synthetic corpus.

Both must give fixed-length int16 clips whose labels follow `cfg.classes`, with a leakage unit
(speaker / voice) that never spans two splits, and bad input reported by reason (or by name under strict).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgekd.audio.io import SAMPLE_RATE, write_wav
from edgekd.config import SILENCE, UNKNOWN, BuildConfig, load_config
from edgekd.data.corpus import (
    BACKGROUND_DIR,
    SPLITS,
    Corpus,
    _draw_voices,
    _group_split,
    build_corpus,
    corpus_voices,
    load_speech_commands,
    synthesize,
)
from edgekd.errors import DataError

LABELS = ["yes", "no", "up"]
# Each folder's clips are a tone at its own frequency, so a row's label can be checked from its audio.
FREQ = {"yes": 300.0, "no": 500.0, "up": 700.0, "cat": 900.0, "dog": 1100.0}
BG_FREQ = 1000.0  # a pure tone on an exact FFT bin of a 1 s clip


def _cfg(root: Path, *overrides: str) -> BuildConfig:
    labels = ", ".join(f'"{w}"' for w in LABELS)
    return load_config("esp32s3", "kws12", [f"labels=[{labels}]", f"data.path={root}", *overrides])


def _burst(freq: float, rng: np.random.Generator, seconds: float = 0.6) -> np.ndarray:
    """A windowed tone burst with a little noise: speech-like level, never silent, never clipped."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    x = 0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.28)) * np.hanning(n)
    return (x + 0.005 * rng.standard_normal(n)).astype(np.float32)


def _speakers(n: int) -> list[str]:
    """`n` speaker ids whose hashed splits cover train, validation and test (else the corpus is refused)."""
    ids = [f"spk{i:03d}" for i in range(200)]
    first = {s: next(i for i in ids if _group_split(i, 0.1, 0.15) == s) for s in SPLITS}
    rest = [i for i in ids if i not in first.values()]
    return [*first.values(), *rest][:n]


def _tree(root: Path, words: list[str], speakers: list[str], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for word in words:
        for spk in speakers:
            write_wav(root / word / f"{spk}_nohash_0.wav", _burst(FREQ[word], rng))
    return root


def _peak_hz(clip: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(clip.astype(np.float64)))
    return float(np.argmax(spec) * SAMPLE_RATE / len(clip))


def _speech_rows(corpus: Corpus) -> np.ndarray:
    return np.flatnonzero(corpus.labels != corpus.classes.index(SILENCE))


# ---------------------------------------------------------------- Speech Commands layout


def test_labels_follow_classes_other_folders_are_unknown_and_silence_is_added(tmp_path: Path) -> None:
    root = _tree(tmp_path / "sc", [*LABELS, "cat", "dog"], _speakers(4))
    corpus = load_speech_commands(_cfg(root), progress=False)
    assert corpus.classes == [*LABELS, UNKNOWN, SILENCE]
    assert corpus.clips.dtype == np.int16 and corpus.clips.shape[1] == SAMPLE_RATE
    counts = np.bincount(corpus.labels, minlength=len(corpus.classes))
    assert counts.tolist()[:4] == [4, 4, 4, 8]
    assert counts[corpus.classes.index(SILENCE)] >= 3
    assert corpus.skipped == {}
    for i in _speech_rows(corpus):  # each row's audio is the tone of a folder mapped to its label
        hz = _peak_hz(corpus.clips[i])
        word = corpus.classes[corpus.labels[i]]
        allowed = [FREQ["cat"], FREQ["dog"]] if word == UNKNOWN else [FREQ[word]]
        assert min(abs(hz - f) for f in allowed) < 5, (word, hz)
    silence = corpus.labels == corpus.classes.index(SILENCE)
    assert all(g.startswith("noise:") for g in corpus.groups[silence])
    assert np.sqrt(np.mean((corpus.clips[silence] / 32768.0) ** 2)) < 0.06  # noise only, at most -26 dBFS


def test_official_test_set_layout_reads_unknown_and_silence_folders_as_those_classes(tmp_path: Path) -> None:
    """speech_commands_test_set_v0.02: label folders plus `_unknown_/` and `_silence_/` of real clips."""
    root = _tree(tmp_path / "sc", LABELS, _speakers(4))
    rng = np.random.default_rng(1)
    for i in range(3):
        write_wav(root / UNKNOWN / f"cat_spk{i}_nohash_0.wav", _burst(FREQ["cat"], rng))
    quiet = 0.0005 * rng.standard_normal(SAMPLE_RATE)  # -66 dBFS room tone: a real silence clip is quiet
    for i in range(2):
        write_wav(root / SILENCE / f"room_{i}.wav", quiet.astype(np.float32))
    _background(root)
    corpus = load_speech_commands(_cfg(root), progress=False, held_out=True)
    counts = np.bincount(corpus.labels, minlength=len(corpus.classes))
    assert counts.tolist() == [4, 4, 4, 3, 2]  # the folder's silence clips, none synthesised
    assert corpus.skipped == {} and len(corpus.backgrounds) == 2
    unknown = np.flatnonzero(corpus.labels == corpus.classes.index(UNKNOWN))
    assert all(abs(_peak_hz(corpus.clips[i]) - FREQ["cat"]) < 5 for i in unknown)
    silence = corpus.labels == corpus.classes.index(SILENCE)
    assert np.abs(corpus.clips[silence]).max() < 100
    assert set(corpus.splits.tolist()) == {"test"}


def test_build_corpus_reads_the_folder_when_data_path_is_set(tmp_path: Path) -> None:
    root = _tree(tmp_path / "sc", LABELS, _speakers(8))
    corpus = build_corpus(_cfg(root), progress=False)
    assert sum(g.startswith("speaker:") for g in corpus.groups) == 24


def test_a_speaker_never_spans_two_splits(tmp_path: Path) -> None:
    speakers = [f"{i:08x}" for i in range(40)]
    root = _tree(tmp_path / "sc", LABELS, speakers)
    corpus = load_speech_commands(_cfg(root), progress=False)
    rows = _speech_rows(corpus)
    split_of: dict[str, set[str]] = {}
    for g, s in zip(corpus.groups[rows], corpus.splits[rows], strict=True):
        split_of.setdefault(str(g), set()).add(str(s))
    assert set(split_of) == {f"speaker:{s}" for s in speakers}
    assert all(len(s) == 1 for s in split_of.values())  # group -> split is a function
    assert {next(iter(s)) for s in split_of.values()} == set(SPLITS)
    n_train = sum(s == {"train"} for s in split_of.values())
    assert 18 <= n_train <= 38  # ~75% of 40 speakers


def test_validation_and_testing_lists_are_honoured(tmp_path: Path) -> None:
    # one file per speaker, so a row's group names its file; the lists override the speaker hash
    speakers = {w: [f"{w}{i}" for i in range(6)] for w in [*LABELS, "cat"]}
    rng = np.random.default_rng(1)
    for w, spks in speakers.items():
        for spk in spks:
            write_wav(tmp_path / w / f"{spk}_nohash_0.wav", _burst(FREQ[w], rng))
    val = {"yes": "yes0", "no": "no1", "cat": "cat2"}
    test = {"up": "up3", "yes": "yes4", "cat": "cat5"}
    (tmp_path / "validation_list.txt").write_text("".join(f"{w}/{s}_nohash_0.wav\n" for w, s in val.items()))
    (tmp_path / "testing_list.txt").write_text(
        "\n".join(f"{w}/{s}_nohash_0.wav" for w, s in test.items()) + "\n\n"
    )
    corpus = load_speech_commands(_cfg(tmp_path), progress=False)
    rows = _speech_rows(corpus)
    got = {
        str(g).removeprefix("speaker:"): str(s)
        for g, s in zip(corpus.groups[rows], corpus.splits[rows], strict=True)
    }
    assert len(got) == 24
    assert {s for s, split in got.items() if split == "validation"} == set(val.values())
    assert {s for s, split in got.items() if split == "test"} == set(test.values())
    assert sum(split == "train" for split in got.values()) == 24 - len(val) - len(test)


def _background(root: Path) -> None:
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    write_wav(root / BACKGROUND_DIR / "a_tone.wav", 0.5 * np.sin(2 * np.pi * BG_FREQ * t))
    t8 = np.arange(int(1.5 * 8000)) / 8000
    sf.write(
        root / BACKGROUND_DIR / "b_8k.wav", 0.3 * np.sin(2 * np.pi * BG_FREQ * t8), 8000, subtype="PCM_16"
    )


def _tone_share(clip: np.ndarray) -> float:
    """Share of a clip's energy within 20 Hz of the background tone."""
    spec = np.abs(np.fft.rfft(clip.astype(np.float64))) ** 2
    k = int(BG_FREQ * len(clip) / SAMPLE_RATE)
    return float(spec[k - 20 : k + 21].sum() / (spec.sum() + 1e-12))


def test_background_noise_is_loaded_resampled_and_used_for_silence(tmp_path: Path) -> None:
    root = _tree(tmp_path / "sc", LABELS, _speakers(8))
    cfg = _cfg(root, "data.synth.silence_fraction=1.0")
    plain = load_speech_commands(cfg, progress=False)
    _background(root)
    corpus = load_speech_commands(cfg, progress=False)
    assert [len(b) for b in corpus.backgrounds] == [2 * SAMPLE_RATE, int(1.5 * SAMPLE_RATE)]
    assert all(b.dtype == np.float32 for b in corpus.backgrounds)
    assert plain.backgrounds == []
    np.testing.assert_array_equal(corpus.labels, plain.labels)  # the noise folder is not a label or unknown
    sil = corpus.classes.index(SILENCE)
    assert np.sum(corpus.labels == sil) == 24
    with_bg = [_tone_share(c) > 0.7 for c in corpus.clips[corpus.labels == sil]]
    without = [_tone_share(c) > 0.7 for c in plain.clips[plain.labels == sil]]
    assert np.mean(with_bg) >= 0.5  # most silence clips are cut from the recordings (80% in expectation)
    assert not any(without)


# ---------------------------------------------------------------- bad audio


def _write_bad(reason: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if reason == "unreadable":
        path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage bytes, not audio" * 3)
    elif reason == "empty":
        sf.write(path, np.zeros(0, np.float32), SAMPLE_RATE, subtype="PCM_16")
    elif reason == "silent":
        sf.write(path, np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, subtype="PCM_16")
    else:  # a loud tone pushed into the rails
        t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
        sf.write(path, np.clip(8 * np.sin(2 * np.pi * 200 * t), -1, 1), SAMPLE_RATE, subtype="PCM_16")


@pytest.mark.parametrize("reason", ["unreadable", "empty", "silent", "clipped"])
def test_bad_file_is_skipped_and_counted_by_reason(tmp_path: Path, reason: str) -> None:
    root = _tree(tmp_path / "sc", LABELS, _speakers(8))
    _write_bad(reason, root / "no" / "bad_nohash_0.wav")
    corpus = load_speech_commands(_cfg(root), progress=False)
    assert corpus.skipped == {reason: 1}
    assert corpus.skipped_files == [f"{root / 'no' / 'bad_nohash_0.wav'}: {reason}"]
    assert len(_speech_rows(corpus)) == 24
    assert "speaker:bad" not in set(corpus.groups.tolist())


@pytest.mark.parametrize("reason", ["unreadable", "empty", "silent", "clipped"])
def test_bad_file_under_strict_raises_naming_the_file(tmp_path: Path, reason: str) -> None:
    root = _tree(tmp_path / "sc", LABELS, _speakers(8))
    _write_bad(reason, root / "up" / "broken_nohash_3.wav")
    with pytest.raises(DataError, match=r"up/broken_nohash_3\.wav.*strict"):
        load_speech_commands(_cfg(root, "data.strict=true"), progress=False)


def test_bad_background_is_counted_or_fails_under_strict(tmp_path: Path) -> None:
    root = _tree(tmp_path / "sc", LABELS, _speakers(8))
    _background(root)
    _write_bad("unreadable", root / BACKGROUND_DIR / "c_bad.wav")
    corpus = load_speech_commands(_cfg(root), progress=False)
    assert corpus.skipped == {"unreadable": 1} and len(corpus.backgrounds) == 2
    with pytest.raises(DataError, match="c_bad.wav"):
        load_speech_commands(_cfg(root, "data.strict=true"), progress=False)


def test_stereo_44k1_is_mixed_down_and_resampled(tmp_path: Path) -> None:
    root = _tree(tmp_path / "sc", LABELS, _speakers(8))
    t = np.arange(int(0.5 * 44100)) / 44100
    tone = 0.4 * np.sin(2 * np.pi * 440.0 * t)
    sf.write(
        root / "yes" / "stereo_nohash_0.wav", np.stack([tone, 0.5 * tone], axis=1), 44100, subtype="PCM_16"
    )
    corpus = load_speech_commands(_cfg(root, "data.strict=true"), progress=False)
    assert corpus.skipped == {}
    (row,) = np.flatnonzero(corpus.groups == "speaker:stereo")
    assert corpus.classes[corpus.labels[row]] == "yes"
    clip = corpus.clips[row].astype(np.float32) / 32768
    assert abs(_peak_hz(clip) - 440.0) < 2
    nz = np.flatnonzero(clip)
    assert nz[-1] - nz[0] + 1 == pytest.approx(SAMPLE_RATE // 2, abs=2)  # 0.5 s at 16 kHz
    assert (nz[0] + nz[-1]) / 2 == pytest.approx(SAMPLE_RATE / 2, abs=2)  # centred in the 1 s clip
    assert np.max(np.abs(clip)) == pytest.approx(0.3, abs=0.01)  # (0.4 + 0.2) / 2


# ---------------------------------------------------------------- layout errors


def test_missing_label_folder_names_it_and_the_folders_found(tmp_path: Path) -> None:
    root = _tree(tmp_path / "sc", ["yes", "cat"], ["spk00"])
    with pytest.raises(DataError, match=r"\['no', 'up'\].*found folders \['cat', 'yes'\]"):
        load_speech_commands(_cfg(root), progress=False)


def test_a_held_out_folder_scores_the_words_it_has_once_each_label_has_a_folder(tmp_path: Path) -> None:
    """`edgekd eval` / `--holdout`: the build's labels are fixed, so the advice is an empty folder, not a
    recipe change, and the error shows the misspelt folder among those found. With an empty folder per word
    not recorded, the words recorded are scored (another folder's clips are other words, as always)."""
    root = _tree(tmp_path / "sc", ["yes"], ["spk00", "spk01"])
    for spk in ("spk00", "spk01"):
        write_wav(root / "Up" / f"{spk}_nohash_0.wav", _burst(FREQ["up"], np.random.default_rng(2)))
    found = r"\['no', 'up'\]; found folders \['Up', 'yes'\]"  # the misspelt folder shows
    with pytest.raises(DataError, match=found + ".*a folder may stay empty"):
        load_speech_commands(_cfg(root), progress=False, held_out=True)
    (root / "no").mkdir()
    (root / "up").mkdir()
    corpus = load_speech_commands(_cfg(root), progress=False, held_out=True)
    counts = np.bincount(corpus.labels, minlength=len(corpus.classes))
    assert counts[corpus.classes.index("yes")] == 2 and counts[corpus.classes.index(UNKNOWN)] == 2  # "Up"
    assert counts[corpus.classes.index("no")] == counts[corpus.classes.index("up")] == 0


def test_extra_recordings_are_mixed_in_split_by_speaker_without_more_silence(tmp_path: Path) -> None:
    """`data.extra`: a few real recordings of some of the words join the corpus under their own groups."""
    base = _tree(tmp_path / "sc", LABELS, _speakers(8))
    extra_speakers = [f"{i:08x}" for i in range(30)]
    extra = _tree(tmp_path / "mine", ["yes", "cat"], extra_speakers, seed=1)  # "no", "up" not recorded
    plain = build_corpus(_cfg(base), progress=False)
    mixed = build_corpus(_cfg(base, f"data.extra={extra}"), progress=False)
    own = mixed.extra_rows()
    assert not plain.extra_rows().any() and own.sum() == 60 and len(mixed.labels) == len(plain.labels) + 60
    assert np.array_equal(mixed.clips[~own], plain.clips)  # the base corpus is untouched, silence included
    assert {mixed.classes[k] for k in mixed.labels[own]} == {"yes", UNKNOWN}
    split_of: dict[str, set[str]] = {}
    for g, sp in zip(mixed.groups[own], mixed.splits[own], strict=True):
        split_of.setdefault(str(g), set()).add(str(sp))
    assert set(split_of) == {f"real:{s}" for s in extra_speakers}
    assert all(len(v) == 1 for v in split_of.values())
    assert {next(iter(v)) for v in split_of.values()} == set(SPLITS)


def test_extra_folder_without_any_label_folder_names_the_labels(tmp_path: Path) -> None:
    base = _tree(tmp_path / "sc", LABELS, _speakers(8))
    extra = _tree(tmp_path / "mine", ["cat"], _speakers(2))
    with pytest.raises(DataError, match=r"data.extra .*no folder named after a label"):
        build_corpus(_cfg(base, f"data.extra={extra}"), progress=False)


def test_path_that_is_not_a_directory_is_a_data_error(tmp_path: Path) -> None:
    f = tmp_path / "corpus.zip"
    f.write_bytes(b"PK")
    for path in (f, tmp_path / "missing"):
        with pytest.raises(DataError, match="is not a directory"):
            load_speech_commands(_cfg(path), progress=False)


def test_label_folders_without_wavs_are_a_data_error(tmp_path: Path) -> None:
    for w in LABELS:
        (tmp_path / w).mkdir()
        (tmp_path / w / "notes.txt").write_text("not audio")
    with pytest.raises(DataError, match="no .wav files"):
        load_speech_commands(_cfg(tmp_path), progress=False)


# ---------------------------------------------------------------- save / load


def test_save_load_round_trip_keeps_everything(tmp_path: Path) -> None:
    root = _tree(tmp_path / "sc", [*LABELS, "cat"], _speakers(8))
    _background(root)
    _write_bad("silent", root / "cat" / "quiet_nohash_0.wav")
    _write_bad("empty", root / "yes" / "none_nohash_0.wav")
    corpus = load_speech_commands(_cfg(root), progress=False)
    assert corpus.skipped == {"silent": 1, "empty": 1}
    corpus.save(tmp_path / "c.npz")
    back = Corpus.load(tmp_path / "c.npz")
    for name in ("clips", "labels", "splits", "groups"):
        a, b = getattr(corpus, name), getattr(back, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b)
    assert back.classes == corpus.classes and all(type(c) is str for c in back.classes)
    assert back.skipped == corpus.skipped and back.skipped_files == corpus.skipped_files
    assert len(back.skipped_files) == 2
    assert len(back.backgrounds) == 2
    for a, b in zip(corpus.backgrounds, back.backgrounds, strict=True):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    assert back.summary() == corpus.summary()


def test_save_load_round_trip_without_backgrounds_or_skips(tmp_path: Path) -> None:
    corpus = load_speech_commands(_cfg(_tree(tmp_path / "sc", LABELS, _speakers(8))), progress=False)
    corpus.save(tmp_path / "c.npz")
    back = Corpus.load(tmp_path / "c.npz")
    assert back.backgrounds == [] and back.skipped == {}
    np.testing.assert_array_equal(back.clips, corpus.clips)


# ---------------------------------------------------------------- synthetic corpus

# the recipe's flite and festival voices are off here: engines have their own tests (test_synth.py)
# and no test-only evidence voices, whose own test counts them
ONLY_ESPEAK_PIPER = [
    "data.synth.flite_voices=0",
    "data.synth.festival_voices=0",
    "data.synth.test_evidence=false",
]
SYNTH = [
    "data.synth.espeak_voices=6",
    "data.synth.piper_voices=2",
    "data.synth.unknown_words_per_voice=1",
    *ONLY_ESPEAK_PIPER,
]


@pytest.fixture(scope="module")
def synth_cfg() -> BuildConfig:
    return load_config("esp32s3", "kws12", SYNTH)


@pytest.fixture(scope="module")
def synth_corpus(synth_cfg: BuildConfig) -> Corpus:
    return synthesize(synth_cfg, progress=False)


def test_synthetic_corpus_has_every_keyword_in_every_split(
    synth_cfg: BuildConfig, synth_corpus: Corpus
) -> None:
    c = synth_corpus
    assert c.classes == [*synth_cfg.labels, UNKNOWN, SILENCE]
    summary = c.summary()
    for split in SPLITS:
        assert set(synth_cfg.labels) | {UNKNOWN} <= set(summary[split]), split
    # every voice says every keyword once and one other word; silence comes on top
    n_silence = int(np.sum(c.labels == c.classes.index(SILENCE)))
    assert len(c.labels) - n_silence == 8 * (len(synth_cfg.labels) + 1)
    assert n_silence == max(3, round(8 * 11 * synth_cfg.data.synth.silence_fraction))
    assert c.skipped == {} and c.backgrounds == []


def test_synthetic_voices_never_span_splits_and_piper_trains(synth_corpus: Corpus) -> None:
    c = synth_corpus
    split_of: dict[str, set[str]] = {}
    for g, s in zip(c.groups.tolist(), c.splits.tolist(), strict=True):
        split_of.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in split_of.values())
    speakers = {g for g in split_of if not g.startswith("noise:")}
    assert sum(g.startswith("espeak:") for g in speakers) == 6
    piper = [g for g in speakers if g.startswith("piper:")]
    assert len(piper) == 1 and split_of[piper[0]] == {"train"}  # one speaker, all its settings in train
    train = {g for g in speakers if split_of[g] == {"train"}}
    test = {g for g in speakers if split_of[g] == {"test"}}
    val = {g for g in speakers if split_of[g] == {"validation"}}
    assert test and val and not test & train
    assert all(g.startswith("espeak:") for g in test | val)


def test_synthetic_clips_are_fixed_length_int16_and_audible(synth_corpus: Corpus) -> None:
    c = synth_corpus
    assert c.clips.dtype == np.int16 and c.clips.shape[1] == SAMPLE_RATE
    speech = c.clips[_speech_rows(c)].astype(np.float64) / 32768
    assert np.all(np.max(np.abs(speech), axis=1) > 0.1)
    assert np.all(np.max(np.abs(speech), axis=1) < 0.999)
    assert np.all(np.sqrt(np.mean(speech**2, axis=1)) > 0.005)
    silence = c.clips[c.labels == c.classes.index(SILENCE)].astype(np.float64) / 32768
    assert np.all(np.sqrt(np.mean(silence**2, axis=1)) < 10 ** (-25 / 20))


def test_synthetic_corpus_is_deterministic(synth_cfg: BuildConfig, synth_corpus: Corpus) -> None:
    again = synthesize(synth_cfg, progress=False)
    np.testing.assert_array_equal(again.clips, synth_corpus.clips)
    np.testing.assert_array_equal(again.labels, synth_corpus.labels)
    np.testing.assert_array_equal(again.splits, synth_corpus.splits)
    np.testing.assert_array_equal(again.groups, synth_corpus.groups)


def test_synthetic_corpus_without_piper_is_espeak_only() -> None:
    cfg = load_config(
        "esp32s3",
        "kws12",
        [
            'labels=["yes", "no"]',
            "data.synth.espeak_voices=6",
            "data.synth.piper_voices=0",
            "data.synth.unknown_words_per_voice=0",
            *ONLY_ESPEAK_PIPER,
        ],
    )
    corpus = synthesize(cfg, progress=False)
    speakers = {g for g in corpus.groups.tolist() if not g.startswith("noise:")}
    assert len(speakers) == 6 and all(g.startswith("espeak:") for g in speakers)
    assert corpus.classes == ["yes", "no", UNKNOWN, SILENCE]
    assert UNKNOWN not in corpus.summary()["train"]


def test_synthetic_corpus_needs_voices() -> None:
    off = ["data.synth.espeak_voices=0", "data.synth.piper_voices=0", *ONLY_ESPEAK_PIPER]
    cfg = load_config("esp32s3", "kws12", off)
    with pytest.raises(DataError, match="no voices"):
        synthesize(cfg, progress=False)


def test_a_small_vocabulary_gets_test_only_voices_until_the_gates_can_decide() -> None:
    sets = ['words=["lights on", "lights off"]', "data.synth.espeak_voices=20", "data.synth.piper_voices=2"]
    cfg = load_config(
        "esp32s3", "kws12", [*sets, "data.synth.flite_voices=0", "data.synth.festival_voices=0"]
    )
    drawn = _draw_voices(cfg)
    voices, split_of = corpus_voices(cfg)
    extra = voices[len(drawn) :]
    assert extra and all(v.engine == "espeak" and split_of[v.speaker] == "test" for v in extra)
    assert not {v.speaker for v in extra} & {v.speaker for v in drawn}  # new speakers: nobody leaks
    test_voices = sum(split_of[v.speaker] == "test" for v in voices)
    assert test_voices >= cfg.test_clips_per_class > test_voices - len(extra)
    # the training voices are the ones the same config draws without the evidence voices
    off = load_config("esp32s3", "kws12", [*sets, *ONLY_ESPEAK_PIPER])
    assert corpus_voices(off)[0] == drawn
    default = load_config("esp32s3")  # kws12's own voices already give its gates enough test clips
    assert len(corpus_voices(default)[0]) == len(_draw_voices(default))
