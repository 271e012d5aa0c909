"""Unlabeled recordings: every file under a folder, cut into clip-length windows; bad files skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.audio.io import SAMPLE_RATE, fix_length, to_pcm16, write_wav
from edgekd.data.unlabeled import load_unlabeled, windows
from edgekd.errors import DataError

N = 1600  # a short "clip" keeps the files tiny; the code is length-agnostic


def _tone(n: int, seed: int = 0) -> np.ndarray:
    """A non-silent signal whose samples tell positions apart (a ramp plus a tone)."""
    t = np.arange(n) / SAMPLE_RATE
    phase = np.random.default_rng(seed).uniform(0, 6)
    return (0.3 * np.sin(2 * np.pi * 440 * t + phase) + 0.4 * np.linspace(-1, 1, n)).astype(np.float32)


def _wav(path: Path, n: int, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = _tone(n, seed)
    write_wav(path, x)
    return to_pcm16(x)


def test_windows_short_is_centred_and_padded() -> None:
    x = np.arange(1, 11, dtype=np.float32)
    (w,) = windows(x, 16)
    assert len(w) == 16
    np.testing.assert_array_equal(w, fix_length(x, 16))
    np.testing.assert_array_equal(w[3:13], x)
    assert not w[:3].any() and not w[13:].any()
    (exact,) = windows(x, 10)
    np.testing.assert_array_equal(exact, x)


def test_windows_long_overlap_by_half_and_include_the_tail() -> None:
    x = np.arange(37, dtype=np.float32)
    ws = windows(x, 10)
    starts = [int(w[0]) for w in ws]
    assert starts == [0, 5, 10, 15, 20, 25, 27]  # hop 5, plus the tail window ending at the last sample
    assert all(len(w) == 10 for w in ws)
    np.testing.assert_array_equal(ws[-1], x[-10:])
    covered = np.zeros(len(x), bool)
    for s in starts:
        covered[s : s + 10] = True
    assert covered.all()
    # a length that the hops reach exactly adds no duplicate tail window
    assert [int(w[0]) for w in windows(np.arange(30, dtype=np.float32), 10)] == [0, 5, 10, 15, 20]


def test_load_pads_short_files_and_windows_long_ones(tmp_path: Path) -> None:
    short = _wav(tmp_path / "a_short.wav", N // 2, seed=1)
    long = _wav(tmp_path / "b_long.wav", 2 * N + N // 3, seed=2)
    pool = load_unlabeled(tmp_path, N, max_clips=0, seed=0, progress=False)
    assert pool.files == 2 and pool.skipped == {}
    assert pool.clips.dtype == np.int16 and pool.clips.shape == (
        1 + 4,
        N,
    )  # 1 padded + windows 0, .5, 1, tail
    np.testing.assert_array_equal(pool.clips[0], fix_length(short, N))
    hop = N // 2
    for i, start in enumerate([0, hop, 2 * hop, len(long) - N]):
        np.testing.assert_array_equal(pool.clips[1 + i], long[start : start + N])


def test_load_finds_files_in_nested_folders(tmp_path: Path) -> None:
    _wav(tmp_path / "kitchen" / "mon" / "r1.wav", N, seed=1)
    _wav(tmp_path / "office" / "r2.WAV", N, seed=2)  # suffixes match case-insensitively
    _wav(tmp_path / "top.wav", N, seed=3)
    (tmp_path / "notes.txt").write_text("not audio")
    pool = load_unlabeled(tmp_path, N, max_clips=0, seed=0, progress=False)
    assert pool.files == 3 and len(pool.clips) == 3 and pool.skipped == {}


def test_max_clips_is_a_deterministic_seeded_subset(tmp_path: Path) -> None:
    for i in range(4):
        _wav(tmp_path / f"r{i}.wav", 3 * N, seed=i)  # 5 windows each
    full = load_unlabeled(tmp_path, N, max_clips=0, seed=0, progress=False).clips
    assert len(full) == 20
    a = load_unlabeled(tmp_path, N, max_clips=6, seed=5, progress=False).clips
    b = load_unlabeled(tmp_path, N, max_clips=6, seed=5, progress=False).clips
    c = load_unlabeled(tmp_path, N, max_clips=6, seed=6, progress=False).clips
    assert a.shape == (6, N)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    idx = [int(np.flatnonzero((full == row).all(1))[0]) for row in a]
    assert idx == sorted(idx) and len(set(idx)) == 6  # distinct windows, kept in file order
    # a max_clips above the pool size keeps everything
    np.testing.assert_array_equal(
        load_unlabeled(tmp_path, N, max_clips=50, seed=5, progress=False).clips, full
    )


def test_missing_folder_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="not a directory") as err:
        load_unlabeled(missing, N, 0, 0, progress=False)
    assert str(missing) in str(err.value)


def test_empty_folder_names_it(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no audio here")
    with pytest.raises(DataError, match="no audio files") as err:
        load_unlabeled(tmp_path, N, 0, 0, progress=False)
    assert str(tmp_path) in str(err.value)


def test_all_bad_files_name_the_folder(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"RIFF garbage")
    write_wav(tmp_path / "b.wav", np.zeros(N, np.float32))  # digital silence
    with pytest.raises(DataError, match="none of the 2 audio files") as err:
        load_unlabeled(tmp_path, N, 0, 0, progress=False)
    assert str(tmp_path) in str(err.value)


def test_a_bad_file_is_skipped_and_counted_or_fails_when_strict(tmp_path: Path) -> None:
    good = _wav(tmp_path / "good.wav", N, seed=1)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav file")
    write_wav(tmp_path / "silent.wav", np.zeros(N, np.float32))
    pool = load_unlabeled(tmp_path, N, 0, 0, progress=False)
    assert pool.files == 3
    assert pool.skipped == {"unreadable": 1, "silent": 1}
    np.testing.assert_array_equal(pool.clips, good[None])
    with pytest.raises(DataError, match="data.strict") as err:
        load_unlabeled(tmp_path, N, 0, 0, strict=True, progress=False)
    assert "broken.wav" in str(err.value)  # sorted order: the first bad file is reported by name
