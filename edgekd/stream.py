"""`edgekd stream BUILD AUDIO...`: a finished build run over long recordings exactly as the device runs it.

A device never sees neat one-second clips: it hears an endless stream and fires or stays quiet. This
module runs the firmware's chain (`edgekd.detect`, bit-identical to `firmware_stub`) over each file:

1. the micro frontend, run continuously over the whole file (noise estimate and gain control adapt as
   on the device; the state is reset only at the start of a file), as uint16 features;
2. quantized to the model's int8 input (`detect.quantize_raw_features`);
3. the feature ring, read every `stride_frames` once it holds one model input (`detect.window_schedule`);
4. the INT8 model on TFLite Micro, int8 in and int8 logits out, no float step in between;
5. the posterior table, the sliding window, the threshold and the refractory period
   (`detect.smooth_stream`) with the build's `model_settings.h` values, or the ones given.

On audio that holds none of the keywords (`--negatives`), every detection is a false accept: the report
gives false accepts per hour per keyword and in total, with the hours processed.

The model runs on `verify.int8_engine`, a batched implementation of TFLite Micro's integer kernels that
is bit-identical to it (proven in tests/test_int8_engine.py, layer by layer and on real speech) and ~20x
faster; a model with an op the engine does not reproduce runs on TFLite Micro itself (one window at a time,
~7 ms; windows hold no state, so on long streams half of them run in a worker process). The firmware
package's settings are checked up front so a long run does not fail at its end.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edgekd.audio.frontend import MICRO_FEATURE_SCALE, make_frontend
from edgekd.audio.io import SAMPLE_RATE, AudioFileError, read_wav
from edgekd.build_dir import BuildDir
from edgekd.data.real_pool import NEGATIVE_SOURCES, negative_recording, negative_recordings
from edgekd.detect import (
    FirmwareSettings,
    detections,
    probabilities_u8,
    quantize_raw_features,
    settings_from_build,
    window_schedule,
)
from edgekd.errors import EdgekdError
from edgekd.export.firmware import SETTINGS_HEADER
from edgekd.stats import MEDIAN, within_fa_budget
from edgekd.verify import runtime_worker
from edgekd.verify.runners import TFLMRunner

BUILTIN = "builtin"  # --negatives / --background: the pool's check part (real speech, no English)
WORKER_MIN_WINDOWS = 2000  # TFLite Micro: from ~3 min of audio, half the inferences in a second process
BATCH = 1024  # windows per progress step (~0.4 s on the engine)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
STEP_S = 0.010  # the micro frontend's frame step
WINDOW_S = 0.030  # and its analysis window


@dataclass(frozen=True)
class Detection:
    file: str
    time_s: float  # end of the audio the firing inference had heard
    label: str
    mean_probability: float  # the window's mean probability of `label`, 0..1


@dataclass
class FileResult:
    """One recording through the device chain: the model's raw outputs, kept so that other operating
    points (threshold, window) can be decided again without running the model (`decide`)."""

    file: str
    seconds: float
    due: list[int]  # frame counts after which each inference ran
    logits: np.ndarray  # int8 [inferences, classes]
    detections: list[Detection] = field(default_factory=list)

    @property
    def inferences(self) -> int:
        return len(self.due)

    def at(self, point: FirmwareSettings) -> FileResult:
        """This recording's detections decided again at another operating point (`decide`)."""
        return replace(self, detections=decide(point, self.file, self.due, self.logits))

    def record(self) -> dict[str, Any]:
        """JSON-ready, without the logits."""
        return {
            "file": self.file,
            "seconds": self.seconds,
            "inferences": self.inferences,
            "detections": [d.__dict__ for d in self.detections],
        }


