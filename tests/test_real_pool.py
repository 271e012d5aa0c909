"""Built-in pools of real speech from Debian packages: the registry, the even per-source sampling, the
errors that say how to get a pool, and 1 s windows of real speech for checks that need real audio.

Sampling and errors run on a small fake pool (EDGEKD_REAL_POOL); the `real` tests read the pool that
scripts/setup.sh unpacks and skip, saying so, where it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgekd.audio.io import SAMPLE_RATE, AudioFileError, read_wav, to_pcm16
from edgekd.config import load_config
from edgekd.data.real_pool import (
    HELD_OUT_SOURCES,
    MARKER,
    NEGATIVE_SOURCES,
    POOLS,
    SETUP,
    SOURCES,
    SPEECH_FLOOR_DBFS,
    decode_pool,
    decoded_twin,
    is_check_file,
    negative_recordings,
    pool_fingerprint,
    pool_licences,
    pool_root,
    read_pool_file,
    resolve_pool,
    resolve_sources,
    windows,
)
from edgekd.data.unlabeled import UnlabeledPool, load_unlabeled
from edgekd.errors import ConfigError, DataError

N = 1600  # short "clips" keep the fake pool tiny; the sampling is length-agnostic


def _rms_dbfs(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.float64) / 32768.0
    return 10 * np.log10(np.mean(x**2, axis=-1) + 1e-20)


def _fake_pool(root: Path, files: dict[str, int]) -> None:
    """Each source's package folder with `files[name]` 3-clip recordings (5 windows each) at paths its
    first glob matches, a silence/ file its excludes must drop, and the setup script's marker."""
    rng = np.random.default_rng(0)
    for name, count in files.items():
        src = SOURCES[name]
        base = root / src.package
        for i in range(count):
            path = base / src.globs[0].replace("**/", "").replace("*", f"f{i}")
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), 0.3 * rng.standard_normal(3 * N).astype(np.float32), SAMPLE_RATE)
        (base / MARKER).write_text(f"Package: {src.package}\n")


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEKD_REAL_POOL", str(tmp_path))
    return tmp_path


def _real_pool() -> None:
    try:
        resolve_sources("debian-speech")
    except DataError:
        pytest.skip(f"the real-speech pool is not unpacked in {pool_root()}: run {SETUP}")


# --- registry ------------------------------------------------------------------------------------------


def test_pool_names_and_licences() -> None:
    assert POOLS["debian-speech"] == ("asterisk-en", "fillets-cs", "fillets-nl", "tuxpaint-desc")
    assert POOLS["held-out-speech"] == HELD_OUT_SOURCES
    assert HELD_OUT_SOURCES == ("asterisk-es", "asterisk-fr", "asterisk-it", "asterisk-ru")
    assert all(POOLS[name] == (name,) for name in SOURCES)
    assert set(pool_licences("held-out-speech").values()) == {"CC-BY-SA-3.0"}
    assert pool_licences("debian-speech") == {
        "asterisk-en": "CC-BY-SA-3.0",
        "fillets-cs": "GPL-2.0-only",
        "fillets-nl": "GPL-2.0-only",
        "tuxpaint-desc": "GPL-2.0-or-later",
    }
    assert pool_licences("fillets-nl") == {"fillets-nl": "GPL-2.0-only"}


def test_a_bad_name_lists_the_known_ones() -> None:
    with pytest.raises(DataError, match="unknown built-in speech pool 'nope'") as err:
        resolve_pool("nope")
    assert all(name in str(err.value) for name in POOLS)
    # in a config it fails with the config errors, before any work
    with pytest.raises(ConfigError, match="debian-speech"):
        load_config("esp32s3", overrides=["data.unlabeled=builtin:nope"])
    assert load_config("esp32s3", overrides=["data.unlabeled=builtin:fillets-cs"]).data.unlabeled == (
        "builtin:fillets-cs"
    )


