"""The build's streaming check: the operating point calibrated on other audio than the figures it reports,
the FA/h gate that reads its interval, and the stage itself on the fixture model over a small fake pool."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import KwsModels, speech_like

from edgekd.audio.frontend import MicroFrontend
from edgekd.audio.io import to_pcm16
from edgekd.config import load_config
from edgekd.data.corpus import Corpus, keyword_clips
from edgekd.data.real_pool import NEGATIVE_SOURCES, SOURCES, is_check_file, pool_root
from edgekd.pipeline import StageOutput, Stages
from edgekd.stages import stream as stage
from edgekd.stats import MEDIAN, poisson_rate_interval, within_fa_budget
from edgekd.verify.parity import stream_gates

MINUTES = ["verify.stream.calibration_minutes=0.6", "verify.stream.report_minutes=0.6"]


def tiny_corpus(classes: list[str]) -> Corpus:
    """Two clips per class in each split; a clip's first sample encodes its split (for the tests)."""
    rng = np.random.default_rng(1)
    clips, labels, splits = [], [], []
    for split in ("train", "validation", "test"):
        for c in range(len(classes)):
            for _ in range(2):
                clips.append(to_pcm16(speech_like(1.0, int(rng.integers(1 << 30)))))
                labels.append(c)
                splits.append(split)
    return Corpus(np.stack(clips), np.array(labels), np.array(splits), np.array(["g"] * len(clips)), classes)


def upstream(stages: Stages, models: KwsModels, corpus: Corpus) -> dict[str, StageOutput]:
    """The stage outputs the streaming stage reads: corpus, features' record and the model."""

    def corpus_out(d: Path) -> None:
        corpus.save(d / "corpus.npz")

    def export_out(d: Path) -> None:
        (d / "model.tflite").write_bytes(models.int8.read_bytes())

    return {
        "corpus": stages.run("corpus", {"t": 1}, corpus_out),
        "features": stages.run(
            "features", {"t": 1}, lambda d: {"frontend": MicroFrontend().params(), "shape": [98, 40]}
        ),
        "export": stages.run("export", {"t": 1}, export_out),
    }


