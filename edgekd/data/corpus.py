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
import math
import multiprocessing
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from edgekd.audio.augment import silence_clip
from edgekd.audio.io import SAMPLE_RATE, fix_length, from_pcm16, read_wav, to_pcm16
from edgekd.config import SILENCE, UNKNOWN, BuildConfig, SynthConfig
from edgekd.errors import ConfigError, DataError

if TYPE_CHECKING:
    from edgekd.audio.synth import Voice

SPLITS = ("train", "validation", "test")
# Below this many clips per worker process, starting workers and loading their models costs more than
# it saves (synthesize).
MIN_CLIPS_PER_WORKER = 100
BACKGROUND_DIR = "_background_noise_"
ESPEAK = "espeak"  # the engine with voices to spare: test-only evidence voices come from it
EXTRA_GROUP = "real"  # group prefix of the user's own recordings mixed into a corpus (data.extra)


@dataclass
class Corpus:
    clips: np.ndarray  # int16 [N, S]
    labels: np.ndarray  # int64 [N], index into `classes`
    splits: np.ndarray  # str [N], one of SPLITS
    groups: np.ndarray  # str [N], voice or speaker id (the leakage unit)
    classes: list[str]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    backgrounds: list[np.ndarray] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)  # "path: reason", in reading order

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def float_clips(self, idx: np.ndarray) -> np.ndarray:
        return from_pcm16(self.clips[idx])

    def merged(self, other: Corpus) -> Corpus:
        """This corpus followed by `other`'s clips (same classes): skips add up, backgrounds join."""
        if other.classes != self.classes or other.clips.shape[1] != self.clips.shape[1]:
            raise ValueError("merged corpora must share classes and clip length")
        return Corpus(
            np.concatenate([self.clips, other.clips]),
            np.concatenate([self.labels, other.labels]),
            np.concatenate([self.splits, other.splits]),
            np.concatenate([self.groups, other.groups]),
            self.classes,
            dict(Counter(self.skipped) + Counter(other.skipped)),
            self.backgrounds + other.backgrounds,
            self.skipped_files + other.skipped_files,
        )

    def extra_rows(self) -> np.ndarray:
        """Whether each clip is one of the user's own recordings mixed in with `data.extra`."""
        return np.char.startswith(self.groups.astype(str), f"{EXTRA_GROUP}:")

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
            skipped_files=np.array(self.skipped_files, dtype=str),
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
            z["skipped_files"].tolist() if "skipped_files" in z.files else [],
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
    """Offline corpus: every voice says every keyword and some other words; speakers never span splits.

    Clips are synthesized in `data.synth.workers` processes; each clip is a pure function of the seed,
    its text, voice and take, so the corpus is the same for any number of workers.
    """
    from edgekd.audio.synth import get_engine

    s = cfg.data.synth
    rng = np.random.default_rng(cfg.seed)
    for name in _wanted_engines(cfg):  # an engine that cannot run here fails before any work
        get_engine(name).require()
    voices, split_of = corpus_voices(cfg)
    n_samples = SAMPLE_RATE * cfg.frontend.clip_ms // 1000
    classes = cfg.classes
    jobs: list[tuple[str, int, Voice, int]] = []  # (text, label, voice, take)
    for voice in voices:
        jobs += [(w, classes.index(w), voice, take) for w in cfg.labels for take in range(s.keyword_takes)]
        if cfg.unknown_words and s.unknown_words_per_voice:
            picks = rng.choice(
                len(cfg.unknown_words),
                size=min(s.unknown_words_per_voice, len(cfg.unknown_words)),
                replace=False,
            )
            jobs += [(cfg.unknown_words[i], classes.index(UNKNOWN), voice, 0) for i in picks]
    clips: list[np.ndarray] = []
    labels: list[int] = []
    groups: list[str] = []
    splits: list[str] = []
    skipped: Counter[str] = Counter()
    audios = _synth_parallel([(w, v, take) for w, _, v, take in jobs], cfg.seed, s.workers, progress)
    for (_, label, voice, _), audio in zip(jobs, audios, strict=True):
        if len(audio) == 0 or np.max(np.abs(audio)) < 1e-3:
            skipped["silent"] += 1
            continue
        clips.append(fix_length(audio, n_samples))
        labels.append(label)
        groups.append(voice.speaker)
        splits.append(split_of[voice.speaker])
    _add_silence(clips, labels, groups, splits, cfg, rng, n_samples, [])
    return _pack(clips, labels, splits, groups, cfg, dict(skipped), [])