def test_a_missing_pool_names_every_package_and_the_setup_command(fake_root: Path) -> None:
    _fake_pool(fake_root, {"fillets-cs": 1})
    (fake_root / SOURCES["fillets-nl"].package).mkdir()  # an interrupted unpack: no marker
    with pytest.raises(DataError, match=SETUP) as err:
        load_unlabeled("builtin:debian-speech", N, 0, 0, progress=False)
    msg = str(err.value)
    assert str(fake_root) in msg and "EDGEKD_REAL_POOL" in msg
    for name in POOLS["debian-speech"]:
        assert (SOURCES[name].package in msg) == (name != "fillets-cs")
    assert len(resolve_pool("fillets-cs")) == 1  # a source that is there still resolves on its own


def test_a_build_naming_a_missing_pool_fails_before_any_stage(fake_root: Path, tmp_path: Path) -> None:
    from edgekd.build import run_build

    cfg = load_config("esp32s3", overrides=["data.unlabeled=builtin:asterisk-en"])
    with pytest.raises(DataError, match="asterisk-core-sounds-en-wav"):
        run_build(cfg, tmp_path / "out", tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()


def test_a_build_calibrating_on_a_missing_pool_fails_before_any_stage(
    fake_root: Path, tmp_path: Path
) -> None:
    from edgekd.build import run_build

    without = ["data.unlabeled=null", "distill.domain_weight=0"]  # nothing trains on the pool
    cfg = load_config("esp32s3", overrides=["distill.fire_rate=teacher", *without])
    with pytest.raises(DataError, match="distill.fire_rate=argmax") as err:  # says how to build without
        run_build(cfg, tmp_path / "out", tmp_path / "cache", progress=False)
    assert SOURCES["fillets-cs"].package in str(err.value) and SETUP in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_resolve_keeps_the_globbed_files_minus_excludes(fake_root: Path) -> None:
    _fake_pool(fake_root, {name: 2 for name in SOURCES})
    silence = fake_root / SOURCES["asterisk-en"].package / "usr/share/asterisk/sounds/en_US_f_Allison/silence"
    silence.mkdir()
    sf.write(str(silence / "1.wav"), np.zeros(N, np.float32), SAMPLE_RATE)
    groups = resolve_sources("debian-speech")
    assert list(groups) == list(POOLS["debian-speech"]) and all(len(files) == 2 for files in groups.values())
    assert resolve_pool("debian-speech") == [p for files in groups.values() for p in files]
    assert all(f == sorted(f) for f in groups.values())


def test_train_and_check_parts_split_the_files_and_the_check_part_feeds_only_checks(fake_root: Path) -> None:
    """Agreement is measured on files `data.unlabeled` never trains on: a stable split by file path."""
    _fake_pool(fake_root, {"fillets-cs": 30})
    every = resolve_sources("fillets-cs")["fillets-cs"]
    train = resolve_sources("fillets-cs", "train")["fillets-cs"]
    check = resolve_sources("fillets-cs", "check")["fillets-cs"]
    assert sorted(train + check) == every and not set(train) & set(check)
    assert 1 <= len(check) <= 15  # about one in five
    assert all(is_check_file(p, fake_root) for p in check)
    pool = load_unlabeled("builtin:fillets-cs", N, 0, 0, progress=False, part="check")
    assert pool.files == len(check) and len(pool.clips) == 5 * len(check)
    # a wake-word build splits the train part again: it calibrates on files it never trained on
    fit = resolve_sources("fillets-cs", "fit")["fillets-cs"]
    calibration = resolve_sources("fillets-cs", "calibration")["fillets-cs"]
    assert sorted(fit + calibration) == train and not set(fit) & set(calibration)
    assert calibration and len(calibration) < len(fit)


def test_a_held_out_source_only_calibrates_and_checks(fake_root: Path) -> None:
    """The asterisk prompts in four languages are never trained on: half their files calibrate a wake
    word, half report its false accepts, and asking for their training part says so."""
    _fake_pool(fake_root, dict.fromkeys(NEGATIVE_SOURCES + HELD_OUT_SOURCES, 30))
    every = resolve_sources("held-out-speech")
    calibration = resolve_sources("held-out-speech", "calibration")
    check = resolve_sources("held-out-speech", "check")
    for name in HELD_OUT_SOURCES:
        assert sorted(calibration[name] + check[name]) == every[name]
        assert not set(calibration[name]) & set(check[name]) and 5 <= len(check[name]) <= 25  # about half
    for part in ("train", "fit"):
        with pytest.raises(DataError, match="asterisk-es, asterisk-fr, asterisk-it, asterisk-ru is held out"):
            resolve_sources("held-out-speech", part)
    with pytest.raises(ConfigError, match="builtin:asterisk-it is held out"):  # no build trains on it
        load_config("esp32s3", overrides=["data.unlabeled=builtin:asterisk-it"])
    wake = negative_recordings("calibration", 0, seed=0, held_out=True)
    assert [r.source for r in wake] == list(NEGATIVE_SOURCES + HELD_OUT_SOURCES)
    assert [r.source for r in negative_recordings("calibration", 0, seed=0)] == list(NEGATIVE_SOURCES)
    reported = {r.source: r.files for r in negative_recordings("check", 0, seed=0, held_out=True)}
    for r in wake[len(NEGATIVE_SOURCES) :]:
        assert sorted(r.files) == sorted(p.relative_to(fake_root / SOURCES[r.source].package)
                                         for p in calibration[r.source])  # fmt: skip
        assert not set(r.files) & set(reported[r.source])


# --- sampling a built-in pool ---------------------------------------------------------------------------


def test_a_cap_takes_an_even_share_per_source_and_a_small_source_leaves_its_share(fake_root: Path) -> None:
    _fake_pool(fake_root, {"asterisk-en": 1, "fillets-cs": 4, "fillets-nl": 4, "tuxpaint-desc": 4})

    def capped(seed: int) -> UnlabeledPool:
        return load_unlabeled("builtin:debian-speech", N, max_clips=40, seed=seed, progress=False)

    a = capped(3)
    # 10 each asked; asterisk has only 5 windows, and its 5 go to the other three
    assert a.sources == {"asterisk-en": 5, "fillets-cs": 12, "fillets-nl": 12, "tuxpaint-desc": 11}
    assert a.clips.shape == (40, N) and a.clips.dtype == np.int16
    assert a.files == 1 + 3 + 3 + 3  # only as many files as the windows need are decoded
    np.testing.assert_array_equal(a.clips, capped(3).clips)
    assert not np.array_equal(a.clips, capped(4).clips)
    everything = load_unlabeled("builtin:debian-speech", N, max_clips=0, seed=3, progress=False)
    assert everything.sources == {"asterisk-en": 5, "fillets-cs": 20, "fillets-nl": 20, "tuxpaint-desc": 20}
    assert len(load_unlabeled("builtin:debian-speech", N, 1000, 3, progress=False).clips) == 65


def test_negative_recordings_calibrate_and_report_on_different_files_without_english(fake_root: Path) -> None:
    """Calibration reads the train part, the reported figures the check part: no file is in both, each
    source is one recording of its equal share, and tuxpaint's English descriptions are never read."""
    _fake_pool(fake_root, dict.fromkeys(NEGATIVE_SOURCES, 40))
    english = fake_root / SOURCES["tuxpaint-desc"].package / "usr/share/tuxpaint/stamps/cat_desc.ogg"
    sf.write(str(english), np.ones(3 * N, np.float32) * 0.1, SAMPLE_RATE)
    (english.parent / "empty_desc_fr.ogg").write_bytes(b"")  # unreadable: skipped, not fatal
    calibration = negative_recordings("train", 0, seed=0)
    report = negative_recordings("check", 0, seed=0)
    assert [r.source for r in calibration] == [r.source for r in report] == list(NEGATIVE_SOURCES)
    root = pool_root()
    for cal, rep in zip(calibration, report, strict=True):
        base = root / SOURCES[cal.source].package
        assert cal.files and rep.files and not set(cal.files) & set(rep.files)
        assert all(not is_check_file(base / f, root) for f in cal.files)
        assert all(is_check_file(base / f, root) for f in rep.files)
        assert all(f.name != "cat_desc.ogg" for f in cal.files + rep.files)
        assert cal.seconds == pytest.approx(len(cal.files) * 3 * N / SAMPLE_RATE)
    capped = negative_recordings("train", 3 * 0.3 / 60, seed=0)  # 0.3 s per source
    assert [r.seconds for r in capped] == pytest.approx([0.3] * 3)
    assert negative_recordings("train", 0, seed=1)[0].files != calibration[0].files  # seeded order
    assert sorted(negative_recordings("train", 0, seed=1)[0].files) == sorted(calibration[0].files)


def test_decoded_twins_read_as_the_files_do_and_never_go_stale(fake_root: Path) -> None:
    """setup's decoded twins give every recording bit for bit (a 44.1 kHz file included: the twin holds
    the resampled samples), are read instead of the files, stay out of the pool's listing, and a file
    that changed is decoded again rather than read from an old twin."""
    _fake_pool(fake_root, dict.fromkeys(NEGATIVE_SOURCES, 6))
    tux = fake_root / SOURCES["tuxpaint-desc"].package / "usr/share/tuxpaint/stamps/wide_desc_fr.ogg"
    sf.write(str(tux), 0.3 * np.random.default_rng(1).standard_normal(44100).astype(np.float32), 44100)
    sf.write(str(tux.with_name("cat_desc.ogg")), np.full(N, 0.1, np.float32), SAMPLE_RATE)  # English
    before = negative_recordings("all", 0, seed=0)
    fingerprint = pool_fingerprint("tuxpaint-desc")
    assert decode_pool(progress=False) == 3 * 6 + 1  # English not decoded
    assert decode_pool(progress=False) == 0  # resumable: twins already written are kept
    after = negative_recordings("all", 0, seed=0)
    for old, new in zip(before, after, strict=True):
        assert old.files == new.files
        np.testing.assert_array_equal(old.audio, new.audio)
    assert pool_fingerprint("tuxpaint-desc") == fingerprint
    twin = decoded_twin(tux)
    np.save(twin, np.full(len(np.load(twin)), 0.5, np.float32))  # what only the twin holds
    assert np.any(negative_recordings("all", 0, seed=0)[2].audio == 0.5)
    twin.write_bytes(b"not an array")  # damaged: the file is decoded instead
    np.testing.assert_array_equal(negative_recordings("all", 0, seed=0)[2].audio, after[2].audio)
    np.save(twin, np.full(len(after[2].audio), 0.5, np.float32))  # an old twin, for the staleness check
    sf.write(str(tux), 0.3 * np.random.default_rng(2).standard_normal(22050).astype(np.float32), 44100)
    assert not decoded_twin(tux).is_file()  # another size: the old twin is not this file's
    assert not np.any(negative_recordings("all", 0, seed=0)[2].audio == 0.5)
    tux.unlink()  # gone between listing and reading: unreadable, named, as before twins
    with pytest.raises(AudioFileError, match="wide_desc_fr.ogg"):
        read_pool_file(tux)


def test_a_list_of_files_reads_like_a_folder(fake_root: Path) -> None:
    _fake_pool(fake_root, {"fillets-nl": 3})
    files = resolve_pool("fillets-nl")
    listed = load_unlabeled(list(reversed(files)), N, max_clips=0, seed=0, progress=False)
    folder = load_unlabeled(fake_root, N, max_clips=0, seed=0, progress=False)
    np.testing.assert_array_equal(listed.clips, folder.clips)  # sorted, whatever order they came in
    assert listed.files == 3 and listed.sources == {}
    with pytest.raises(DataError, match="empty"):
        load_unlabeled([], N, 0, 0, progress=False)


def test_a_pools_bad_files_are_skipped_and_counted_even_when_strict(fake_root: Path) -> None:
    """data.strict asks the user to fix their files; a package's files are not theirs to fix."""
    _fake_pool(fake_root, {"asterisk-en": 2})
    resolve_pool("asterisk-en")[0].write_bytes(b"RIFF not really a wav file")
    pool = load_unlabeled("builtin:asterisk-en", N, 0, 0, strict=True, progress=False)
    assert pool.skipped == {"unreadable": 1} and pool.sources == {"asterisk-en": 5}


def test_min_dbfs_drops_quiet_windows(fake_root: Path) -> None:
    _fake_pool(fake_root, {"asterisk-en": 1})
    (path,) = resolve_pool("asterisk-en")
    x = sf.read(str(path), dtype="float32")[0]
    x[: 2 * N] *= 1e-3  # windows start every N/2: the first three at about -70 dBFS, the fourth half
    sf.write(str(path), x, SAMPLE_RATE)
    pool = load_unlabeled("builtin:asterisk-en", N, 0, 0, progress=False, min_dbfs=SPEECH_FLOOR_DBFS)
    assert len(pool.clips) == 2  # of 5: the three quiet ones are gone; half speech is still speech
    np.testing.assert_array_equal(pool.clips[-1], to_pcm16(x[-N:]))


# --- the real pool (present after scripts/setup.sh) -----------------------------------------------------


def test_real_pool_resolves_every_source() -> None:
    _real_pool()
    groups = resolve_sources("debian-speech")
    for name, files in groups.items():
        assert files and all(p.suffix in (".wav", ".ogg") for p in files), name
        assert files == resolve_pool(name)
    assert not any(p.parent.name == "silence" for p in groups["asterisk-en"])
    assert all("_desc" in p.name for p in groups["tuxpaint-desc"])
    held_out = resolve_sources("held-out-speech")
    assert all(len(files) > 400 for files in held_out.values())  # ~550 prompts per language
    assert not any(p.parent.name == "silence" for files in held_out.values() for p in files)


def test_real_windows_are_16khz_int16_seeded_and_speech() -> None:
    _real_pool()
    w = windows("debian-speech", 8, seed=0)
    assert w.shape == (8, SAMPLE_RATE) and w.dtype == np.int16
    np.testing.assert_array_equal(w, windows("debian-speech", 8, seed=0))
    assert not np.array_equal(w, windows("debian-speech", 8, seed=1))
    assert (_rms_dbfs(w) >= SPEECH_FLOOR_DBFS).all()
    assert np.median(_rms_dbfs(w)) > -35  # loud enough to be speech, not just above the floor
    train = windows("debian-speech", 8, seed=0, part="train")  # other files: never a check window
    assert train.shape == w.shape and not (train[:, None] == w[None]).all(-1).any()


def test_real_pool_flows_through_load_unlabeled() -> None:
    _real_pool()
    pool = load_unlabeled("builtin:debian-speech", SAMPLE_RATE, max_clips=8, seed=0, progress=False)
    assert pool.clips.shape == (8, SAMPLE_RATE)
    assert pool.sources == {name: 2 for name in POOLS["debian-speech"]}
    assert pool.files < 20  # a few files per source, not the thousands the pool holds


def test_the_decoded_twins_setup_wrote_hold_the_real_files_samples() -> None:
    """On the unpacked pool: a few files of each long source (44.1 and 22.05 kHz .ogg) read from their
    twins exactly as decoded now. Skips, saying so, where setup has not decoded them."""
    _real_pool()
    files = [f for name in NEGATIVE_SOURCES for f in resolve_sources(name, "check")[name][:3]]
    twins = [decoded_twin(f) for f in files]
    if not all(t.is_file() for t in twins):
        pytest.skip(f"the pool's decoded twins are not written in {pool_root()}: run {SETUP}")
    for path, twin in zip(files, twins, strict=True):
        np.testing.assert_array_equal(np.load(twin), read_wav(path, allow_clipped=True, allow_silent=True))


def test_a_recipe_that_trains_on_the_pool_names_the_fix_when_it_is_missing(fake_root: Path) -> None:
    """`digits` trains against the built-in pool: without it unpacked, the build stops before any stage
    with the setup command and the overrides that build without real audio."""
    from edgekd.build import check_inputs

    cfg = load_config("esp32s3", "digits")
    with pytest.raises(DataError) as err:
        check_inputs(cfg)
    msg = str(err.value)
    assert msg.startswith("data.unlabeled=builtin:debian-speech: ")
    assert SETUP in msg and "--set data.unlabeled=null --set distill.domain_weight=0" in msg
    cfg = load_config("esp32s3", "digits", ["data.unlabeled=null", "distill.domain_weight=0"])
    check_inputs(cfg)  # the suggested overrides load and pass
