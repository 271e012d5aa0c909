"""Built-in pools of real recorded speech (unlabelled), unpacked from Debian main packages.

Synthetic voices are all a build trains on by default; these pools put real microphones, rooms and
actors in front of the teacher (`data.unlabeled: builtin:debian-speech`) and give checks that need
real audio (INT8-vs-float agreement, BN-statistics adaptation) something to run on (`windows`).
`scripts/setup.sh` downloads the packages with `apt-get download` and unpacks them into
`pool_root()/<package>` without installing them, keeping only the sound files and the copyright
notices; it writes `MARKER` last, so a folder without it is an interrupted unpack and counts as absent.

The audio is unlabelled and mostly not English: a head that sees it as `_unknown_` learns "sounds
real -> unknown" (measured: real command accuracy fell from 48 % to 35 % when ~2,200 of these windows
were hard `_unknown_` examples), so whatever supervises it, check the real command figure.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Literal

import numpy as np

from edgekd.audio.io import SAMPLE_RATE, AudioFileError, read_wav
from edgekd.config import ROOT
from edgekd.errors import DataError

PREFIX = "builtin:"  # data.unlabeled: builtin:NAME names a pool; anything else is a folder
MARKER = ".edgekd-unpacked"  # written last by scripts/setup.sh (keep the two in step)
DECODED = ".edgekd-16k"  # below the pool root: `decode_pool`'s 16 kHz twins (setup.sh clears them too)
SETUP = "scripts/setup.sh"
SPEECH_FLOOR_DBFS = -45.0  # `windows` skips windows quieter than this RMS: pauses, not speech
CHECK_SHARE = 5  # one file in CHECK_SHARE (by a hash of its path) is kept for checks, never trained on
# a wake-word build splits the train part again: one file in CALIBRATION_SHARE is calibration audio (the
# operating point is chosen on it), the rest (`fit`) is trained on: calibrating on training negatives
# would promise fewer false accepts than the device sees
CALIBRATION_SHARE = 4
# a held-out source (`Source.held_out`) is never trained on by any build: one file in HELD_OUT_SHARE is
# check audio, the rest calibrates. Speakers, languages and a channel no training example had make the
# operating point and the reported FA/h honest about audio the model has not met
HELD_OUT_SHARE = 2
Part = Literal["all", "train", "check", "fit", "calibration"]


@dataclass(frozen=True)
class Source:
    """One package's speech: which files (globs below the unpacked package, minus `exclude`) and terms."""

    name: str
    package: str
    licence: str
    languages: tuple[str, ...]
    globs: tuple[str, ...]
    minutes: float  # measured on the bookworm packages; what a pool offers, before any cap
    about: str
    exclude: tuple[str, ...] = ()  # fnmatch patterns on the path relative to the package folder
    held_out: bool = False  # only `calibration` and `check` parts (HELD_OUT_SHARE), never trained on

    def files(self, root: Path) -> list[Path]:
        """Its speech files below `root/package`, sorted so that every consumer sees one order."""
        base = root / self.package
        found = {p for g in self.globs for p in base.glob(g) if p.is_file()}
        return sorted(
            p for p in found if not any(fnmatch(p.relative_to(base).as_posix(), x) for x in self.exclude)
        )


def _asterisk(lang: str, folder: str, minutes: float, speaker: str) -> Source:
    """A non-English pack of the asterisk prompts: one professional speaker, 8 kHz, held out."""
    return Source(
        f"asterisk-{lang}",
        f"asterisk-core-sounds-{lang}-wav",
        "CC-BY-SA-3.0",
        (lang,),
        (f"usr/share/asterisk/sounds/{folder}/**/*.wav",),
        minutes,
        f"telephone prompts, {speaker}, 8 kHz",
        exclude=("*/silence/*",),
        held_out=True,
    )