def corpus_voices(cfg: BuildConfig) -> tuple[list[Voice], dict[str, str]]:
    """The corpus's voices and each speaker's split, test-only evidence voices included.

    The leakage unit is the speaker (the person or timbre heard), not the speed/pitch setting: the test
    split then measures speakers never heard in training. Piper ships a single speaker, so all of its
    settings land in one split (train); one recorded person spoken by several engines is one speaker.
    """
    voices = _draw_voices(cfg)
    split_of = _split_groups(
        [v.speaker for v in voices], cfg.data.validation_fraction, cfg.data.test_fraction, cfg.seed
    )
    extra = _evidence_voices(cfg, voices, split_of)
    split_of |= {v.speaker: "test" for v in extra}
    return voices + extra, split_of


def _evidence_voices(cfg: BuildConfig, voices: list[Voice], split_of: dict[str, str]) -> list[Voice]:
    """More espeak-ng voices, test split only, when the drawn voices leave too few test clips per word
    for the gates to tell a defect from noise (a three-word vocabulary with a few dozen voices does).
    Training never sees them, so the model is the one the same config would train anyway."""
    from edgekd.audio.synth import get_engine, list_voices

    takes = cfg.data.synth.keyword_takes
    have = sum(split_of[v.speaker] == "test" for v in voices) * takes
    missing = math.ceil((cfg.test_clips_per_class - have) / takes)
    if not cfg.data.synth.test_evidence or missing <= 0 or not get_engine(ESPEAK).available()[0]:
        return []
    drawn = sum(v.engine == ESPEAK for v in voices)
    used = {v.speaker for v in voices}
    try:
        more = list_voices(ESPEAK, drawn + 2 * missing, cfg.seed)[drawn:]
    except ConfigError:  # fewer voice settings installed than that: take what there is
        more = list_voices(ESPEAK, drawn + missing, cfg.seed)[drawn:]
    fresh: list[Voice] = []
    for v in more:
        if v.speaker not in used and len(fresh) < missing:
            fresh.append(v)
            used.add(v.speaker)
    return fresh


def voice_summary(cfg: BuildConfig) -> dict[str, dict[str, object]]:
    """Per engine of the synthetic corpus: how many voices, which speakers and under what licence.

    For the build manifest: some engines' voices (MBROLA, RHVoice's) carry licences that restrict
    what the corpus and models trained on it may be used for. Needs no engine but espeak-ng and Piper
    (their voice lists come from them), so it also describes a corpus loaded from a cache.
    """
    from edgekd.audio.synth import engine_licences

    voices, _ = corpus_voices(cfg)
    return {
        engine: {
            "voices": sum(v.engine == engine for v in voices),
            "speakers": sorted({v.speaker for v in voices if v.engine == engine}),
            "licence": licence,
        }
        for engine, licence in engine_licences(voices).items()
    }


def _voice_counts(s: SynthConfig) -> dict[str, int]:
    """Engine -> voices asked for, from the `<engine>_voices` fields, in their order in the config."""
    return {f.removesuffix("_voices"): getattr(s, f) for f in type(s).model_fields if f.endswith("_voices")}


def _wanted_engines(cfg: BuildConfig) -> dict[str, int]:
    """Engine -> voices asked for, for the engines that are on (0 voices = off)."""
    counts = _voice_counts(cfg.data.synth)
    wanted = {name: n for name, n in counts.items() if n}
    if not wanted:
        fields = ", ".join(f"data.synth.{name}_voices" for name in counts)
        raise DataError(f"data.synth: no voices requested; set one of {fields} > 0")
    return wanted


