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
tuxpaint's spoken descriptions in 12 languages, no English), one continuous recording per source.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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
    stream_audio,
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


def run_streams(
    settings: FirmwareSettings,
    runner: Any,
    part: Part,
    minutes: float,
    positives: list[tuple[str, np.ndarray]],
    about: dict[str, Any],
    snr_db: tuple[float, float],
    seed: int,
    progress: bool,
    keep_seconds: float,
) -> Streams:
    """The pool part's negative recordings, and `positives` inserted into an equal mix of them; the start
    of each recording is kept for `keep_seconds` of such a mix. The next source is decoded in a thread
    while one streams (decoding .ogg is a third of the work); a recording is dropped once streamed."""
    share, keep = minutes / len(NEGATIVE_SOURCES), background_share(keep_seconds, len(NEGATIVE_SOURCES))
    files, negatives, starts = {}, [], []
    with ThreadPoolExecutor(1) as reader:
        pending = [reader.submit(negative_recording, name, part, share, seed) for name in NEGATIVE_SOURCES]
        for future in pending:
            recording = future.result()
            negatives.append(stream_audio(settings, runner, recording.audio, recording.source, progress))
            files[recording.source] = recording.files
            starts.append(np.resize(recording.audio, keep))
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
        runner = model_runner(export.dir / "model.tflite")
        clips = Corpus.load(corpus.dir / "corpus.npz")

        def synthetic(split: str) -> tuple[list[tuple[str, np.ndarray]], dict[str, Any]]:
            chosen = keyword_clips(clips, split, settings.keywords, s.positives, cfg.seed)
            return chosen, {"path": f"corpus {split} split", "about": "synthetic voices never trained on"}

        calibration = None
        if cfg.firmware.threshold == "auto" or cfg.firmware.window == "auto":
            positives, about = synthetic("validation")
            seconds = positives_seconds(positives)
            cal = run_streams(settings, runner, "train", s.calibration_minutes, positives, about, snr,
                              cfg.seed, progress, seconds)  # fmt: skip
            chosen, points = calibrate(
                settings, cal.negatives, cal.positives, limit, cfg.gates.fa_calibration_confidence
            )
            settings = replace(
                settings,
                threshold=chosen["threshold"] if cfg.firmware.threshold == "auto" else settings.threshold,
                window=chosen["window"] if cfg.firmware.window == "auto" else settings.window,
            )
            calibration = {
                "negatives": negatives_record(cal, "train", settings.keywords),
                "positives": {k: v for k, v in cal.positives.score().items() if k != "per_keyword"},
                "chosen": chosen,
                "points": points,
            }
        positives, about = synthetic("test")
        real, skipped = (
            read_positives(Path(cfg.verify.holdout).expanduser(), settings.keywords)
            if cfg.verify.holdout
            else ([], 0)
        )
        seconds = max(positives_seconds(positives), positives_seconds(real))
        rep = run_streams(settings, runner, "check", s.report_minutes, positives, about, snr, cfg.seed,
                          progress, seconds)  # fmt: skip
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
