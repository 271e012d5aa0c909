"""Stage cache: keyed by what a stage depends on; interrupted stages leave nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.artifacts import stable_hash, write_bytes
from edgekd.pipeline import DONE, Stages


def _stages(tmp_path: Path) -> Stages:
    return Stages(tmp_path / "cache", log=lambda _m: None)


def test_cache_hit_skips_work_and_miss_reruns(tmp_path: Path) -> None:
    stages, calls = _stages(tmp_path), []

    def produce(d: Path) -> dict:
        calls.append(d)
        (d / "out.txt").write_text("x")
        return {"n": 1}

    first, key1 = stages.run("s", {"a": 1}, produce)
    again, key2 = stages.run("s", {"a": 1}, produce)
    other, key3 = stages.run("s", {"a": 2}, produce)
    assert len(calls) == 2 and first == again and key1 == key2 and key3 != key1
    assert (first / "out.txt").read_text() == "x" and (first / DONE).exists()
    assert [t.cached for t in stages.timings] == [False, True, False]


def test_interrupted_stage_leaves_no_output_and_resumes(tmp_path: Path) -> None:
    stages = _stages(tmp_path)

    def crash(d: Path) -> dict:
        (d / "partial.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stages.run("s", {"a": 1}, crash)
    assert not any((tmp_path / "cache" / "s").iterdir())  # neither a final dir nor a temp dir survives
    out, _ = stages.run("s", {"a": 1}, lambda d: (d / "ok").write_text("y") and None)
    assert (out / "ok").read_text() == "y"


def test_stable_hash_ignores_dict_order() -> None:
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "model.tflite"
    write_bytes(target, b"good")
    from edgekd.artifacts import atomic_path

    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half-writ")
        raise RuntimeError("converter crashed")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]
