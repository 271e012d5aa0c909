"""The ESPHome micro_wake_word contract: feature mapping, manifest schema, and the model checker on
microWakeWord's shipped models (which must pass) and on edgekd's whole-window model (which must not)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import KwsModels

from edgekd.detect import quantize_raw_features
from edgekd.errors import EdgekdError
from edgekd.esphome import contract


def test_feature_mapping_is_esphomes_integer_formula_and_a_tflite_quantization() -> None:
    u = np.arange(65536, dtype=np.uint16)
    q = contract.feature_to_int8(u)
    # ESPHome's integers: (u * 256 + 333) / 666 - 128, clamped; spot values worked by hand.
    assert q[0] == -128 and q[1] == -128 and q[2] == -127  # 845 // 666 = 1
    assert q[333] == 0  # (85248 + 333) // 666 = 128
    assert q[662] == 126 and q[663] == 127 and q[65535] == 127  # clamped above 663
    assert np.all(np.diff(q.astype(int)) >= 0)
    # ... equal, on every uint16, to TFLite's QUANTIZE of the float feature u * 0.0390625 at 3330/32768
    tflite = quantize_raw_features(u, contract.INPUT_SCALE, contract.INPUT_ZERO_POINT)
    assert np.array_equal(q, tflite)
    # microWakeWord's declared 26/255 would map 282 of the 665 unclamped values one step lower: the
    # device does not use it, so the checker must not hold a model to its declared scale
    declared = quantize_raw_features(u, contract.MWW_DECLARED_SCALE, contract.INPUT_ZERO_POINT)
    assert np.count_nonzero(declared != q) == 282 and np.abs(declared.astype(int) - q).max() == 1
    with pytest.raises(EdgekdError, match="integer"):
        contract.feature_to_int8(u.astype(np.float32))


@pytest.mark.parametrize("name", ["alexa", "hey_jarvis", "hey_mycroft", "okay_nabu"])
def test_microwakeword_shipped_models_pass(name: str) -> None:
    manifest = contract.microwakeword_manifests()[name]
    report = contract.check(manifest.with_suffix(".tflite"), manifest)
    assert report.passed, report.violations
    assert report.stride == 3 and 1 <= report.variables <= contract.MAX_VARIABLES
    assert report.arena_bytes <= contract.read_manifest(manifest).arena_bytes
    assert 0.5e6 < report.macs_per_second < 1.5e6  # what makes streaming cheap on a microcontroller
    assert any("26/255" in n for n in report.notes)


def test_edgekd_whole_window_model_fails_with_every_clause_named(models: KwsModels) -> None:
    report = contract.check(models.int8)
    failed = {c.clause for c in report.checks if not c.ok}
    # its int8 [1, 98, 40] input is a valid shape (ESPHome would feed 98 new frames per invoke); what
    # breaks the contract is the mapping, the 12-class output and the missing state
    assert failed == {"input mapping", "output", "state"} and report.stride == 98
    assert "int8 [1, 12]" in " ".join(report.violations) and "0 resource variables" in report.violations[-1]


def test_manifest_arena_smaller_than_tflite_micro_needs_fails(tmp_path: Path) -> None:
    src = contract.microwakeword_manifests()["alexa"]
    raw = json.loads(src.read_text())
    raw["micro"]["tensor_arena_size"] = 4096
    (tmp_path / "alexa.tflite").write_bytes(src.with_suffix(".tflite").read_bytes())
    (tmp_path / "alexa.json").write_text(json.dumps(raw))
    report = contract.check(tmp_path / "alexa.tflite", tmp_path / "alexa.json")
    assert [c.clause for c in report.checks if not c.ok] == ["manifest arena"]
    assert "4096 B" in report.violations[0]


def test_manifest_schema_names_every_problem(tmp_path: Path) -> None:
    good = json.loads(contract.microwakeword_manifests()["alexa"].read_text())
    assert contract.manifest_problems(good) == []
    bad = copy.deepcopy(good)
    bad["version"] = 1
    bad["colour"] = "blue"
    del bad["trained_languages"]
    bad["website"] = "kevinahrendt.com"
    bad["micro"]["probability_cutoff"] = 1.5
    bad["micro"]["feature_step_size"] = 15
    bad["micro"]["tensor_arena_size"] = 2.5e4
    bad["micro"]["extra"] = 1
    problems = contract.manifest_problems(bad)
    for words in [
        "missing key 'trained_languages'",
        "unknown key 'colour'",
        "'version' must be 2",
        "'website' must be a URL",
        "'micro.probability_cutoff' must be a number in (0, 1]",
        "'micro.feature_step_size' must be one of [10, 20]",
        "'micro.tensor_arena_size' must be a positive integer",
        "unknown key 'micro.extra'",
    ]:
        assert any(words in p for p in problems), (words, problems)
    assert len(problems) == 8
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(EdgekdError, match=r"bad\.json: not a valid micro_wake_word v2 manifest"):
        contract.read_manifest(path)
    path.write_text("{not json")
    with pytest.raises(EdgekdError, match="not a JSON manifest"):
        contract.read_manifest(path)


def test_cutoff_is_truncated_like_esphome() -> None:
    manifest = contract.read_manifest(contract.microwakeword_manifests()["alexa"])
    assert manifest.cutoff == 229 and manifest.window == 5  # int(0.9 * 255) = 229
    assert contract.cutoff_u8(0.97) == 247


def test_cli_checks_and_scans_with_exit_codes(tmp_path: Path, models: KwsModels, capsys) -> None:
    from conftest import speech_like

    from edgekd.audio.io import write_wav
    from edgekd.cli import main

    manifest = contract.microwakeword_manifests()["hey_jarvis"]
    write_wav(tmp_path / "quiet.wav", speech_like(3.0, 0) * 0.1)
    out = tmp_path / "record.json"
    assert main(["esphome", str(manifest), "--audio", str(tmp_path), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["passed"] and record["scan"]["detections"] == 0 and record["scan"]["cutoff"] == 247
    assert "passes ESPHome's micro_wake_word contract" in capsys.readouterr().out
    assert main(["esphome", str(models.int8)]) == 1  # a contract breach: exit 1 like a failed gate
    assert "breaks ESPHome's micro_wake_word contract" in capsys.readouterr().out
    assert main(["esphome", str(tmp_path / "quiet.wav")]) == 2
    assert "pass a micro_wake_word manifest" in capsys.readouterr().err
    assert main(["esphome", str(models.int8), "--audio", str(tmp_path)]) == 2
    assert "needs the manifest" in capsys.readouterr().err
    assert main(["esphome", str(manifest), "--audio", str(tmp_path), "--cutoff", "90"]) == 2
    assert "--cutoff 90.0: give a probability in (0, 1]" in capsys.readouterr().err