# the language packs hold only the voices (music and effects are in fillets-ng-data)
_FILLETS = "acted game dialogue (Fish Fillets NG), several actors, 22.05/44.1 kHz"
SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "asterisk-en",
            "asterisk-core-sounds-en-wav",
            "CC-BY-SA-3.0",
            ("en",),
            ("usr/share/asterisk/sounds/en_US_f_Allison/**/*.wav",),
            24.6,
            "telephone prompts, one US English speaker (Allison), 8 kHz",
            exclude=("*/silence/*",),  # silence/1.wav .. 10.wav: digital silence for padding calls
        ),
        Source(
            "fillets-cs",
            "fillets-ng-data-cs",
            "GPL-2.0-only",
            ("cs",),
            ("usr/share/games/fillets-ng/sound/**/cs/*.ogg",),
            105.7,
            _FILLETS,
        ),
        Source(
            "fillets-nl",
            "fillets-ng-data-nl",
            "GPL-2.0-only",
            ("nl",),
            ("usr/share/games/fillets-ng/sound/**/nl/*.ogg",),
            95.8,
            _FILLETS,
        ),
        Source(
            "tuxpaint-desc",
            "tuxpaint-stamps-default",
            "GPL-2.0-or-later",
            ("be", "bg", "ca", "da", "el", "en", "es", "fr", "lt", "ml", "nl", "pt_BR", "ro", "ru"),
            # spoken stamp descriptions; the other .ogg files are sound effects (animal calls, engines)
            ("usr/share/tuxpaint/stamps/**/*_desc*.ogg", "usr/share/tuxpaint/stamps/**/*_desc*.wav"),
            177.9,
            "short spoken descriptions of drawing stamps, many speakers, 44.1 kHz (pt_BR: 8 kHz)",
        ),
        _asterisk("es", "es_MX_f_Allison", 30.1, "one Mexican Spanish speaker"),
        _asterisk("fr", "fr_CA_f_June", 25.1, "one Canadian French speaker"),
        _asterisk("it", "it_IT_m_Carlo", 22.9, "one Italian speaker"),
        _asterisk("ru", "ru_RU_f_IvrvoiceRU", 23.9, "one Russian speaker"),
    )
}
# `debian-speech` (BUILD_POOL) is what builds may train on (`data.unlabeled`, a wake word's fit part),
# calibrate on and check on; HELD_OUT_POOL only calibrates and checks wake words
# (`negative_recordings(..., held_out=True)`)
BUILD_POOL = "debian-speech"
HELD_OUT_POOL = "held-out-speech"
POOLS: dict[str, tuple[str, ...]] = {
    BUILD_POOL: tuple(n for n, s in SOURCES.items() if not s.held_out),
    HELD_OUT_POOL: tuple(n for n, s in SOURCES.items() if s.held_out),
    **{name: (name,) for name in SOURCES},
}
# Real speech without keywords, for false accepts per hour: no English (asterisk's prompts say "no",
# "one", "go" and have no transcripts here; tuxpaint's unsuffixed `*_desc.ogg` are English), so a
# command word can occur only as another language's word (Czech and Spanish "no"), which the
# per-keyword counts show.
NEGATIVE_SOURCES = ("fillets-cs", "fillets-nl", "tuxpaint-desc")
# Spanish, French, Italian and Russian prompts ("no", "non", "si" are words there): for wake words only
HELD_OUT_SOURCES = POOLS[HELD_OUT_POOL]
NEGATIVE_EXCLUDE = ("*_desc.ogg", "*_desc.wav")


def builtin_name(spec: str | Path | None) -> str | None:
    """The pool that `data.unlabeled` names (`builtin:NAME`), or None for a folder (or nothing)."""
    if isinstance(spec, str) and spec.startswith(PREFIX):
        return spec[len(PREFIX) :]
    return None


def pool_root() -> Path:
    """Where the packages are unpacked: `$EDGEKD_REAL_POOL`, else the project's own git-ignored cache."""
    override = os.environ.get("EDGEKD_REAL_POOL")
    return Path(override).expanduser() if override else ROOT / ".cache" / "real-speech"


def pool_sources(name: str) -> list[Source]:
    """The sources a pool name stands for; an unknown name lists the known ones."""
    if name not in POOLS:
        raise DataError(f"unknown built-in speech pool {name!r}; known: {', '.join(POOLS)}")
    return [SOURCES[s] for s in POOLS[name]]


def pool_licences(name: str) -> dict[str, str]:
    """Licence of each source in the pool, for a build's provenance record."""
    return {s.name: s.licence for s in pool_sources(name)}


def is_check_file(path: Path, root: Path) -> bool:
    """Whether a pool file belongs to the check part: a stable hash of its path below the pool root, so
    the split is the same on every machine and a build's checks never see audio it trained on."""
    return zlib.crc32(path.relative_to(root).as_posix().encode()) % CHECK_SHARE == 0


