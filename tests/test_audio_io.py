"""read_wav normalises any input to float32 mono 16 kHz and names bad files with a reason and a fix."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from edgekd.audio.io import SAMPLE_RATE, fix_length, read_wav, resample, to_pcm16, write_wav
from edgekd.errors import DataError


def _tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_resamples_44k1_to_16k_keeping_pitch(tmp_path: Path) -> None:
    path = tmp_path / "tone44k.wav"
    sf.write(path, _tone(440.0, 0.5, 44100), 44100, subtype="PCM_16")
    x = read_wav(path)
    assert x.dtype == np.float32
    assert abs(len(x) - SAMPLE_RATE // 2) <= 1
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(x) - 440.0) < 3.0
    assert np.max(np.abs(x)) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampling_with_the_cached_filter_equals_scipys_default(sr: int) -> None:
    """The filter designed once per rate pair is the one resample_poly designs itself: same samples."""
    x = np.random.default_rng(sr).uniform(-0.9, 0.9, sr // 3).astype(np.float32)
    up, down = SAMPLE_RATE // np.gcd(SAMPLE_RATE, sr), sr // np.gcd(SAMPLE_RATE, sr)
    expected = np.clip(resample_poly(x, up, down).astype(np.float32), -1.0, 1.0)
    for _ in range(2):  # the second call reads the cached filter, which the first must not have changed
        np.testing.assert_array_equal(resample(x, sr), expected)


def test_mixes_stereo_to_mono(tmp_path: Path) -> None:
    left, right = _tone(300.0, 0.25, SAMPLE_RATE, 0.6), _tone(700.0, 0.25, SAMPLE_RATE, 0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(read_wav(path), (left + right) / 2, atol=1e-6)


def test_write_then_read_is_exact_on_the_int16_grid(tmp_path: Path) -> None:
    x = to_pcm16(_tone(500.0, 0.1, SAMPLE_RATE)).astype(np.float32) / 32768
    path = write_wav(tmp_path / "sub" / "clip.wav", x)
    assert sf.info(path).subtype == "PCM_16" and sf.info(path).samplerate == SAMPLE_RATE
    np.testing.assert_array_equal(read_wav(path), x)
    assert [p.name for p in path.parent.iterdir()] == ["clip.wav"]  # no temp files left behind


def _write_bad(kind: str, path: Path) -> None:
    if kind == "unreadable":
        path.write_bytes(b"RIFF but not really a wav file")
    elif kind == "empty":
        sf.write(path, np.zeros(0, np.float32), SAMPLE_RATE, subtype="PCM_16")
    elif kind == "silent":
        sf.write(path, np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, subtype="PCM_16")
    else:  # speech-like level pushed into the rails
        sf.write(path, np.clip(_tone(200.0, 1.0, SAMPLE_RATE, 8.0), -1, 1), SAMPLE_RATE, subtype="PCM_16")


@pytest.mark.parametrize("reason", ["unreadable", "empty", "silent", "clipped"])
def test_bad_files_raise_data_error_with_reason_and_name(tmp_path: Path, reason: str) -> None:
    path = tmp_path / f"bad_{reason}.wav"
    _write_bad(reason, path)
    with pytest.raises(DataError) as info:
        read_wav(path)
    assert info.value.reason == reason
    assert path.name in str(info.value) and "Fix:" in str(info.value)
    # raised in a reader process, it reaches the caller whole (edgekd.stream.reader_pool)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is type(info.value) and str(again) == str(info.value) and again.reason == reason


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        read_wav(tmp_path / "nope.wav")
    assert info.value.reason == "unreadable" and "nope.wav" in str(info.value)


def test_clipping_is_allowed_on_request_and_a_single_full_scale_peak_is_not_clipping(tmp_path: Path) -> None:
    clipped = tmp_path / "noise.wav"
    _write_bad("clipped", clipped)
    assert np.max(np.abs(read_wav(clipped, allow_clipped=True))) > 0.99
    normalised = _tone(210.0, 1.0, SAMPLE_RATE) * np.hanning(SAMPLE_RATE).astype(np.float32)
    normalised /= np.max(np.abs(normalised))
    path = tmp_path / "normalised.wav"
    sf.write(path, normalised, SAMPLE_RATE, subtype="PCM_16")
    assert len(read_wav(path)) == SAMPLE_RATE


def test_fix_length_centers() -> None:
    x = np.arange(1, 5, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(x, 8), [0, 0, 1, 2, 3, 4, 0, 0])
    np.testing.assert_array_equal(fix_length(np.arange(10), 4), [3, 4, 5, 6])
    assert len(fix_length(x, 4)) == 4
