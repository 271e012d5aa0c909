"""The bundled speech-embedding model: openWakeWord-exact preprocessing and word-discriminative output."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.audio.io import SAMPLE_RATE, fix_length, to_pcm16
from edgekd.audio.synth import Synthesizer, list_voices
from edgekd.errors import EdgekdError
from edgekd.models.speech_embedding import SpeechEmbedding

WORDS = ("yes", "seven", "no")


@pytest.fixture(scope="module")
def model() -> SpeechEmbedding:
    return SpeechEmbedding()


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    """[voice] -> [word, S]: three espeak speakers and the Piper voice saying the same words."""
    synth = Synthesizer()
    voices = list_voices("espeak", 3, seed=3) + list_voices("piper", 1, seed=3)
    return {v.id: np.stack([fix_length(synth.synth(w, v), SAMPLE_RATE) for w in WORDS]) for v in voices}


def test_shape_finite_deterministic_and_batch_invariant(model: SpeechEmbedding, clips: dict) -> None:
    x = next(iter(clips.values()))
    emb = model.embed(x)
    assert emb.shape == (3, 9, 96) and emb.dtype == np.float32 and model.n_embeddings(SAMPLE_RATE) == 9
    assert np.isfinite(emb).all()
    np.testing.assert_array_equal(model.embed(x), emb)
    np.testing.assert_array_equal(model.embed(x[1:2])[0], emb[1])


def test_one_run_over_the_sequence_equals_window_by_window(model: SpeechEmbedding, clips: dict) -> None:
    """The embedding model's time stride is the window hop: a run over all mel frames is exact."""
    from ai_edge_litert.interpreter import Interpreter

    x = next(iter(clips.values()))
    windowed = Interpreter(model_path=str(model.emb_path))
    mel = Interpreter(model_path=str(model.mel_path))
    mel.resize_tensor_input(mel.get_input_details()[0]["index"], [1, 1760])
    mel.allocate_tensors()
    audio = np.pad(to_pcm16(x[:1]).astype(np.float32), ((0, 0), (model.pad, model.pad)))[0]
    frames = []
    for start in range(0, len(audio) - 1760 + 1, 1280):
        mel.set_tensor(mel.get_input_details()[0]["index"], audio[None, start : start + 1760])
        mel.invoke()
        frames.append(mel.get_tensor(mel.get_output_details()[0]["index"])[0, 0])
    mels = np.concatenate(frames) / 10 + 2
    windows = np.stack([mels[s : s + 76] for s in range(0, len(mels) - 76 + 1, 8)])[..., None]
    windowed.resize_tensor_input(windowed.get_input_details()[0]["index"], list(windows.shape))
    windowed.allocate_tensors()
    windowed.set_tensor(windowed.get_input_details()[0]["index"], windows.astype(np.float32))
    windowed.invoke()
    expected = windowed.get_tensor(windowed.get_output_details()[0]["index"]).reshape(-1, 96)
    np.testing.assert_array_equal(model.embed(x[:1])[0], expected)


def test_matches_pyopen_wakeword_streaming_features(model: SpeechEmbedding, clips: dict) -> None:
    from pyopen_wakeword.openwakeword import OpenWakeWordFeatures

    clip = next(iter(clips.values()))[1]
    ref = OpenWakeWordFeatures.from_builtin()
    # The reference starts from 8 s of zeros on the same 1280-sample grid, so stream the padded clip.
    pcm = to_pcm16(np.pad(clip, (model.pad, model.pad)))
    streamed = [
        e[0, 0, 0].copy()
        for i in range(0, len(pcm), 1280)
        for e in ref.process_streaming(pcm[i : i + 1280].tobytes())
    ]
    ref.close()
    first = 8 * 16000 // 1280  # windows that covered only the reference's zero prefill come first
    np.testing.assert_allclose(model.embed(clip[None])[0], np.array(streamed[first : first + 9]), atol=1e-3)


def test_same_word_across_voices_is_closer_than_different_words(model: SpeechEmbedding, clips: dict) -> None:
    pooled = {vid: model.embed(x).mean(axis=1) for vid, x in clips.items()}
    pooled = {vid: e / np.linalg.norm(e, axis=1, keepdims=True) for vid, e in pooled.items()}
    same, different = [], []
    ids = list(pooled)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            sim = pooled[a] @ pooled[b].T  # [word, word] across two voices
            same += list(np.diag(sim))
            different += list(sim[~np.eye(len(WORDS), dtype=bool)])
    assert np.mean(same) > np.mean(different) + 0.01


def test_hashes_and_short_clip_error(model: SpeechEmbedding) -> None:
    assert set(model.sha256) == {"melspectrogram.tflite", "embedding_model.tflite"}
    assert all(len(h) == 64 for h in model.sha256.values())
    with pytest.raises(EdgekdError, match="too short"):
        model.embed(np.zeros((1, 1000), np.float32))
