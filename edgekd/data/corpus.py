"""The labelled corpus: fixed-length 16 kHz clips with a label, a split and a group.

Two sources produce the same `Corpus`:
- `synthesize`: the offline default — Piper and espeak-ng voices speaking the keywords and other
  words, plus noise-only `_silence_`. The split unit is the voice, so the test split measures
  unseen voices.
- `load_speech_commands`: a user folder in the Speech Commands layout. The split unit is the
  speaker (`<speaker>_nohash_<n>.wav`), hashed so one speaker never spans two splits;
  `validation_list.txt` / `testing_list.txt` win when present.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgekd.audio.augment import silence_clip
from edgekd.audio.io import SAMPLE_RATE, fix_length, read_wav, to_pcm16
from edgekd.config import SILENCE, UNKNOWN, BuildConfig
from edgekd.errors import DataError

SPLITS = ("train", "validation", "test")
BACKGROUND_DIR = "_background_noise_"


@dataclass
class Corpus:
    clips: np.ndarray  # int16 [N, S]
    labels: np.ndarray  # int64 [N], index into `classes`
    splits: np.ndarray  # str [N], one of SPLITS
    groups: np.ndarray  # str [N], voice or speaker id (the leakage unit)
    classes: list[str]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    backgrounds: list[np.ndarray] = field(default_factory=list)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def float_clips(self, idx: np.ndarray) -> np.ndarray:
        return self.clips[idx].astype(np.float32) / 32768.0

    def summary(self) -> dict[str, dict[str, int]]:
        return {
            s: {self.classes[k]: int(v) for k, v in sorted(Counter(self.labels[self.splits == s]).items())}
            for s in SPLITS
        }

    def save(self, path: Path) -> None:
        from edgekd.artifacts import write_npz

        bg = np.concatenate(self.backgrounds) if self.backgrounds else np.zeros(0, np.float32)
        bg_len = np.array([len(b) for b in self.backgrounds], dtype=np.int64)
        write_npz(
            path,
            clips=self.clips,
            labels=self.labels,
            splits=self.splits,
            groups=self.groups,
            classes=np.array(self.classes),
            skipped_reasons=np.array(list(self.skipped), dtype=str),
            skipped_counts=np.array(list(self.skipped.values()), dtype=np.int64),
            bg=bg,
            bg_len=bg_len,
        )

    @classmethod
    def load(cls, path: Path) -> Corpus:
        z = np.load(path)
        bg = np.split(z["bg"], np.cumsum(z["bg_len"])[:-1]) if len(z["bg_len"]) else []
        return cls(
            z["clips"],
            z["labels"],
            z["splits"],
            z["groups"],
            [str(c) for c in z["classes"]],
            dict(zip(z["skipped_reasons"].tolist(), z["skipped_counts"].tolist(), strict=True)),
            bg,
        )


def _group_split(group: str, val: float, test: float) -> str:
    """Stable split by hashing the group id (the scheme of TF's speech_commands `which_set`)."""
    bucket = int(hashlib.sha1(group.encode()).hexdigest(), 16) % 10_000 / 10_000
    return "validation" if bucket < val else "test" if bucket < val + test else "train"


def _split_groups(groups: list[str], val: float, test: float, seed: int) -> dict[str, str]:
    """Exact-proportion split of a small number of groups (synthetic voices), stratified by engine."""
    out: dict[str, str] = {}
    by_engine: dict[str, list[str]] = {}
    for g in sorted(set(groups)):
        by_engine.setdefault(g.split(":")[0], []).append(g)
    rng = np.random.default_rng(seed)
    for members in by_engine.values():
        order = list(rng.permutation(members))
        n_val = max(1, round(len(order) * val)) if len(order) >= 3 else 0  # a lone speaker trains
        n_test = max(1, round(len(order) * test)) if len(order) >= 3 else 0
        for i, g in enumerate(order):
            out[g] = "validation" if i < n_val else "test" if i < n_val + n_test else "train"
    return out


def _add_silence(
    clips: list[np.ndarray],
    labels: list[int],
    groups: list[str],
    splits: list[str],
    cfg: BuildConfig,
    rng: np.random.Generator,
    n_samples: int,
    backgrounds: list[np.ndarray],
    held_out: str | None = None,
) -> None:
    if not cfg.silence:
        return
    classes = cfg.classes
    n = max(3, int(round(len(clips) * cfg.data.synth.silence_fraction)))
    noise_groups = [f"noise:{i % 30}" for i in range(n)]
    # exact proportions (not hashing): a few dozen noise groups must still reach validation and test
    split_of = _split_groups(noise_groups, cfg.data.validation_fraction, cfg.data.test_fraction, cfg.seed)
    for group in noise_groups:
        clips.append(silence_clip(n_samples, rng, backgrounds))
        labels.append(classes.index(SILENCE))
        groups.append(group)
        splits.append(held_out or split_of[group])


def _pack(
    clips: list[np.ndarray],
    labels: list[int],
    splits: list[str],
    groups: list[str],
    cfg: BuildConfig,
    skipped: dict[str, int],
    backgrounds: list[np.ndarray],
    require_splits: bool = True,
) -> Corpus:
    pcm = np.stack([to_pcm16(c) for c in clips])
    corpus = Corpus(
        pcm,
        np.array(labels, dtype=np.int64),
        np.array(splits),
        np.array(groups),
        cfg.classes,
        skipped,
        backgrounds,
    )
    missing = [s for s in SPLITS if len(corpus.indices(s)) == 0]
    if missing and require_splits:
        raise DataError(
            f"corpus has no clips in split(s) {missing}: add more speakers/voices, or lower "
            "data.validation_fraction / data.test_fraction"
        )
    return corpus


def synthesize(cfg: BuildConfig, progress: bool = True) -> Corpus:
    """Offline corpus: every voice says every keyword and some other words; voices never span splits."""
    from edgekd.audio.synth import Synthesizer, list_voices

    s = cfg.data.synth
    rng = np.random.default_rng(cfg.seed)
    # An engine asked for 0 voices is off (list_voices itself refuses n=0).
    voices = [
        v
        for engine, n in (("espeak", s.espeak_voices), ("piper", s.piper_voices))
        if n
        for v in list_voices(engine, n, cfg.seed)
    ]
    if not voices:
        raise DataError("data.synth: no voices requested; set data.synth.espeak_voices or piper_voices > 0")
    # The leakage unit is the speaker (engine + voice + variant), not the speed/pitch setting: the test
    # split then measures speakers never heard in training. Piper ships a single speaker, so all of
    # its settings land in one split (train).
    split_of = _split_groups(
        [v.speaker for v in voices], cfg.data.validation_fraction, cfg.data.test_fraction, cfg.seed
    )
    n_samples = SAMPLE_RATE * cfg.frontend.clip_ms // 1000
    classes = cfg.classes
    jobs: list[tuple[str, int, object]] = []
    for voice in voices:
        jobs += [(word, classes.index(word), voice) for word in cfg.labels for _ in range(s.keyword_takes)]
        if cfg.unknown_words and s.unknown_words_per_voice:
            picks = rng.choice(
                len(cfg.unknown_words),
                size=min(s.unknown_words_per_voice, len(cfg.unknown_words)),
                replace=False,
            )
            jobs += [(cfg.unknown_words[i], classes.index(UNKNOWN), voice) for i in picks]
    synth = Synthesizer(seed=cfg.seed)
    clips: list[np.ndarray] = []
    labels: list[int] = []
    groups: list[str] = []
    splits: list[str] = []
    skipped: Counter[str] = Counter()
    for word, label, voice in tqdm(jobs, desc="synthesising corpus", unit="clip", disable=not progress):
        audio = synth.synth(word, voice)
        if len(audio) == 0 or np.max(np.abs(audio)) < 1e-3:
            skipped["silent"] += 1
            continue
        clips.append(fix_length(audio, n_samples))
        labels.append(label)
        groups.append(voice.speaker)
        splits.append(split_of[voice.speaker])
    _add_silence(clips, labels, groups, splits, cfg, rng, n_samples, [])
    return _pack(clips, labels, splits, groups, cfg, dict(skipped), [])


def _speaker(path: Path) -> str:
    return re.sub(r"_nohash_.*$", "", path.stem)


def _read_list(root: Path, name: str) -> set[str]:
    f = root / name
    return {line.strip() for line in f.read_text().splitlines() if line.strip()} if f.exists() else set()


def load_speech_commands(
    cfg: BuildConfig, root: Path | None = None, progress: bool = True, held_out: bool = False
) -> Corpus:
    """A user corpus in the Speech Commands layout; bad files are skipped and counted (or fail under strict).

    `held_out=True` (for `edgekd eval`) puts every clip in the test split: the folder was never trained on.
    """
    if root is None and not cfg.data.path:
        raise DataError("no corpus folder given: set data.path or pass --data DIR")
    root = Path(root or cfg.data.path)
    if not root.is_dir():
        raise DataError(
            f"data.path {str(root)!r} is not a directory; expected a Speech Commands layout: one "
            "folder per label with .wav files (optional validation_list.txt, testing_list.txt, "
            "_background_noise_/)"
        )
    label_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("_"))
    present = {d.name for d in label_dirs}
    absent = [w for w in cfg.labels if w not in present]
    if absent:
        raise DataError(
            f"{root}: no folder for label(s) {absent}; found folders {sorted(present)}. "
            "Create them or set labels in the recipe to the folders you have."
        )
    val_list, test_list = _read_list(root, "validation_list.txt"), _read_list(root, "testing_list.txt")
    classes = cfg.classes
    n_samples = SAMPLE_RATE * cfg.frontend.clip_ms // 1000
    files: list[tuple[Path, int]] = []
    for d in label_dirs:
        if d.name in cfg.labels:
            label = classes.index(d.name)
        elif UNKNOWN in classes:
            label = classes.index(UNKNOWN)
        else:
            continue
        wavs = sorted(d.glob("*.wav"))
        if cfg.data.max_clips_per_label:
            wavs = wavs[: cfg.data.max_clips_per_label]
        files += [(w, label) for w in wavs]
    if not files:
        raise DataError(f"{root}: no .wav files found in the label folders")
    skipped: Counter[str] = Counter()
    clips: list[np.ndarray] = []
    labels: list[int] = []
    groups: list[str] = []
    splits: list[str] = []
    for path, label in tqdm(files, desc="reading corpus", unit="clip", disable=not progress):
        try:
            audio = read_wav(path)
        except DataError as err:
            if cfg.data.strict:
                raise DataError(f"{err} (--strict: fix or remove the file)") from None
            skipped[getattr(err, "reason", "unreadable")] += 1
            continue
        rel = f"{path.parent.name}/{path.name}"
        speaker = _speaker(path)
        if held_out:
            split = "test"
        elif rel in val_list:
            split = "validation"
        elif rel in test_list:
            split = "test"
        elif val_list or test_list:
            split = "train"
        else:
            split = _group_split(speaker, cfg.data.validation_fraction, cfg.data.test_fraction)
        clips.append(fix_length(audio, n_samples))
        labels.append(label)
        groups.append(f"speaker:{speaker}")
        splits.append(split)
    backgrounds = _read_backgrounds(root / BACKGROUND_DIR, cfg, skipped)
    _add_silence(
        clips,
        labels,
        groups,
        splits,
        cfg,
        np.random.default_rng(cfg.seed),
        n_samples,
        backgrounds,
        "test" if held_out else None,
    )
    return _pack(clips, labels, splits, groups, cfg, dict(skipped), backgrounds, require_splits=not held_out)


def _read_backgrounds(folder: Path, cfg: BuildConfig, skipped: Counter[str]) -> list[np.ndarray]:
    out = []
    for path in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
        try:
            out.append(read_wav(path, allow_clipped=True))
        except DataError as err:
            if cfg.data.strict:
                raise
            skipped[getattr(err, "reason", "unreadable")] += 1
    return out


def build_corpus(cfg: BuildConfig, progress: bool = True) -> Corpus:
    return load_speech_commands(cfg, progress=progress) if cfg.data.path else synthesize(cfg, progress)
