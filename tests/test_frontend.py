"""Frontends: the device's micro frontend and torch log-mel give fixed [T, F] frames from 16 kHz audio."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.audio.frontend import MICRO_FEATURE_SCALE, LogMel, MicroFrontend, compute_features, make_frontend
from edgekd.audio.io import SAMPLE_RATE, fix_length
from edgekd.audio.synth import Synthesizer, list_voices
from edgekd.errors import ConfigError


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    voice = list_voices("espeak", 1, seed=0)[0]
    return fix_length(Synthesizer().synth("seven", voice), SAMPLE_RATE)


def test_micro_frontend_shape_scale_and_speech_vs_silence(speech: np.ndarray) -> None:
    fe = MicroFrontend()
    feats = fe(speech)
    assert feats.shape == (98, 40) and feats.dtype == np.float32
    assert fe.n_frames(SAMPLE_RATE) == 98 and fe.params()["frames_for_1s"] == 98
    # float features are the frontend's uint16 output times the documented scale
    codes = feats / MICRO_FEATURE_SCALE
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    silence = fe(np.zeros(SAMPLE_RATE, np.float32))
    assert silence.shape == (98, 40)
    assert feats.mean() > silence.mean() + 2.0
    assert feats[40:60].mean() > feats[:5].mean() + 2.0  # the word is in the middle, not the edges


def test_micro_frontend_resets_state_per_clip(speech: np.ndarray) -> None:
    fe = MicroFrontend()
    first = fe(speech)
    fe(np.random.default_rng(0).uniform(-1, 1, SAMPLE_RATE).astype(np.float32))
    np.testing.assert_array_equal(fe(speech), first)
    assert fe(np.zeros(16000 + 159, np.float32)).shape[0] == 98  # a partial 10 ms step is dropped


def test_logmel_shape_and_tone_lands_in_the_right_band() -> None:
    fe = LogMel()
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    feats = fe(tone)
    assert feats.shape == (98, 40) and fe.params()["frames_for_1s"] == 98
    hz_to_mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731 - HTK, as documented
    centres = np.linspace(hz_to_mel(20.0), hz_to_mel(7600.0), 42)[1:-1]
    assert abs(int(np.argmax(feats.mean(0))) - int(np.argmin(np.abs(centres - hz_to_mel(1000.0))))) <= 1


@pytest.mark.parametrize("name", ["micro", "logmel"])
def test_compute_features_batches_match_single_clips(speech: np.ndarray, name: str) -> None:
    fe = make_frontend(name)
    clips = np.stack([speech, 0.3 * speech, np.zeros_like(speech)])
    feats = compute_features(fe, clips, batch_size=2)
    assert feats.shape == (3, 98, 40) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[1], fe(clips[1]), atol=1e-4)


def test_make_frontend_rejects_bad_requests() -> None:
    with pytest.raises(ConfigError, match="unknown frontend"):
        make_frontend("mfcc")
    with pytest.raises(ConfigError, match="fixed by the device"):
        make_frontend("micro", n_channels=32)
    with pytest.raises(ConfigError, match="bad parameters"):
        make_frontend("logmel", n_bins=64)
    assert make_frontend("logmel", n_mels=64).params()["n_mels"] == 64
