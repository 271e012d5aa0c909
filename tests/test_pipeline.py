"""Stage cache: keyed by what a stage depends on; interrupted stages leave nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
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

    first = stages.run("s", {"a": 1}, produce)
    again = stages.run("s", {"a": 1}, produce)
    other = stages.run("s", {"a": 2}, produce)
    assert len(calls) == 2 and first == again and other.key != first.key
    assert (
        (first.dir / "out.txt").read_text() == "x" and first.info["n"] == 1 and first.info["key"] == first.key
    )
    assert [t.cached for t in stages.timings] == [False, True, False]


def test_interrupted_stage_leaves_no_output_and_resumes(tmp_path: Path) -> None:
    stages = _stages(tmp_path)

    def crash(d: Path) -> dict:
        (d / "partial.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stages.run("s", {"a": 1}, crash)
    assert not any((tmp_path / "cache" / "s").iterdir())  # neither a final dir nor a temp dir survives
    out = stages.run("s", {"a": 1}, lambda d: (d / "ok").write_text("y") and None)
    assert (out.dir / "ok").read_text() == "y"


def test_a_killed_attempt_is_swept_and_a_running_one_is_kept(tmp_path: Path) -> None:
    """SIGKILL leaves `.<key>.tmp-<pid>` behind; the next run of that stage deletes those whose <pid> is
    gone, whatever their key, and keeps one whose process still runs (a parallel build)."""
    stages = _stages(tmp_path)
    done = stages.run("s", {"a": 1}, lambda d: None).dir
    key = done.name
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    killed = done.parent / f".otherkey.tmp-{int(gone.stdout)}"
    alive = done.parent / f".{key}.tmp-{os.getppid()}"  # pytest's parent: certainly running
    for attempt in (killed, alive):
        attempt.mkdir()
        (attempt / "features.npz").write_bytes(b"half")
    (done / DONE).unlink()  # the stage must run again
    stages.run("s", {"a": 1}, lambda d: None)
    assert not killed.exists() and alive.exists()


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
