"""`edgekd compare`: identical reports pass, injected regressions fail naming the metric, errors are clear."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekd.cli import main
from edgekd.config import dump_config, load_config
from edgekd.errors import EdgekdError
from edgekd.report.compare import (
    Tolerances,
    compare,
    default_tolerances,
    load_parity,
    machine_note,
    render_compare,
)
from edgekd.runtime_env import machine
from edgekd.verify.budget import Budget
from edgekd.verify.parity import parity_report

CFG = load_config("esp32s3")


def _parity(seed: int = 0) -> dict[str, Any]:
    """A realistic parity record: 240 clips, ~95% accurate rows, an INT8 row that tracks the float one."""
    rng = np.random.default_rng(seed)
    n_cls = len(CFG.classes)
    y = np.arange(240) % n_cls
    logits = rng.normal(size=(240, n_cls)).astype(np.float32)
    logits[np.arange(240), y] += 4.0
    teacher = logits + rng.normal(scale=0.3, size=logits.shape).astype(np.float32)
    runtimes = {
        "teacher_fp32": teacher,
        "student_fp32": logits,
        "student_qat": logits,
        "student_int8_tflm": logits + 0.01,
    }
    budget = Budget(48_904, 42_992, ["CONV_2D", "FULLY_CONNECTED"], 4_744_768, True, [], 19.77, "estimate: x")
    return parity_report(CFG, runtimes, y, budget)


def _write(d: Path, parity: dict[str, Any], config: dict[str, Any] | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "parity.json").write_text(json.dumps(parity))
    (d / "config.json").write_text(json.dumps(config or dump_config(CFG)))
    return d


def test_identical_reports_pass(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old = _write(tmp_path / "old", _parity())
    new = _write(tmp_path / "new", _parity())
    result = compare(load_parity(old), load_parity(new), default_tolerances(new))
    assert result.passed and result.regressions == []
    assert all(d.delta in (None, 0.0) for d in result.deltas)
    assert main(["compare", str(old), str(new / "parity.json")]) == 0
    out = capsys.readouterr().out
    assert "edgekd compare: PASS" in out and "student_int8_tflm.accuracy" in out


def test_injected_accuracy_regression_fails_naming_the_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = _parity()
    worse = copy.deepcopy(base)
    worse["rows"]["student_int8_tflm"]["accuracy"] -= 0.03
    old, new = _write(tmp_path / "old", base), _write(tmp_path / "new", worse)
    assert main(["compare", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert "student_int8_tflm.accuracy dropped 3.00 pts" in out and "0.5 pts allowed" in out
    # The tolerance comes from NEW's config.json and is overridable on the command line.
    assert main(["compare", str(old), str(new), "--max-drop", "5"]) == 0
    assert "--max-drop" in capsys.readouterr().out


def test_tolerances_default_to_new_builds_gates(tmp_path: Path) -> None:
    cfg = dump_config(CFG)
    cfg["gates"]["max_accuracy_drop"] = 4.0
    new = _write(tmp_path / "new", _parity(), cfg)
    tol = default_tolerances(new)
    assert tol.max_drop == 4.0 and tol.min_agreement == CFG.gates.min_agreement
    assert tol.model_bytes == CFG.budget.model_bytes and tol.arena_bytes == CFG.budget.arena_bytes
    assert str(new / "config.json") in tol.source
    (new / "config.json").unlink()
    assert default_tolerances(new) == Tolerances()


def test_per_class_deltas_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = _parity()
    changed = copy.deepcopy(base)
    changed["rows"]["student_int8_tflm"]["per_class_accuracy"]["yes"] -= 0.1
    result = compare(base, changed, Tolerances(max_class_drop=5.0))
    yes = next(d for d in result.deltas if d.section == "per_class" and d.name == "yes")
    assert yes.delta == pytest.approx(-0.1) and yes.regression
    assert len([d for d in result.deltas if d.section == "per_class"]) == len(CFG.classes)
    assert any("per_class_accuracy[yes] dropped 10.00 pts" in r for r in result.regressions)
    md = render_compare(result, "md")
    assert md.startswith("### edgekd compare: FAIL")
    assert "| metric " in md and "**Per-class accuracy (student_int8_tflm)**" in md
    assert "| yes " in md and "-10.00 pts" in md
    old, new = _write(tmp_path / "old", base), _write(tmp_path / "new", changed)
    assert main(["compare", str(old), str(new), "--format", "md"]) == 0  # per-class drops are off by default
    assert capsys.readouterr().out.startswith("### edgekd compare: PASS")


def test_budget_and_agreement_regressions_are_named() -> None:
    base = _parity()
    worse = copy.deepcopy(base)
    worse["budget"].update(model_bytes=70_000, arena_bytes_with_headroom=50_000, fully_int8=False)
    worse["budget"]["not_int8"] = ["input (float32)"]
    worse["rows"]["student_int8_tflm"]["agreement_with_student_fp32"] = 0.99
    tol = Tolerances(min_agreement=0.995, model_bytes=65_536, arena_bytes=49_152)
    text = "\n".join(compare(base, worse, tol).regressions)
    assert "budget.model_bytes is 70000 B, over the budget of 65536 B" in text
    assert "budget.arena_bytes_with_headroom is 50000 B" in text
    assert "budget.fully_int8 became false: not int8: input (float32)" in text
    assert "student_int8_tflm.agreement_with_student_fp32 is 99.00%, below the 99.50% required" in text
    grown = copy.deepcopy(base)
    grown["budget"]["macs"] = int(base["budget"]["macs"] * 1.2)
    assert compare(base, grown, Tolerances(max_growth_pct=25)).passed
    assert "budget.macs grew 20.0%" in compare(base, grown, Tolerances(max_growth_pct=10)).regressions[0]


def test_unreadable_inputs_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = _write(tmp_path / "good", _parity())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "edgekd.inspect/1"}))
    assert main(["compare", str(good), str(other)]) == 2
    err = capsys.readouterr().err
    assert "other.json: schema 'edgekd.inspect/1' is not 'edgekd.parity/1' or 'edgekd.parity/2'" in err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(EdgekdError, match="broken.json: not valid JSON"):
        load_parity(broken)
    with pytest.raises(EdgekdError, match="nothing: no such build directory or parity.json"):
        load_parity(tmp_path / "nothing")
    with pytest.raises(EdgekdError, match="no parity.json in this directory"):
        load_parity(tmp_path)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"schema": "edgekd.parity/1", "rows": {}}))
    with pytest.raises(EdgekdError, match=r"partial.json: missing field\(s\)"):
        load_parity(partial)


def _stream(false_accepts: int, hours: float, hits: int, clips: int = 150) -> dict[str, Any]:
    """The streaming section's figures `compare` reads."""
    return {
        "operating_point": {"threshold": 0.85, "window": 3},
        "negatives": {"false_accepts": false_accepts, "hours": hours, "fa_per_hour": false_accepts / hours},
        "positives": {"clips": clips, "recall": hits / clips},
    }