def _draw_voices(cfg: BuildConfig) -> list[Voice]:
    """The corpus's voices, engine by engine, in config order."""
    from edgekd.audio.synth import list_voices

    return [v for name, n in _wanted_engines(cfg).items() for v in list_voices(name, n, cfg.seed)]


def _synth_parallel(
    items: list[tuple[str, Voice, int]], seed: int, workers: int, progress: bool
) -> list[np.ndarray]:
    """Synthesize (text, voice, take) items, in order, in up to `workers` processes.

    Items are grouped by voice so a worker keeps that voice's session (festival process, ONNX model)
    warm across its clips. Workers come from a fork server, never from this process: a fork of it would
    share its festival pipes and onnxruntime thread pools. Each worker loads its own models (seconds for
    Piper and Kokoro), so a small corpus is synthesized here instead.
    """
    from edgekd.audio.synth import Synthesizer, get_engine

    synth = Synthesizer(seed)
    by_voice: dict[str, list[int]] = {}
    for i, (_, voice, _) in enumerate(items):
        by_voice.setdefault(voice.id, []).append(i)
    tasks = list(by_voice.values())  # item indices, one voice each
    for name in dict.fromkeys(v.engine for _, v, _ in items):
        get_engine(name).prepare()
    out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(items)

    def collect(task: list[int], audios: list[np.ndarray]) -> None:
        for i, audio in zip(task, audios, strict=True):
            out[i] = audio
        bar.update(len(task))

    with tqdm(total=len(items), desc="synthesising corpus", unit="clip", disable=not progress) as bar:
        workers = min(workers, len(tasks), len(items) // MIN_CLIPS_PER_WORKER)
        if workers <= 1:
            for task in tasks:
                collect(task, synth.synth_many([items[i] for i in task]))
            return out
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["edgekd.audio.synth"])  # imported once, in the server
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(synth.synth_many, [items[i] for i in task]): task for task in tasks}
            try:
                for future in as_completed(futures):
                    collect(futures[future], future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    return out


def speaker_of(path: Path) -> str:
    """The speaker of a Speech Commands file name, `<speaker>_nohash_<n>.wav`: the unit of every split."""
    return re.sub(r"_nohash_.*$", "", path.stem)


def _read_list(root: Path, name: str) -> set[str]:
    f = root / name
    return {line.strip() for line in f.read_text().splitlines() if line.strip()} if f.exists() else set()


def load_speech_commands(
    cfg: BuildConfig,
    root: Path | None = None,
    progress: bool = True,
    held_out: bool = False,
    extra: bool = False,
) -> Corpus:
    """A user corpus in the Speech Commands layout; bad files are skipped and counted (or fail under strict).

    `held_out=True` (for `edgekd eval`) puts every clip in the test split: the folder was never trained on.
    `extra=True` reads recordings to mix into another corpus (`data.extra`): any subset of the labels,
    speakers grouped as `EXTRA_GROUP:<speaker>`, no silence added and no split required to be non-empty.
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
    # `_unknown_/` and `_silence_/` hold those classes' clips (the official Speech Commands test set);
    # other `_` folders, `_background_noise_/` among them, are not label folders.
    label_dirs = sorted(
        d
        for d in root.iterdir()
        if d.is_dir() and (not d.name.startswith("_") or d.name in (UNKNOWN, SILENCE))
    )
    present = {d.name for d in label_dirs}
    absent = [w for w in cfg.labels if w not in present]
    if extra and len(absent) == len(cfg.labels):
        raise DataError(
            f"data.extra {str(root)!r}: no folder named after a label {cfg.labels}; found folders "
            f"{sorted(present)}. Put your recordings of each word in a folder named after it"
        )
    if absent and not extra:
        # a held-out folder is scored against a finished build, whose labels are fixed: an empty folder per
        # word not recorded scores the others, and keeps a misspelt folder ("Yes") from passing as _unknown_
        fix = (
            "Create them; a folder may stay empty to score only the words you recorded"
            if held_out
            else "Create them or set labels in the recipe to the folders you have"
        )
        raise DataError(f"{root}: no folder for label(s) {absent}; found folders {sorted(present)}. {fix}.")
    val_list, test_list = _read_list(root, "validation_list.txt"), _read_list(root, "testing_list.txt")
    classes = cfg.classes
    n_samples = SAMPLE_RATE * cfg.frontend.clip_ms // 1000
    files: list[tuple[Path, int]] = []
    for d in label_dirs:
        if d.name in cfg.labels or (d.name == SILENCE and SILENCE in classes):
            label = classes.index(d.name)
        elif d.name != SILENCE and UNKNOWN in classes:
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
    skipped_files: list[str] = []
    clips: list[np.ndarray] = []
    labels: list[int] = []
    groups: list[str] = []
    splits: list[str] = []
    for path, label in tqdm(files, desc="reading corpus", unit="clip", disable=not progress):
        is_silence = path.parent.name == SILENCE
        try:
            audio = read_wav(path, allow_clipped=is_silence, allow_silent=is_silence)
        except DataError as err:
            if cfg.data.strict:
                raise DataError(f"{err} (--strict: fix or remove the file)") from None
            reason = getattr(err, "reason", "unreadable")
            skipped[reason] += 1
            skipped_files.append(f"{path}: {reason}")
            continue
        rel = f"{path.parent.name}/{path.name}"
        speaker = speaker_of(path)
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
        groups.append(f"{EXTRA_GROUP if extra else 'speaker'}:{speaker}")
        splits.append(split)
    backgrounds = _read_backgrounds(root / BACKGROUND_DIR, cfg, skipped, skipped_files)
    if extra:
        corpus = _pack(clips, labels, splits, groups, cfg, dict(skipped), backgrounds, require_splits=False)
        return replace(corpus, skipped_files=skipped_files)
    if not (SILENCE in classes and classes.index(SILENCE) in labels):  # a `_silence_/` folder is used as is
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
    corpus = _pack(
        clips, labels, splits, groups, cfg, dict(skipped), backgrounds, require_splits=not held_out
    )
    return replace(corpus, skipped_files=skipped_files)


def _read_backgrounds(
    folder: Path, cfg: BuildConfig, skipped: Counter[str], skipped_files: list[str]
) -> list[np.ndarray]:
    out = []
    for path in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
        try:
            out.append(read_wav(path, allow_clipped=True))
        except DataError as err:
            if cfg.data.strict:
                raise
            reason = getattr(err, "reason", "unreadable")
            skipped[reason] += 1
            skipped_files.append(f"{path}: {reason}")
    return out


def build_corpus(cfg: BuildConfig, progress: bool = True) -> Corpus:
    """The user's corpus or a synthetic one, plus the user's own recordings (`data.extra`) when given."""
    corpus = load_speech_commands(cfg, progress=progress) if cfg.data.path else synthesize(cfg, progress)
    if cfg.data.extra:
        corpus = corpus.merged(load_speech_commands(cfg, Path(cfg.data.extra), progress, extra=True))
    return corpus


def keyword_clips(
    corpus: Corpus, split: str, keywords: tuple[str, ...], n: int, seed: int
) -> list[tuple[str, np.ndarray]]:
    """Up to `n` keyword clips of a corpus split, an even seeded share per keyword, as (word, audio)."""
    rng = np.random.default_rng(seed)
    rows = corpus.indices(split)
    per_word = -(-n // len(keywords))
    chosen = []
    for word in keywords:
        mine = rows[corpus.labels[rows] == corpus.classes.index(word)]
        chosen += [(word, i) for i in sorted(rng.permutation(mine)[:per_word].tolist())]
    return [(word, from_pcm16(corpus.clips[i])) for word, i in chosen[:n]]