def in_part(path: Path, root: Path, part: Part, held_out: bool = False) -> bool:
    """Whether a pool file belongs to `part` (`fit` and `calibration` split `train`, by another hash; a
    held-out source's files are `check` or `calibration`, by a third)."""
    if part == "all":
        return True
    if held_out:
        check = zlib.crc32(f"held-out:{path.relative_to(root).as_posix()}".encode()) % HELD_OUT_SHARE == 1
        return part == ("check" if check else "calibration")
    if is_check_file(path, root):
        return part == "check"
    if part in ("check", "train"):
        return part == "train"
    calibration = (
        zlib.crc32(f"calibration:{path.relative_to(root).as_posix()}".encode()) % CALIBRATION_SHARE == 0
    )
    return calibration == (part == "calibration")


def resolve_sources(name: str, part: Part = "all") -> dict[str, list[Path]]:
    """Each source's speech files, in registry order; a pool not (fully) unpacked fails naming its packages.

    Every missing package is named at once, so one run of the setup script is enough. `part` keeps the
    files a build may train on (`train`, for `data.unlabeled`) or the ones its checks measure on (`check`,
    for `windows`): INT8-vs-float agreement on windows the QAT saw would flatter the model.
    """
    root = pool_root()
    sources = pool_sources(name)
    missing = [s.package for s in sources if not (root / s.package / MARKER).is_file()]
    if missing:
        raise DataError(
            f"built-in speech pool {name!r} is not installed: {', '.join(missing)} not unpacked in {root}. "
            f"Run {SETUP} (it downloads the Debian packages with apt-get download and unpacks them there, "
            "installing nothing; it needs current apt lists), or point EDGEKD_REAL_POOL at a folder "
            "that holds them"
        )
    trained = [s.name for s in sources if s.held_out and part in ("train", "fit")]
    if trained:
        raise DataError(
            f"built-in speech {', '.join(trained)} is held out: no build trains on it, it has only "
            "calibration and check parts; train on builtin:debian-speech"
        )
    found = {s.name: [p for p in s.files(root) if in_part(p, root, part, s.held_out)] for s in sources}
    empty = [SOURCES[n].package for n, files in found.items() if not files]
    if empty:
        raise DataError(
            f"built-in speech pool {name!r}: no speech files in {', '.join(empty)} under {root}; the "
            f"unpacked package does not match edgekd's registry: delete the folder and re-run {SETUP}"
        )
    return found


def resolve_pool(name: str) -> list[Path]:
    """Every speech file of the pool: each source's files sorted, sources in registry order."""
    return [p for files in resolve_sources(name).values() for p in files]


def pool_fingerprint(name: str) -> dict[str, str]:
    """A pool's identity for stage keys: its files relative to the pool root, with sizes and mtimes
    (dpkg keeps the package's own mtimes, so the key is the same on every machine and after a move)."""
    from edgekd.artifacts import stable_hash

    root = pool_root()
    listing = [
        (str(p.relative_to(root)), p.stat().st_size, int(p.stat().st_mtime)) for p in resolve_pool(name)
    ]
    return {"builtin": name, "files": stable_hash(listing)}


def windows(name: str, n: int, seed: int, part: Part = "check", samples: int = SAMPLE_RATE) -> np.ndarray:
    """`n` int16 windows of real speech, `samples` long (one second by default), from one part of the pool
    (by default the check part, never trained on by `data.unlabeled`), an even seeded share per source.

    Windows whose RMS is below SPEECH_FLOOR_DBFS are skipped, so nearly every window holds speech:
    an agreement check or BN statistics measured on pauses would say little about speech.
    """
    from edgekd.data.unlabeled import load_unlabeled  # the loader builds on this registry

    if n < 1:
        raise ValueError(f"n={n}: ask for at least one window")
    pool = load_unlabeled(
        f"{PREFIX}{name}", samples, n, seed, progress=False, min_dbfs=SPEECH_FLOOR_DBFS, part=part
    )
    if len(pool.clips) < n:
        raise DataError(
            f"built-in speech pool {name!r} has only {len(pool.clips)} windows of speech, not {n}"
        )
    return pool.clips