@pytest.mark.parametrize(
    ("old", "new", "regressions"),
    [
        (_stream(1, 0.5, 90), _stream(2, 0.5, 85), []),  # one more false accept, 5 fewer hits: noise
        (_stream(1, 0.5, 90), _stream(12, 0.5, 90), ["stream.fa_per_hour rose"]),
        (_stream(1, 0.5, 90), _stream(1, 0.5, 60), ["stream.positives.recall dropped"]),
        (_stream(12, 0.5, 60), _stream(1, 0.5, 90), []),  # better is never a regression
    ],
)
def test_streaming_changes_count_when_significant(old: dict, new: dict, regressions: list[str]) -> None:
    a, b = _parity(), _parity()
    a["schema"] = "edgekd.parity/1"  # an older record: without streaming figures, still readable
    result = compare({**a, "stream": old}, {**b, "stream": new})
    assert [r.split(" from")[0] for r in result.regressions] == regressions
    text = render_compare(result)
    assert "Streaming" in text and "fa_per_hour" in text and "positives.recall" in text


def test_streaming_figures_on_one_side_only_are_a_note(tmp_path: Path) -> None:
    old = _write(tmp_path / "old", {**_parity(), "schema": "edgekd.parity/1"})
    new = _write(tmp_path / "new", {**_parity(), "stream": _stream(1, 0.5, 90)})
    result = compare(load_parity(old), load_parity(new))
    assert result.passed and "streaming figures only in NEW" in result.notes


def test_students_trained_where_torch_computes_differently_are_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The manifests say where each student trained; another instruction set or thread count is named."""
    here = machine()
    other = {**here, "torch_cpu_capability": "AVX2" if here["torch_cpu_capability"] != "AVX2" else "AVX512"}
    builds = {}
    for name, trained_on in (("a", here), ("b", here), ("c", other), ("d", {**here, "threads": 7})):
        builds[name] = _write(tmp_path / name, _parity())
        (builds[name] / "manifest.json").write_text(json.dumps({"student": {"trained_on": trained_on}}))
    old_build = _write(tmp_path / "old", _parity())  # a manifest from before it held the machine
    (old_build / "manifest.json").write_text(json.dumps({"student": {"arch": "ds_cnn"}}))
    assert machine_note(builds["a"], builds["b"] / "parity.json") is None
    assert machine_note(old_build, builds["c"]) is None
    note = machine_note(builds["a"], builds["c"])
    assert note and here["torch_cpu_capability"] in note and other["torch_cpu_capability"] in note
    assert "7 thread(s)" in (machine_note(builds["a"], builds["d"]) or "")
    # the verdict does not change; the note is printed with it
    assert main(["compare", str(builds["a"]), str(builds["c"])]) == 0
    assert "note: the students trained on different machines" in capsys.readouterr().out
