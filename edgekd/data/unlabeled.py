"""Unlabeled audio (`--unlabeled DIR`): recordings from the user's device, with no labels at all.

This is the usual way to adapt a keyword spotter to a real microphone and real voices: record a
few hours, let the teacher label it, and distil. Every audio file under the folder is read (any
soundfile format, resampled to 16 kHz mono); files up to one clip long are centred and padded,
longer recordings are cut into clip-length windows with 50% overlap. Unreadable or silent files
are skipped and counted (or fail with `data.strict`), like a labelled corpus. `builtin:NAME`
instead of a folder names a pool of real speech unpacked from Debian packages (edgekd.data.real_pool).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgekd.audio.io import fix_length, read_wav, to_pcm16
from edgekd.data.real_pool import PREFIX, Part, builtin_name, resolve_sources
from edgekd.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


@dataclass
class UnlabeledPool:
    clips: np.ndarray  # int16 [N, S]
    files: int  # files read (a capped built-in pool reads only as many as its windows need)
    skipped: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)  # windows per source of a built-in pool


def windows(x: np.ndarray, n: int) -> list[np.ndarray]:
    """Clip-length windows of a recording: one padded clip if short, else 50%-overlapping windows."""
    if len(x) <= n:
        return [fix_length(x, n)]
    hop = n // 2
    starts = list(range(0, len(x) - n + 1, hop))
    if starts[-1] + n < len(x):
        starts.append(len(x) - n)  # the tail, so no speech at the end is dropped
    return [x[s : s + n] for s in starts]


@dataclass
class _Reader:
    """Cuts audio files into int16 windows, counting the files read and skipped (or failing when strict)."""

    n_samples: int
    strict: bool
    min_dbfs: float | None
    bar: tqdm
    files: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def __call__(self, path: Path) -> list[np.ndarray]:
        self.files += 1
        self.bar.update()
        try:
            x = read_wav(path)
        except DataError as err:
            if self.strict:
                raise DataError(f"{err} (data.strict: fix or remove the file)") from None
            self.skipped[getattr(err, "reason", "unreadable")] += 1
            return []
        cut = windows(x, self.n_samples)
        if self.min_dbfs is not None:
            cut = [w for w in cut if 10 * np.log10(np.mean(np.square(w)) + 1e-20) >= self.min_dbfs]
        return [to_pcm16(w) for w in cut]  # int16 at once: an hours-long pool would double in float32


def load_unlabeled(
    source: str | Path | Sequence[Path],
    n_samples: int,
    max_clips: int,
    seed: int,
    strict: bool = False,
    progress: bool = True,
    min_dbfs: float | None = None,
    part: Part = "all",
) -> UnlabeledPool:
    """Clip-length int16 windows of a folder (every audio file below it), a list of files, or `builtin:NAME`.

    A folder or a list is read whole; `max_clips` then keeps a seeded subset of its windows, in file
    order. A built-in pool of real speech (edgekd.data.real_pool) holds hours of audio from several
    packages, too much to decode for a few thousand windows: each source's files are read in a seeded
    order and `max_clips` takes an even share from every source, so a cap never means the first files
    of one package (a source that runs dry leaves its share to the others); its unusable files are
    skipped and counted even with `strict`; `part` picks its training or check files (real_pool).
    `min_dbfs` drops windows whose RMS is below it.
    """
    name = builtin_name(source) if isinstance(source, str) else None
    label = str(source) if isinstance(source, str | Path) else f"{len(source)} listed files"
    if name is not None:
        groups = resolve_sources(name, part)
        files = [p for g in groups.values() for p in g]
    elif isinstance(source, str | Path):
        files = _folder_files(Path(source).expanduser(), source)
    else:
        files = sorted(Path(p) for p in source)
        if not files:
            raise DataError("data.unlabeled: the list of audio files is empty")
    with tqdm(total=len(files), desc="reading unlabeled audio", unit="file", disable=not progress) as bar:
        # strict is for the user's own files; a pool's bad files (tuxpaint: ~13% clipped) are the package's
        read = _Reader(n_samples, strict and name is None, min_dbfs, bar)
        if name is not None:
            rngs = [np.random.default_rng([seed, k]) for k in range(len(groups))]
            streams = [_stream(g, rng, read) for g, rng in zip(groups.values(), rngs, strict=True)]
            taken = _take_evenly(streams, max_clips or None)
            per_source = {s: len(t) for s, t in zip(groups, taken, strict=True)}
            clips = [w for t in taken for w in t]
        else:
            per_source = {}
            clips = [w for path in files for w in read(path)]
    if not clips:
        raise DataError(f"data.unlabeled {label!r}: none of the {read.files} audio files is usable")
    pcm = np.stack(clips)
    if name is None and max_clips and len(pcm) > max_clips:  # a seeded subset, in file order
        keep = np.sort(np.random.default_rng(seed).choice(len(pcm), max_clips, replace=False))
        pcm = pcm[keep]
    return UnlabeledPool(pcm, read.files, dict(read.skipped), per_source)


def _folder_files(root: Path, spec: str | Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(
            f"data.unlabeled {str(spec)!r}: not a directory; pass a folder of recordings (--unlabeled DIR) "
            f"or a built-in pool of real speech ({PREFIX}NAME)"
        )
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise DataError(
            f"data.unlabeled {str(spec)!r}: no audio files found (looked for {', '.join(AUDIO_SUFFIXES)} "
            "in the folder and its subfolders)"
        )
    return files


def _stream(files: list[Path], rng: np.random.Generator, read: _Reader) -> Iterator[np.ndarray]:
    """A source's windows, file by file in a seeded order, decoding only as far as they are taken."""
    for i in rng.permutation(len(files)):
        yield from read(files[i])


def _take_evenly(streams: list[Iterator[np.ndarray]], count: int | None) -> list[list[np.ndarray]]:
    """Up to `count` items (None: all), an even share from each stream; a share left by one that
    runs dry goes to the others, so a small source never shrinks the total."""
    if count is None:
        return [list(s) for s in streams]
    taken: list[list[np.ndarray]] = [[] for _ in streams]
    live = list(range(len(streams)))
    while live and (left := count - sum(map(len, taken))) > 0:
        share, extra = divmod(left, len(live))
        for rank, i in enumerate(list(live)):
            want = share + (rank < extra)
            got = list(islice(streams[i], want))
            taken[i].extend(got)
            if len(got) < want:
                live.remove(i)
    return taken
