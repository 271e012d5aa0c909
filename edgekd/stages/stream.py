"""Stream stage: the operating point calibrated for a false-accept budget, and what it does on other audio.

A clip accuracy says nothing about how often a device fires on a room full of talk. This stage runs the
exported model through the firmware's chain (`edgekd.stream`: continuous micro frontend, feature ring,
TFLite Micro, posterior smoothing) over long real recordings, twice, on audio that never overlaps:

- **calibration**: real speech without keywords from the built-in pool's *train* part, and the corpus's
  *validation* keyword clips inserted into it. With `firmware.threshold`/`window: auto` the DET sweep
  picks the (threshold, window) with the best recall within `gates.max_fa_per_hour`;
- **report**: the pool's *check* part (what `verify.pool_windows` also measures on, never trained on)
  and the *test* keyword clips (and the real `--holdout` clips when given). FA/h with its exact 95 %
  interval, recall, and the DET curve on this audio are what parity.json and the reports show; the
  FA/h gate fails only when the interval lies above the limit.

Both parts use the same sources (`real_pool.NEGATIVE_SOURCES`: Czech and Dutch acted dialogue and
tuxpaint's spoken descriptions in 12 languages, no English), one continuous recording per source. A
reader process reads each source and runs the frontend over it while this one runs the model on the source
before (`reader_pool`): the figures are those of running both here, one after the other.
"""

from __future__ import annotations

from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import stable_hash, write_json
from edgekd.config import BuildConfig
from edgekd.data.corpus import Corpus, keyword_clips
from edgekd.data.real_pool import NEGATIVE_SOURCES, Part, negative_recording, pool_fingerprint
from edgekd.detect import FirmwareSettings, operating_point, settings_from_manifest
from edgekd.export.manifest import device_facts
from edgekd.pipeline import StageOutput, Stages, folder_fingerprint
from edgekd.stats import poisson_rate_interval
from edgekd.stream import (
    FileResult,
    PositiveRun,
    background_share,
    calibrate,
    false_accepts,
    mixed_background,
    model_runner,
    positives_seconds,
    read_positives,
    reader_pool,
    stream_features,
    stream_inputs,
    stream_positives,
    sweep,
)
from edgekd.verify.budget import measure_budget
from edgekd.verify.parity import stream_gates

SECTION = "stream.json"


# what `auto` calibrates for when gates.max_fa_per_hour is None (the gate report-only): its default
def negatives_record(streams: Streams, part: str, keywords: tuple[str, ...]) -> dict[str, Any]:
    """FA/h over all sources with its exact 95 % interval, and per source."""
    fa = false_accepts(streams.negatives, keywords)
    low, high = poisson_rate_interval(fa["false_accepts"], fa["hours"])
    return {
        "audio": f"builtin:debian-speech {part} part: {', '.join(streams.files)}, no English",
        **fa,
        "fa_per_hour_interval": [low, high],
        "per_source": {
            source: {
                **false_accepts([res], keywords),
                "files": len(files),  # joined into one recording
                "files_sha256": stable_hash(sorted(map(str, files))),
            }
            for (source, files), res in zip(streams.files.items(), streams.negatives, strict=True)
        },
    }


@dataclass
class Streams:
    """One pool part through the device chain: per source the files joined into its recording and the
    stream's result, the start of each recording (what keyword clips are inserted into), the keyword run.
    The long recordings themselves are not kept: hours of float32 audio."""

    files: dict[str, list[Path]]
    negatives: list[FileResult]
    starts: list[np.ndarray]
    positives: PositiveRun

    def at(self, point: FirmwareSettings) -> Streams:
        """The same streams decided at another operating point. Calibration runs them at a fixed one
        (`detect.FALLBACK_*`) and then chooses: its record must count at the point it chose."""
        negatives = [r.at(point) for r in self.negatives]
        return replace(self, negatives=negatives, positives=self.positives.at(point))


@dataclass
class SourceInputs:
    """One source of a pool part as the model reads it: the files joined into its recording, its length,
    the int8 frames of one continuous frontend run over it, and its first `keep` samples."""

    source: str
    files: list[Path]
    seconds: float
    q: np.ndarray
    start: np.ndarray


def source_inputs(settings: FirmwareSettings, name: str, part: Part, minutes: float, seed: int,
                  keep: int) -> SourceInputs:  # fmt: skip
    """Read one source's recording and run the frontend over it: in a worker process, beside the model."""
    recording = negative_recording(name, part, minutes, seed)
    q = stream_features(settings, recording.audio)
    return SourceInputs(
        recording.source, recording.files, recording.seconds, q, np.resize(recording.audio, keep)
    )


def submit_part(pool: ProcessPoolExecutor, settings: FirmwareSettings, part: Part, minutes: float, seed: int,
                keep_seconds: float) -> list[Future[SourceInputs]]:  # fmt: skip
    """`source_inputs` of every source of the part, an equal share of `minutes` each (0: all), keeping
    enough of each recording's start for `keep_seconds` of `mixed_background`."""
    share, keep = minutes / len(NEGATIVE_SOURCES), background_share(keep_seconds, len(NEGATIVE_SOURCES))
    return [pool.submit(source_inputs, settings, name, part, share, seed, keep) for name in NEGATIVE_SOURCES]


