"""The build as a chain of cached stages.

    corpus -> views -> features -> teacher -> student (float -> QAT) -> export -> verify -> report

Each stage's output lives in `<cache>/<stage>/<key>/`, where `key` hashes exactly what the stage
depends on (its config slice and the keys of its inputs). A stage directory is written under a
temporary name and renamed into place when complete, so an interrupted build resumes from the last
finished stage, and changing a parity setting re-runs only verify and report.

The build directory is assembled in `<out>/.staging` and its files are moved over `<out>` only when
every gate passes; a build that fails a gate leaves the previous good build untouched and puts its
own artifacts in `<out>/rejected/` for inspection.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from edgekd import __version__
from edgekd.artifacts import stable_hash, write_json
from edgekd.config import BuildConfig

DONE = "_done.json"
LOGITS = "logits.npz"  # a stage's per-clip logits (teacher, students, verify, holdout, real agreement)
# the teacher's logits on the calibration stage's windows: the operating point the student is moved to
CALIBRATION_LOGITS = "calibration_logits.npy"


def default_cache_root() -> Path:
    return Path(os.environ.get("EDGEKD_CACHE", Path.home() / ".cache" / "edgekd"))


class PeakRSS:
    """Samples this process' resident memory in a thread: the peak a stage really needed (numpy,
    torch and native runtimes included), which tracemalloc cannot see."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> PeakRSS:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


@dataclass
class StageTiming:
    name: str
    seconds: float
    peak_mb: float
    cached: bool


@dataclass(frozen=True)
class StageOutput:
    """A finished stage: its directory and cache key. Later stages take these, never (dir, key) pairs,
    and read what a stage recorded through `info` rather than parsing its `_done.json` themselves."""

    dir: Path
    key: str

    @cached_property
    def info(self) -> dict[str, Any]:
        """What the stage's `produce` returned (plus its name, key and seconds), read once."""
        return json.loads((self.dir / DONE).read_text())

    @property
    def logits(self) -> Path:
        return self.dir / LOGITS


@dataclass
class Stages:
    """Runs stages with caching and records per-stage wall time and peak resident memory."""

    cache_root: Path
    log: Callable[[str], None] = print
    timings: list[StageTiming] = field(default_factory=list)

    def run(
        self, name: str, key_obj: dict[str, Any], produce: Callable[[Path], dict[str, Any] | None]
    ) -> StageOutput:
        """Return the finished stage; run `produce(tmpdir)` only on a cache miss."""
        # the package version is part of every key: a new edgekd never reuses an older one's stages
        key = stable_hash({"stage": name, "edgekd": __version__, **key_obj})
        final = self.cache_root / name / key
        if (final / DONE).exists():
            self.timings.append(StageTiming(name, 0.0, 0.0, True))
            self.log(f"[{name}] cached ({final})")
            return StageOutput(final, key)
        _sweep_dead_attempts(final)
        tmp = final.with_name(f".{key}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.log(f"[{name}] running")
        t0 = time.perf_counter()
        try:
            with PeakRSS() as mem:
                info = produce(tmp) or {}
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = time.perf_counter() - t0
        write_json(tmp / DONE, {"stage": name, "key": key, "seconds": seconds, **info})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self.timings.append(StageTiming(name, seconds, mem.peak / 2**20, False))
        self.log(f"[{name}] done in {seconds:.1f} s")
        return StageOutput(final, key)


def _sweep_dead_attempts(final: Path) -> None:
    """Delete the temporary directories of this stage (any key) left by processes that no longer run.

    An exception removes its own attempt; a killed process (SIGKILL, power loss) cannot, and a features
    or views attempt holds hundreds of MB. One still running (a parallel build) is left alone.
    """
    for attempt in final.parent.glob(".*.tmp-*"):
        pid = attempt.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(attempt, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def folder_fingerprint(root: Path) -> dict[str, str]:
    """A user folder's identity: its resolved path and every file's name, size and mtime."""
    listing = sorted(
        (str(p.relative_to(root)), p.stat().st_size, int(p.stat().st_mtime))
        for p in root.rglob("*")
        if p.is_file()
    )
    return {"files": stable_hash(listing), "root": str(root.resolve())}


def labelled_features_key(cfg: BuildConfig, views_key: str) -> dict[str, Any]:
    """What the labelled rows of the features stage depend on: a stage that reads only them (the plain
    student) keys on this, so a change of unlabelled audio does not retrain it."""
    return {"views": views_key, "frontend": cfg.frontend.model_dump(mode="json")}


def corpus_fingerprint(cfg: BuildConfig) -> dict[str, Any]:
    """What the corpus depends on; for a user folder, the list of files with sizes and mtimes."""
    base = {
        "labels": cfg.labels,
        "unknown": cfg.unknown_words,
        "silence": cfg.silence,
        "seed": cfg.seed,
        "clip_ms": cfg.frontend.clip_ms,
        "data": cfg.data.model_dump(
            mode="json",
            # the corpus is the same whatever the number of synthesis workers
            exclude={
                "augment": True,
                "path": True,
                "unlabeled": True,
                "unlabeled_max_clips": True,
                "extra": True,  # its files are fingerprinted below
                "extra_weight": True,  # weights views, not the corpus
                "synth": {"workers"},
            },
        ),
    }
    if cfg.data.path:
        base.update(folder_fingerprint(Path(cfg.data.path)))
    elif cfg.data.synth.test_evidence:  # the gates' limits size the synthetic test split
        base["test_clips_per_class"] = cfg.test_clips_per_class
    if cfg.data.extra:
        base["extra"] = folder_fingerprint(Path(cfg.data.extra))
    return base