def run_stage(
    tmp_path: Path, models: KwsModels, overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[dict, dict]:
    """The stage on the fixture model; returns its section and the files it read from each pool part."""
    cfg = load_config("esp32s3", overrides=[*MINUTES, "verify.stream.positives=12", *overrides])
    read: dict[str, list[Path]] = {}  # files of each pool part, in the order the parts were read
    original = stage.submit_part

    def spy(pool: Any, settings: Any, part: str, *args: Any) -> Any:
        futures = original(pool, settings, part, *args)  # read in the worker process
        for f in futures:
            got = f.result()
            read.setdefault(part, []).extend(pool_root() / SOURCES[got.source].package / p for p in got.files)
        return futures

    monkeypatch.setattr(stage, "submit_part", spy)
    stages = Stages(tmp_path / "cache", log=lambda _: None)
    up = upstream(stages, models, tiny_corpus(cfg.classes))
    out = stage.stage_stream(cfg, up["corpus"], up["features"], up["export"], stages, progress=False)
    return json.loads((out.dir / stage.SECTION).read_text()), read


def test_auto_calibrates_on_the_train_part_and_reports_on_the_check_part(
    models: KwsModels, fake_pool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section, read = run_stage(tmp_path, models, [], monkeypatch)
    assert list(read) == ["train", "check"]
    calibration, report = read["train"], read["check"]
    assert calibration and report and not set(calibration) & set(report)
    assert not any(is_check_file(f, fake_pool) for f in calibration)
    assert all(is_check_file(f, fake_pool) for f in report)
    cal = section["calibration"]
    assert cal["positives"]["path"] == "corpus validation split"
    assert section["positives"]["path"] == "corpus test split"
    op, chosen = section["operating_point"], cal["chosen"]
    assert (op["threshold"], op["window"]) == (chosen["threshold"], chosen["window"])
    assert op["chosen_by"].startswith("calibrated for <= 0.5 FA/h")
    # the chosen point is the best recall within the budget (at the median-unbiased bound) on the
    # calibration audio, or the fewest false accepts when none is within it
    within = [p for p in cal["points"] if within_fa_budget(p["false_accepts"], p["hours"], 0.5, MEDIAN)]
    if within:
        assert chosen["met"] and chosen["recall"] == max(p["recall"] for p in within)
    else:
        assert not chosen["met"] and chosen["fa_per_hour"] == min(p["fa_per_hour"] for p in cal["points"])
    # its record counts at the point chosen, not at the fallback point its streams were run at
    assert (cal["negatives"]["false_accepts"], cal["positives"]["recall"]) == (
        chosen["false_accepts"],
        chosen["recall"],
    )
    assert len(section["det"]) == 9 * 4 and section["det_positives"] == "positives"
    neg = section["negatives"]
    assert neg["hours"] == pytest.approx(0.01, rel=0.01) and set(neg["per_source"]) == set(NEGATIVE_SOURCES)
    assert neg["fa_per_hour_interval"] == list(poisson_rate_interval(neg["false_accepts"], neg["hours"]))
    assert [g["name"] for g in section["gates"]] == ["stream_fa_per_hour"]


def test_a_fixed_operating_point_is_only_measured(
    models: KwsModels, fake_pool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed = ["firmware.threshold=0.6", "firmware.window=2"]
    section, read = run_stage(tmp_path, models, fixed, monkeypatch)
    assert list(read) == ["check"] and section["calibration"] is None
    op = section["operating_point"]
    assert (op["threshold"], op["window"], op["chosen_by"]) == (
        0.6,
        2,
        "config (firmware.threshold and firmware.window)",
    )


@pytest.mark.parametrize(
    ("false_accepts", "hours", "passed"),
    [(0, 1 / 3, True), (1, 1 / 3, True), (2, 1 / 3, False), (2, 1.0, True), (3, 1.0, False)],
)
def test_the_fa_gate_fails_only_when_the_interval_is_above_the_limit(
    false_accepts: int, hours: float, passed: bool
) -> None:
    """0.5 FA/h: one false accept in 20 min (3/h measured) cannot show the rate is above it, two can
    (95 % interval 0.73-21.7/h); two in an hour cannot, three can."""
    cfg = load_config("esp32s3")
    interval = poisson_rate_interval(false_accepts, hours)
    negatives = {
        "false_accepts": false_accepts,
        "fa_per_hour": false_accepts / hours,
        "hours": hours,
        "fa_per_hour_interval": list(interval),
    }
    (gate,) = stream_gates(cfg, negatives, recall=0.5)
    assert gate["name"] == "stream_fa_per_hour" and gate["passed"] is passed
    assert gate["interval"] == list(interval) and gate["limit"] == 0.5 and gate["hours"] == hours
    assert gate["n"] == round(hours, 3) and gate["unit"] == "hours" and gate["rule"] == "interval"
    assert f"{false_accepts} false accepts in {hours:.2f} h" in gate["detail"]


def test_recall_gate_and_report_only_fa() -> None:
    cfg = load_config("esp32s3", overrides=["gates.max_fa_per_hour=null", "gates.min_stream_recall=0.6"])
    negatives = {"fa_per_hour": 60.0, "hours": 0.5, "fa_per_hour_interval": [40.0, 80.0]}
    (gate,) = stream_gates(cfg, negatives, recall=0.5)
    assert (gate["name"], gate["passed"]) == ("stream_recall", False)


def test_keyword_clips_take_an_even_seeded_share_of_one_split() -> None:
    classes = load_config("esp32s3").classes
    corpus = tiny_corpus(classes)
    keywords = tuple(c for c in classes if not c.startswith("_"))
    clips = keyword_clips(corpus, "test", keywords, 10, seed=0)
    assert [w for w, _ in clips] == list(keywords)  # one per keyword for 10 clips of 10 keywords
    test_audio = {corpus.clips[i].tobytes() for i in corpus.indices("test")}
    assert all(to_pcm16(x).tobytes() in test_audio for _, x in clips)
    assert len(keyword_clips(corpus, "test", keywords, 100, seed=0)) == 20  # all there are


def test_the_reader_process_reads_the_pool_this_process_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forkserver keeps the environment it started with; the reader is given the current one."""
    with stage.reader_pool() as pool:  # the server may start here, before the pool is named
        pool.submit(os.getpid).result()
    monkeypatch.setenv("EDGEKD_REAL_POOL", str(tmp_path))
    with stage.reader_pool() as pool:
        assert pool.submit(pool_root).result() == tmp_path