@dataclass
class Recording:
    """One source's files of a pool part, read in a seeded order and joined into one long recording."""

    source: str
    files: list[Path]
    audio: np.ndarray  # float32, 16 kHz

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def negative_recordings(part: Part, minutes: float, seed: int, held_out: bool = False) -> list[Recording]:
    """Long recordings of real speech without keywords (`NEGATIVE_SOURCES`, then `HELD_OUT_SOURCES` when
    `held_out`: calibration and check parts only), one per source, from the pool's `train` part
    (calibration: never the reported audio) or `check` part (the reported figures).

    Each source gives an equal share of `minutes` (0: all it has), its files in a seeded order, so a
    capped share samples the whole source; unreadable or empty files are skipped.
    """
    names = NEGATIVE_SOURCES + (HELD_OUT_SOURCES if held_out else ())
    return [negative_recording(name, part, minutes / len(names), seed) for name in names]


def negative_files(name: str, part: Part) -> list[Path]:
    """The files of one source's part that `negative_recording` reads: its speech minus English."""
    return [
        p for p in resolve_sources(name, part)[name] if not any(fnmatch(p.name, x) for x in NEGATIVE_EXCLUDE)
    ]


def negative_recording(name: str, part: Part, minutes: float, seed: int) -> Recording:
    """One source of `negative_recordings`: up to `minutes` of it (0: all)."""
    share = round(minutes * 60 * SAMPLE_RATE) if minutes else None
    base = pool_root() / SOURCES[name].package
    files = negative_files(name, part)
    order = np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(len(files))
    parts, used, have = [], [], 0
    for i in order:
        try:
            x = read_pool_file(files[i])
        except AudioFileError:
            continue
        parts.append(x if share is None else x[: share - have])
        used.append(files[i].relative_to(base))
        have += len(parts[-1])
        if share is not None and have >= share:
            break
    if not parts:
        raise DataError(f"built-in speech pool {name!r}: no readable audio in its {part} part under {base}")
    return Recording(name, used, np.concatenate(parts).astype(np.float32))


# ------------------------------------------------------------------------- decoded twins of long sources


def decoded_twin(path: Path) -> Path:
    """Where `decode_pool` keeps `path` decoded: below `DECODED`, outside every package folder (no source
    glob sees it), named by the file's size and mtime, so a re-unpacked package never reads a stale twin."""
    root = pool_root()
    st = path.stat()
    return root / DECODED / f"{path.relative_to(root).as_posix()}.{st.st_size}-{int(st.st_mtime)}.npy"


def read_pool_file(path: Path) -> np.ndarray:
    """A pool file as `read_wav(..., allow_clipped=True, allow_silent=True)` returns it: from its decoded
    twin when setup wrote one (the same float32 samples), else decoded here. Decoding and resampling the
    six hours of .ogg that every build's stream stage reads cost it ~70 CPU seconds of its ~3 minutes."""
    if path.is_file() and (twin := decoded_twin(path)).is_file():
        try:
            return np.load(twin)
        except (OSError, ValueError):  # a damaged twin is only a cache: the file itself decides
            pass
    return read_wav(path, allow_clipped=True, allow_silent=True)  # a file gone since listed: unreadable


def decode_pool(progress: bool = True) -> int:
    """Write the decoded twin of every file `negative_recording` may read (all parts of the negative and
    held-out sources), atomically, skipping twins already there: run by scripts/setup.sh once the pool
    is unpacked. Returns how many it wrote; a pool not unpacked is skipped whole (builds say so)."""
    from tqdm import tqdm

    from edgekd.artifacts import atomic_path

    root = pool_root()
    names = [n for n in NEGATIVE_SOURCES + HELD_OUT_SOURCES if (root / SOURCES[n].package / MARKER).is_file()]
    files = [p for n in names for p in negative_files(n, "all")]
    written = 0
    for path in tqdm(files, desc="decoding the speech pool", unit="file", disable=not progress):
        twin = decoded_twin(path)
        if twin.is_file():
            continue
        try:
            x = read_wav(path, allow_clipped=True, allow_silent=True)
        except AudioFileError:
            continue  # read again (and skipped) where a build meets it
        with atomic_path(twin) as tmp, open(tmp, "wb") as f:
            np.save(f, x)
        written += 1
    return written


if __name__ == "__main__":
    print(f"edgekd: {decode_pool()} speech-pool files decoded to {pool_root() / DECODED}")
