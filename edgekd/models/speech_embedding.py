"""Google's pretrained speech_embedding model, as bundled (TFLite) in `pyopen-wakeword`.

It is the one pretrained speech model that installs offline here, so it serves as the teacher's
backbone. Preprocessing reproduces pyopen-wakeword's streaming `OpenWakeWordFeatures` exactly (tested
against it): audio as int16-valued float32, cut into 1760-sample chunks every 1280 samples (80 ms) ->
melspectrogram.tflite (8 frames of 32 mel bins per chunk) -> `mel / 10 + 2` -> windows of 76 mel frames
(775 ms) every 8 frames -> embedding_model.tflite -> one 96-d vector per window (computed in one run over
the whole sequence, which the model's time stride of 8 makes identical).

The chunking matters: the mel model clamps its dB output at (input max - 80 dB), so running it on a
whole clip changes every quiet frame; per-chunk runs keep each frame local, as at inference.

A 1 s clip alone gives only 2 windows, so clips are zero-padded by `pad_ms` (default 250 ms) on both
sides: a 1 s clip becomes 1.5 s -> 18 chunks -> 144 mel frames -> E = 9 embeddings covering all of it.
"""

from __future__ import annotations

import importlib.resources
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import sha256_file
from edgekd.audio.io import SAMPLE_RATE, to_pcm16
from edgekd.errors import EdgekdError
from edgekd.native_log import captured_stderr

CHUNK = 1760  # samples per melspectrogram call, as openWakeWord streams them (-> 8 mel frames)
CHUNK_HOP = 1280
MELS_PER_CHUNK = 8
N_MELS = 32
WINDOW = 76  # mel frames per embedding
WINDOW_HOP = 8
EMBEDDING_DIM = 96
_INSTALL = "install it with `pip install pyopen-wakeword==1.1.0`"


class SpeechEmbedding:
    """Batched float32 [N, S] 16 kHz audio -> [N, E, 96] embeddings with ai-edge-litert."""

    def __init__(self, pad_ms: float = 250.0, batch_size: int = 16, num_threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise EdgekdError(
                "the speech-embedding teacher needs ai-edge-litert; install it with "
                "`pip install ai-edge-litert`"
            ) from exc
        self.pad = round(pad_ms * SAMPLE_RATE / 1000)
        self.batch_size = batch_size
        self.mel_path, self.emb_path = _model_paths()
        self._mel = Interpreter(model_path=str(self.mel_path), num_threads=num_threads)
        self._emb = Interpreter(model_path=str(self.emb_path), num_threads=num_threads)
        self._shapes: dict[int, tuple[int, ...]] = {}
        self._io = {
            id(i): (i.get_input_details()[0]["index"], i.get_output_details()[0]["index"])
            for i in (self._mel, self._emb)
        }

    @cached_property
    def sha256(self) -> dict[str, str]:
        """Content hashes of both model files, for the build manifest."""
        return {
            self.mel_path.name: sha256_file(self.mel_path),
            self.emb_path.name: sha256_file(self.emb_path),
        }

    def n_embeddings(self, n_samples: int) -> int:
        """E for clips of `n_samples` (before padding); 9 for 1 s with the default padding."""
        n_mels = MELS_PER_CHUNK * max(0, (n_samples + 2 * self.pad - CHUNK) // CHUNK_HOP + 1)
        return max(0, (n_mels - WINDOW) // WINDOW_HOP + 1)

    def embed(self, clips: np.ndarray) -> np.ndarray:
        """[N, S] float32 in [-1, 1] -> float32 [N, E, 96]."""
        clips = np.asarray(clips, dtype=np.float32)
        if clips.ndim != 2:
            raise ValueError(f"expected clips of shape [N, S], got {clips.shape}")
        n_emb = self.n_embeddings(clips.shape[1])
        if n_emb == 0:
            raise EdgekdError(
                f"clips of {clips.shape[1]} samples are too short for the speech embedding "
                f"(needs {min_samples() - 2 * self.pad} samples with pad {self.pad})"
            )
        out = np.empty((len(clips), n_emb, EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(clips), self.batch_size):
            chunk = clips[start : start + self.batch_size]
            out[start : start + len(chunk)] = self._embed_batch(chunk)
        return out

    def _embed_batch(self, clips: np.ndarray) -> np.ndarray:
        audio = np.pad(to_pcm16(clips).astype(np.float32), ((0, 0), (self.pad, self.pad)))
        n_chunks = (audio.shape[1] - CHUNK) // CHUNK_HOP + 1
        chunks = audio[:, (np.arange(n_chunks) * CHUNK_HOP)[:, None] + np.arange(CHUNK)].reshape(-1, CHUNK)
        # One chunk per invoke: the mel model's -80 dB floor is taken over its whole input tensor,
        # so a batched call would let one chunk's loudness change another's quiet frames.
        mels = np.stack([self._run(self._mel, c[None])[0, 0] for c in chunks])  # [B*C, 8, 32]
        mels = mels.reshape(len(clips), n_chunks * MELS_PER_CHUNK, N_MELS) / 10 + 2
        n_windows = (mels.shape[1] - WINDOW) // WINDOW_HOP + 1
        # The embedding model is convolutional in time with a total stride of 8 frames (= WINDOW_HOP):
        # one run over the whole sequence yields every 76-frame window's embedding, bit-identical to
        # running the windows one by one, at a fifth of the work (tested).
        emb = self._run(self._emb, mels[..., None])  # [B, E, 1, 96]
        if emb.shape[1] != n_windows:
            raise EdgekdError(
                f"{self.emb_path}: {emb.shape[1]} embeddings for {n_windows} windows; this is not the "
                f"speech_embedding model edgekd was tested with; {_INSTALL}"
            )
        return emb.reshape(len(clips), n_windows, EMBEDDING_DIM)

    def _run(self, interp: Any, x: np.ndarray) -> np.ndarray:
        """Invoke with the batch dimension resized to `x` (both models have a dynamic batch)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        inp, out = self._io[id(interp)]
        if self._shapes.get(id(interp)) != x.shape:
            interp.resize_tensor_input(inp, list(x.shape))
            with captured_stderr():  # the first allocation applies XNNPACK, which prints a banner
                interp.allocate_tensors()
            self._shapes[id(interp)] = x.shape
        interp.set_tensor(inp, x)
        interp.invoke()
        return interp.get_tensor(out)


def min_samples() -> int:
    """Samples (after padding) that yield the first full window of 76 mel frames."""
    return CHUNK + CHUNK_HOP * (-(-WINDOW // MELS_PER_CHUNK) - 1)


def _model_paths() -> tuple[Path, Path]:
    try:
        models = Path(str(importlib.resources.files("pyopen_wakeword") / "models"))
    except ModuleNotFoundError as exc:
        raise EdgekdError(f"the speech-embedding teacher needs pyopen-wakeword; {_INSTALL}") from exc
    paths = (models / "melspectrogram.tflite", models / "embedding_model.tflite")
    for p in paths:
        if not p.is_file():
            raise EdgekdError(f"{p} is missing from the installed pyopen-wakeword; {_INSTALL}")
    return paths