def run_streams(
    settings: FirmwareSettings,
    runner: Any,
    sources: list[Future[SourceInputs]],
    positives: list[tuple[str, np.ndarray]],
    about: dict[str, Any],
    snr_db: tuple[float, float],
    seed: int,
    progress: bool,
) -> Streams:
    """The model over each source's frames as they arrive, and `positives` inserted into an equal mix of
    the recordings' starts."""
    files, negatives, starts = {}, [], []
    for future in sources:
        inputs = future.result()
        negatives.append(stream_inputs(settings, runner, inputs.q, inputs.seconds, inputs.source, progress))
        files[inputs.source] = inputs.files
        starts.append(inputs.start)
    background = mixed_background(starts, positives_seconds(positives))
    run = stream_positives(settings, runner, positives, background, snr_db, seed, about, progress)
    return Streams(files, negatives, starts, run)


def stage_stream(
    cfg: BuildConfig,
    corpus: StageOutput,
    features: StageOutput,
    export: StageOutput,
    stages: Stages,
    progress: bool,
) -> StageOutput:
    """Calibrate (when the config says auto) and report the streaming operating point: `stream.json`."""
    s = cfg.verify.stream
    snr = (s.snr_db[0], s.snr_db[1])
    limit = cfg.gates.fa_budget

    def produce(d: Path) -> dict[str, Any]:
        budget = measure_budget(cfg, export.dir).as_dict(cfg.budget.arena_headroom)  # for the arena
        facts = device_facts(cfg, features.info, export.dir / "model.tflite", budget)
        fixed = operating_point({"config": {"firmware": cfg.firmware.model_dump(mode="json")}})
        settings = settings_from_manifest(facts, d, fixed["threshold"], fixed["window"])
        runner = model_runner(export.dir / "model.tflite", threads=1)  # the reader process has the other core
        clips = Corpus.load(corpus.dir / "corpus.npz")

        def synthetic(split: str) -> tuple[list[tuple[str, np.ndarray]], dict[str, Any]]:
            chosen = keyword_clips(clips, split, settings.keywords, s.positives, cfg.seed)
            return chosen, {"path": f"corpus {split} split", "about": "synthetic voices never trained on"}

        calibrating = cfg.firmware.threshold == "auto" or cfg.firmware.window == "auto"
        cal_positives, cal_about = synthetic("validation") if calibrating else ([], {})
        positives, about = synthetic("test")
        real, skipped = (
            read_positives(Path(cfg.verify.holdout).expanduser(), settings.keywords)
            if cfg.verify.holdout
            else ([], 0)
        )
        cal_keep, rep_keep = positives_seconds(cal_positives), max(map(positives_seconds, (positives, real)))
        calibration = None
        with reader_pool() as pool:  # both parts queued now: the report's frames are ready when it starts
            cal_sources = (
                submit_part(pool, settings, "train", s.calibration_minutes, cfg.seed, cal_keep)
                if calibrating
                else []
            )
            rep_sources = submit_part(pool, settings, "check", s.report_minutes, cfg.seed, rep_keep)
            if calibrating:
                cal = run_streams(
                    settings, runner, cal_sources, cal_positives, cal_about, snr, cfg.seed, progress
                )
                chosen, points = calibrate(
                    settings, cal.negatives, cal.positives, limit, cfg.gates.fa_calibration_confidence
                )
                settings = replace(
                    settings,
                    threshold=chosen["threshold"] if cfg.firmware.threshold == "auto" else settings.threshold,
                    window=chosen["window"] if cfg.firmware.window == "auto" else settings.window,
                )
                cal = cal.at(settings)
                calibration = {
                    "negatives": negatives_record(cal, "train", settings.keywords),
                    "positives": {k: v for k, v in cal.positives.score().items() if k != "per_keyword"},
                    "chosen": chosen,
                    "points": points,
                }
            rep = run_streams(settings, runner, rep_sources, positives, about, snr, cfg.seed, progress)
        section: dict[str, Any] = {
            "operating_point": {
                "threshold": settings.threshold,
                "window": settings.window,
                "stride_frames": settings.stride_frames,
                "refractory": settings.refractory,
                "chosen_by": chosen_by(calibration, limit),
            },
            "calibration": calibration,
            "negatives": negatives_record(rep, "check", settings.keywords),
            "positives": rep.positives.score(),
        }
        holdout = None
        if cfg.verify.holdout:
            about = {"path": cfg.verify.holdout, "skipped_files": skipped}
            background = mixed_background(rep.starts, positives_seconds(real))
            holdout = stream_positives(settings, runner, real, background, snr, cfg.seed, about, progress)
            section["holdout"] = holdout.score()
        section["det"] = sweep(settings, rep.negatives, holdout or rep.positives)
        section["det_positives"] = "holdout" if holdout else "positives"
        section["gates"] = stream_gates(cfg, section["negatives"], section["positives"]["recall"])
        write_json(d / SECTION, section)
        return {"operating_point": section["operating_point"]}

    key = {
        "negatives": [pool_fingerprint(name) for name in NEGATIVE_SOURCES],
        "corpus": corpus.key,
        "export": export.key,
        "budget": cfg.budget.model_dump(mode="json"),
        "stream": s.model_dump(mode="json"),
        "firmware": cfg.firmware.model_dump(mode="json"),
        "gates": cfg.gates.model_dump(mode="json"),
        "holdout": cfg.verify.holdout and folder_fingerprint(Path(cfg.verify.holdout).expanduser()),
        "seed": cfg.seed,
    }
    return stages.run("stream", key, produce)


def chosen_by(calibration: dict[str, Any] | None, limit: float) -> str:
    """Who set the operating point, in words for the manifest and the reports."""
    if calibration is None:
        return "config (firmware.threshold and firmware.window)"
    cal = calibration["negatives"]
    met = "" if calibration["chosen"]["met"] else "; no point met it there, the fewest false accepts taken"
    return (
        f"calibrated for <= {limit:g} FA/h on {cal['hours']:.2f} h of calibration speech (pool train part) "
        f"and {calibration['positives']['clips']} validation keyword clips{met}"
    )