def audio_files(paths: list[Path]) -> list[Path]:
    """Each path as given if it is a file, every audio file below it if it is a folder (sorted)."""
    found: list[Path] = []
    for p in paths:
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            inside = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not inside:
                raise EdgekdError(f"{p}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
            found += inside
        else:
            raise EdgekdError(f"{p}: no such file or folder")
    return found


def load_settings(build: Path, threshold: float | None = None, window: int | None = None) -> FirmwareSettings:
    """The build's firmware settings; the build must have a firmware package and a micro frontend."""
    b = BuildDir(build)
    settings = settings_from_build(b.path, threshold=threshold, window=window)
    if not (b.path / SETTINGS_HEADER).is_file():
        raise EdgekdError(
            f"{b.path}: no {SETTINGS_HEADER}, so no firmware package to stream with; builds for targets "
            "that run TFLite Micro (verify.runtimes with tflm, e.g. --target esp32s3) write one"
        )
    if settings.frontend.get("name") != "micro":
        raise EdgekdError(
            f"{b.path}: frontend {settings.frontend.get('name')!r}; streaming runs the device's micro "
            "frontend (an MCU target such as esp32s3)"
        )
    if settings.output_dtype != "int8":
        raise EdgekdError(f"{b.path}: model output is {settings.output_dtype}; stream reads int8 logits")
    return settings


def model_runner(tflite: Path, threads: int = 2) -> Any:
    """The INT8 model as the device runs it: the batched engine bit-identical to TFLite Micro where it
    reproduces every op of the model, else TFLite Micro itself. Both have `predict_quantized`. The engine
    runs on `threads`: one where another busy process shares a two-core machine (its OpenMP threads then
    wait on each other: the stream stage took 109 s with two beside its reader process, 74 with one)."""
    from edgekd.verify.int8_engine import Int8Engine, UnsupportedModelError

    try:
        return Int8Engine(tflite, threads=threads)
    except UnsupportedModelError:
        return TFLMRunner(tflite)


def stream_audio(
    settings: FirmwareSettings, runner: Any, audio: np.ndarray, name: str, progress: bool
) -> FileResult:
    """One recording (float32 16 kHz) through the device chain; `runner` is `model_runner`'s."""
    q = stream_features(settings, audio)
    return stream_inputs(settings, runner, q, len(audio) / SAMPLE_RATE, name, progress)


def stream_features(settings: FirmwareSettings, audio: np.ndarray) -> np.ndarray:
    """The model's int8 inputs, frame by frame [T, 40], from one continuous run of the micro frontend over
    a recording (float32 16 kHz): steps 1-2 of the chain, apart so that a process can run them while
    another runs the model on the recording before."""
    features = make_frontend("micro")(audio)  # one continuous run: reset only here, at the start
    raw = np.round(features / np.float32(MICRO_FEATURE_SCALE)).astype(np.uint16)  # exact: u * 5 / 128
    return quantize_raw_features(raw, settings.input_scale, settings.input_zero_point)


def stream_inputs(
    settings: FirmwareSettings, runner: Any, q: np.ndarray, seconds: float, name: str, progress: bool
) -> FileResult:
    """Steps 3-5 of the chain over `stream_features`' frames of a `seconds` long recording."""
    due = window_schedule(len(q), settings.frames, settings.stride_frames)

    def windows(ends: list[int]) -> np.ndarray:
        return np.stack([q[t - settings.frames : t] for t in ends])

    # long streams on TFLite Micro: the second half of the windows goes to a worker process
    split = isinstance(runner, TFLMRunner) and len(due) >= WORKER_MIN_WINDOWS
    half = len(due) // 2 if split else len(due)
    logits = np.empty((len(due), len(settings.labels)), np.int8)
    worker = (
        runtime_worker.running(runner.path.parent, windows(due[half:]), ["tflm_int8"], progress=False)
        if half < len(due)
        else contextlib.nullcontext(dict)
    )
    with worker as elsewhere:
        for i in tqdm(range(0, half, BATCH), desc=name, unit="batch", disable=not progress, leave=False):
            batch = windows(due[i : min(i + BATCH, half)])
            logits[i : i + len(batch)] = runner.predict_quantized(batch)
        if half < len(due):
            logits[half:] = elsewhere()["tflm_int8"]
    return FileResult(name, seconds, due, logits, decide(settings, name, due, logits))


def decide(settings: FirmwareSettings, name: str, due: list[int], logits: np.ndarray) -> list[Detection]:
    """The firmware's decision (posterior table, window, threshold, refractory) over raw logits:
    `detect.detections`, equal to stepping `smooth_stream` through every inference."""
    probs = probabilities_u8(logits, settings.exp_table())
    fired = detections(probs, settings.window, settings.cutoff, settings.detectable, settings.refractory)
    return [
        # frame t - 1 is the newest the inference saw
        Detection(name, round((due[i] - 1) * STEP_S + WINDOW_S, 3), settings.labels[d.label], d.average / 255)
        for i, d in fired
    ]


def recordings(spec: str | Path) -> list[str]:
    """The recordings `spec` names, unread: `builtin` is the built-in pool's check part (real speech
    without English, one recording per source, `builtin:SOURCE`; never trained or calibrated on),
    anything else a file or a folder of audio files (a missing one fails here)."""
    if str(spec) == BUILTIN:
        return [f"{BUILTIN}:{name}" for name in NEGATIVE_SOURCES]
    return [str(f) for f in audio_files([Path(spec)])]


def read_recording(name: str, seed: int = 0) -> np.ndarray:
    """One of `recordings`' names as float32 16 kHz audio (a file of that name, where one exists, is a file:
    a folder may hold `builtin:…` file names too)."""
    if name.startswith(f"{BUILTIN}:") and not Path(name).is_file():
        return negative_recording(name.split(":", 1)[1], "check", 0, seed).audio
    return read_wav(Path(name), allow_clipped=True, allow_silent=True)


def read_audio(spec: str | Path, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float32 16 kHz audio) of each recording `spec` names (`recordings`), read one at a time."""
    for name in recordings(spec):
        yield name, read_recording(name, seed)


def recording_inputs(settings: FirmwareSettings, name: str) -> tuple[float, np.ndarray]:
    """A recording's length in seconds and its int8 frames (`stream_features`): in a reader process."""
    audio = read_recording(name)
    return len(audio) / SAMPLE_RATE, stream_features(settings, audio)


@contextlib.contextmanager
def reader_pool() -> Iterator[ProcessPoolExecutor]:
    """One worker process that reads recordings and runs the frontend over them, while this process runs
    the model on the one before. Reading and the frontend are one core's work (a Python call per 10 ms of
    audio: ~5 s per hour, reading ~2 s) that otherwise runs ahead of the model; beside a one-thread engine
    (~9 s per hour) they take the other core. On an error the queued recordings are dropped. A forkserver
    child has the server's environment, started maybe long before: it is given this process's
    (`$EDGEKD_REAL_POOL` among it)."""
    ctx = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_use_environment, initargs=(dict(os.environ),))
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _use_environment(environment: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(environment)


def run_stream(
    build: Path,
    specs: Sequence[str | Path],
    threshold: float | None = None,
    window: int | None = None,
    progress: bool = True,
) -> list[FileResult]:
    """Every recording of `specs` (files, folders or `builtin`, see `recordings`) through the build's
    device chain. Paths are checked before any audio is streamed. Several recordings are read and put
    through the frontend in a reader process, each while the model (one thread) runs on the one before
    (3 h of the pool in three recordings: 63 s -> 45 s); one recording runs here, the model on two threads.
    A recording the reader cannot read fails the run with its own `AudioFileError`."""
    settings = load_settings(build, threshold, window)
    names = [name for spec in specs for name in recordings(spec)]
    tflite = BuildDir(build).tflite
    if len(names) == 1:
        runner = model_runner(tflite)
        return [stream_audio(settings, runner, read_recording(names[0]), names[0], progress)]
    with reader_pool() as pool:
        queued = [pool.submit(recording_inputs, settings, name) for name in names]
        runner = model_runner(tflite, threads=1)
        results = []
        for name, future in zip(names, queued, strict=True):
            seconds, q = future.result()
            results.append(stream_inputs(settings, runner, q, seconds, name, progress))
        return results


def false_accepts(results: list[FileResult], labels: tuple[str, ...]) -> dict[str, Any]:
    """On audio without keywords every detection is false: per keyword and in total, per hour."""
    hours = sum(r.seconds for r in results) / 3600
    counts = Counter(d.label for r in results for d in r.detections)
    if hours <= 0:
        raise EdgekdError("the negative audio is empty; pass recordings at least a second long")
    per_keyword = {k: {"false_accepts": counts[k], "fa_per_hour": counts[k] / hours} for k in labels}
    total = sum(counts.values())
    return {
        "files": len(results),
        "hours": hours,
        "inferences": sum(r.inferences for r in results),
        "per_keyword": per_keyword,
        "false_accepts": total,
        "fa_per_hour": total / hours,
    }


# ------------------------------------------------------------------------------------ positives


@dataclass(frozen=True)
class Inserted:
    """One labelled clip placed into the running background: where it starts and ends in the stream."""

    label: str
    start_s: float
    end_s: float


def active_rms(x: np.ndarray) -> float:
    """RMS of the louder half of 10 ms frames: a clip's speech level, not diluted by its pauses."""
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    energy = np.sort((frames.astype(np.float64) ** 2).mean(axis=1))
    return float(np.sqrt(energy[len(energy) // 2 :].mean())) if len(energy) else 0.0


BACKGROUND_DBFS = -45.0  # running background level under inserted keywords (median active RMS per second)


def typical_rms(x: np.ndarray) -> float:
    """The median of the active RMS of each second (the whole signal when shorter): a recording's
    level, not swayed by its loudest or quietest moments."""
    seconds = [x[i : i + SAMPLE_RATE] for i in range(0, max(1, len(x) - SAMPLE_RATE + 1), SAMPLE_RATE)]
    return float(np.median([active_rms(s) for s in seconds]))


def insert_clips(
    background: np.ndarray,
    clips: list[tuple[str, np.ndarray]],
    seed: int,
    snr_db: tuple[float, float],
    gap_s: tuple[float, float] = (1.5, 3.0),
) -> tuple[np.ndarray, list[Inserted]]:
    """The clips one after another in the background (repeated as needed), each after a random gap and
    at a random speech-to-background ratio in `snr_db`; returns the stream and where each clip is.

    The background is first brought to `BACKGROUND_DBFS` (its typical second), so that keywords 30 dB
    above it are still unclipped: recorded dialogue runs at about -15 dBFS, and a word 20 dB above that
    would be clipped flat, which no microphone front end does to a person speaking.
    """
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(*gap_s, len(clips))
    total = int((gaps.sum() + sum(len(c) for _, c in clips) / SAMPLE_RATE + gap_s[1]) * SAMPLE_RATE)
    level = typical_rms(background)
    if not len(background) or level == 0:
        raise EdgekdError("the background audio is silent; pass recordings with some sound in them")
    stream = np.resize(background.astype(np.float32), total) * np.float32(
        10 ** (BACKGROUND_DBFS / 20) / level
    )
    placed, at = [], 0
    for (label, clip), gap in zip(clips, gaps, strict=True):
        at += int(gap * SAMPLE_RATE)
        segment = stream[at : at + len(clip)]
        snr = rng.uniform(*snr_db)
        gain = active_rms(segment) * 10 ** (snr / 20) / max(active_rms(clip), 1e-6)
        stream[at : at + len(clip)] = segment + gain * clip
        placed.append(Inserted(label, at / SAMPLE_RATE, (at + len(clip)) / SAMPLE_RATE))
        at += len(clip)
    return np.clip(stream, -1.0, 1.0), placed


def score_positives(
    inserted: list[Inserted], detections: list[Detection], keywords: tuple[str, ...], max_delay_s: float = 1.5
) -> dict[str, Any]:
    """Each inserted clip is heard if the first detection between its start and `max_delay_s` after its
    end names its word; a detection there naming another word is a wrong keyword; detections matched
    to no clip are false accepts. Delay: detection time minus the clip's end."""
    pending = sorted(detections, key=lambda d: d.time_s)
    per = {k: {"clips": 0, "hits": 0, "wrong": 0, "delays_s": []} for k in keywords}
    used = set()
    for clip in inserted:
        row = per[clip.label]
        row["clips"] += 1
        match = next(
            (
                i
                for i, d in enumerate(pending)
                if i not in used and clip.start_s <= d.time_s <= clip.end_s + max_delay_s
            ),
            None,
        )
        if match is None:
            continue
        used.add(match)
        if pending[match].label == clip.label:
            row["hits"] += 1
            row["delays_s"].append(pending[match].time_s - clip.end_s)
        else:
            row["wrong"] += 1
    out = {}
    for k, r in per.items():
        delays = r.pop("delays_s")
        out[k] = {
            **r,
            "recall": r["hits"] / r["clips"] if r["clips"] else None,
            "median_delay_s": float(np.median(delays)) if delays else None,
        }
    clips = sum(r["clips"] for r in out.values())
    hits = sum(r["hits"] for r in out.values())
    return {
        "clips": clips,
        "recall": hits / clips if clips else None,
        "wrong_keyword": sum(r["wrong"] for r in out.values()),
        "false_accepts": len(pending) - len(used),
        "per_keyword": out,
    }


def read_positives(root: Path, keywords: tuple[str, ...]) -> tuple[list[tuple[str, np.ndarray]], int]:
    """Clips of a Speech Commands folder whose label is a keyword (other folders are not positives),
    sorted by word, then file name; and how many unusable files were skipped."""
    if not root.is_dir():
        raise EdgekdError(
            f"{root}: not a folder; pass --positives a Speech Commands folder (a folder per word)"
        )
    clips, skipped = [], 0
    for word in keywords:
        for f in sorted((root / word).glob("*.wav")) if (root / word).is_dir() else []:
            try:
                clips.append((word, read_wav(f)))
            except AudioFileError:
                skipped += 1
    if not clips:
        raise EdgekdError(f"{root}: no .wav files in a folder named after a keyword ({', '.join(keywords)})")
    return clips, skipped


def background_audio(specs: Sequence[str | Path], seconds: float, seed: int) -> np.ndarray:
    """Recordings to place positives into (read until `seconds` are there): `builtin` mixes the pool's
    check part (every source in turn); quiet noise without any."""
    if not specs:
        noise = np.random.default_rng(seed).normal(0, 10 ** (-50 / 20), int(seconds * SAMPLE_RATE))
        return noise.astype(np.float32)
    if [str(s) for s in specs] == [BUILTIN]:
        return mixed_background([r.audio for r in negative_recordings("check", 0, seed)], seconds)
    parts, have = [], 0
    for f in audio_files([Path(s) for s in specs]):
        parts.append(read_wav(f, allow_clipped=True, allow_silent=True))
        have += len(parts[-1])
        if have >= seconds * SAMPLE_RATE:
            break
    return np.concatenate(parts)


def background_share(seconds: float, sources: int) -> int:
    """Samples `mixed_background` takes from each of `sources` recordings for `seconds` of audio."""
    return int(seconds * SAMPLE_RATE / sources) + 1


def mixed_background(recordings: list[np.ndarray], seconds: float) -> np.ndarray:
    """An equal slice of each recording (one per source), one after another: keyword clips inserted
    into it land in each language and room."""
    share = background_share(seconds, len(recordings))
    return np.concatenate([np.resize(r, share) for r in recordings])


@dataclass
class PositiveRun:
    """Labelled clips in running audio, through the device chain: the stream and where each clip is."""

    result: FileResult
    inserted: list[Inserted]
    keywords: tuple[str, ...]
    about: dict[str, Any]  # path, background, SNR range, seed, skipped files

    def score(self) -> dict[str, Any]:
        """Recall and the rest at the operating point the run was decided at (`at` for another)."""
        return {
            **self.about,
            "stream_seconds": self.result.seconds,
            **score_positives(self.inserted, self.result.detections, self.keywords),
        }

    def at(self, point: FirmwareSettings) -> PositiveRun:
        """The same run decided again at another operating point: the model does not run again."""
        return replace(self, result=self.result.at(point))


def run_positives(
    build: Path,
    positives: Path,
    background: Sequence[str | Path],
    snr_db: tuple[float, float],
    seed: int = 0,
    threshold: float | None = None,
    window: int | None = None,
    progress: bool = True,
) -> PositiveRun:
    """Recall in running audio: every keyword clip of `positives` inserted into `background` (quiet
    noise when empty), the stream run through the device chain, detections matched to clips."""
    settings = load_settings(build, threshold, window)
    clips, skipped = read_positives(positives, settings.keywords)
    about = {
        "path": str(positives),
        "background": [str(b) for b in background] or "white noise at -50 dBFS",
        "skipped_files": skipped,
    }
    noise = background_audio(background, positives_seconds(clips), seed)
    runner = model_runner(BuildDir(build).tflite)
    return stream_positives(settings, runner, clips, noise, snr_db, seed, about, progress)


def positives_seconds(clips: list[tuple[str, np.ndarray]]) -> float:
    """Running audio that `insert_clips` needs for these clips (their length and the gaps between)."""
    return sum(len(c) for _, c in clips) / SAMPLE_RATE + 3.5 * len(clips)


def stream_positives(
    settings: FirmwareSettings,
    runner: Any,
    clips: list[tuple[str, np.ndarray]],
    background: np.ndarray,
    snr_db: tuple[float, float],
    seed: int,
    about: dict[str, Any],
    progress: bool,
) -> PositiveRun:
    """Labelled clips inserted into `background` and the stream run through the device chain."""
    audio, inserted = insert_clips(background, clips, seed, snr_db)
    name = f"{about.get('path', 'keywords')} in running audio"
    result = stream_audio(settings, runner, audio, name, progress)
    return PositiveRun(result, inserted, settings.keywords, {**about, "snr_db": list(snr_db), "seed": seed})


# ------------------------------------------------------------------------------------ operating points

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)
WINDOWS = (1, 2, 3, 5)


def sweep(
    settings: FirmwareSettings,
    negatives: list[FileResult],
    positives: PositiveRun | None,
    thresholds: tuple[float, ...] = THRESHOLDS,
    windows: tuple[int, ...] = WINDOWS,
) -> list[dict[str, Any]]:
    """The DET curve: FA/h on the negatives and recall on the positives for each (window, threshold),
    decided again from the logits each stream already holds (the model runs once)."""
    keywords = settings.keywords
    points = []
    for window in windows:
        for threshold in thresholds:
            point = replace(settings, threshold=threshold, window=window)
            row: dict[str, Any] = {"window": window, "threshold": threshold}
            if negatives:
                fa = false_accepts([r.at(point) for r in negatives], keywords)
                row.update({k: fa[k] for k in ("false_accepts", "hours", "fa_per_hour")})
            if positives is not None:
                row["recall"] = positives.at(point).score()["recall"]
            points.append(row)
    return points


def within(point: dict[str, Any], max_fa_per_hour: float, confidence: float) -> bool:
    """Whether a sweep point fits the budget: its FA/h bound at `confidence`, not its raw rate, does
    (`stats.within_fa_budget`: one false accept in ~2 h is no evidence of 0.5/h)."""
    return within_fa_budget(point["false_accepts"], point["hours"], max_fa_per_hour, confidence)


def best_point(
    points: list[dict[str, Any]], max_fa_per_hour: float, confidence: float = MEDIAN
) -> dict[str, Any] | None:
    """The point with the best recall within `max_fa_per_hour` (`within`; ties: fewer false accepts,
    then the higher threshold); None when no point is."""
    ok = [p for p in points if within(p, max_fa_per_hour, confidence)]
    if not ok:
        return None
    return max(ok, key=lambda p: (p.get("recall") or 0.0, -p["fa_per_hour"], p["threshold"], -p["window"]))


def calibrate(
    settings: FirmwareSettings,
    negatives: list[FileResult],
    positives: PositiveRun | None,
    max_fa_per_hour: float,
    confidence: float = MEDIAN,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The operating point for a false-accept budget: the DET point with the best recall within
    `max_fa_per_hour` on `negatives` at `confidence`; when none is, the one with the fewest false accepts
    (then the best recall). Returns it (with `met`: whether it is within the budget here) and the sweep.

    Pass calibration audio only: a point chosen on the audio it is then reported on flatters it.
    """
    points = sweep(settings, negatives, positives)
    chosen = best_point(points, max_fa_per_hour, confidence)
    if chosen is None:
        chosen = min(points, key=lambda p: (p["fa_per_hour"], -(p.get("recall") or 0.0), -p["threshold"]))
    return {**chosen, "met": within(chosen, max_fa_per_hour, confidence)}, points
