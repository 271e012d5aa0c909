"""ESPHome's micro_wake_word loop on the host: the decision rule frame by frame, the model on TFLite
Micro against LiteRT's reference kernels, and a spoken wake word found in running audio."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import speech_like

from edgekd.audio.io import SAMPLE_RATE
from edgekd.audio.synth import Synthesizer, get_engine
from edgekd.esphome import contract
from edgekd.esphome.engine import WakeWordEngine, detect, frame_end_s, frontend_u16
from edgekd.verify.tflite_info import open_litert

COOL = contract.COOL_OFF_FRAMES


def test_decision_waits_for_the_window_and_for_the_cool_off() -> None:
    low, high = [0] * 40, [255] * 10  # 40 invokes = 120 frames: the start's cool-off has passed
    # stride 3, cutoff 229 (0.9), window 5: the fifth high output makes the sum 1275 > 1145
    fired = detect(np.array(low + high, np.uint8), stride=3, cutoff=229, window=5)
    assert fired == [3 * (40 + 5) - 1]
    # high from the very start: the cool-off never counts down, so nothing fires until a dip
    assert detect(np.array([255] * 200, np.uint8), 3, 229, 5) == []
    # after a detection the ring is zeroed and COOL frames below the cutoff must pass again
    again = low + high + [0] * (COOL // 3 - 1) + high
    assert detect(np.array(again, np.uint8), 3, 229, 5) == [134]  # the dip is one invoke too short
    again = low + high + [0] * (COOL // 3 + 1) + high
    assert detect(np.array(again, np.uint8), 3, 229, 5) == [134, 3 * (50 + COOL // 3 + 1 + 5) - 1]
    # the window sum must exceed cutoff * window, not reach it
    edge = np.array(low + [229] * 10, np.uint8)
    assert detect(edge, 3, 229, 5) == [] and detect(edge, 3, 228, 5) == [134]


@pytest.fixture(scope="module")
def alexa() -> WakeWordEngine:
    return WakeWordEngine.from_manifest(contract.microwakeword_manifests()["alexa"])


@pytest.fixture(scope="module")
def spoken_alexa() -> np.ndarray:
    """Piper's voice saying the wake word (seeded, so the same audio every run)."""
    voice = get_engine("piper").voices(1, 0)[0]
    return Synthesizer(0).synth("Alexa", voice)


def test_tflite_micro_streaming_equals_litert_reference_kernels(
    alexa: WakeWordEngine, spoken_alexa: np.ndarray
) -> None:
    audio = speech_like(6.0, 1)
    audio[SAMPLE_RATE : SAMPLE_RATE + len(spoken_alexa)] += spoken_alexa
    q = contract.feature_to_int8(frontend_u16(audio))
    ours = alexa.probabilities(q)
    ref = open_litert(alexa.manifest.model)  # BUILTIN_REF kernels, resource variables and all
    ref.allocate_tensors()
    x, y = ref.get_input_details()[0]["index"], ref.get_output_details()[0]["index"]
    theirs = []
    for k in range(len(q) // 3):
        ref.set_tensor(x, q[None, 3 * k : 3 * k + 3])
        ref.invoke()
        theirs.append(ref.get_tensor(y)[0, 0])
    assert np.array_equal(ours, np.array(theirs, np.uint8))
    assert ours.max() > 200  # the word was heard: the states carried it through the steps
    assert np.array_equal(alexa.probabilities(q), ours)  # state starts fresh on every stream


def test_wake_word_found_once_in_running_audio(alexa: WakeWordEngine, spoken_alexa: np.ndarray) -> None:
    quiet = speech_like(8.0, 2) * 0.2
    assert alexa.run(quiet).detections == []
    at = 4 * SAMPLE_RATE
    quiet[at : at + len(spoken_alexa)] += spoken_alexa
    run = alexa.run(quiet)
    assert len(run.times_s) == 1
    assert at / SAMPLE_RATE < run.times_s[0] < (at + len(spoken_alexa)) / SAMPLE_RATE + 1.0
    assert run.times_s[0] == round(frame_end_s(run.detections[0]), 3)
    # a cutoff above every output never fires; the same outputs decided again without the model
    assert detect(run.probabilities, alexa.stride, 255, alexa.window) == []


def test_measurements_replay_the_decision_at_any_point(
    alexa: WakeWordEngine, spoken_alexa: np.ndarray
) -> None:
    """One pass of the model, the component's rule replayed per (cutoff, window): what calibration sweeps."""
    from edgekd.esphome.measure import NegativeRuns, PositiveRun

    talk = speech_like(20.0, 3) * 0.2
    negatives = NegativeRuns.of(alexa, [("talk", talk)])
    assert negatives.total_hours == pytest.approx(20.0 / 3600)
    at_manifest = negatives.false_accepts(alexa.cutoff, alexa.window)
    assert at_manifest == {"talk": len(alexa.run(talk).detections)}
    assert negatives.false_accepts(0, 1)["talk"] >= at_manifest["talk"]  # looser never fires less
    heard = PositiveRun.of(alexa, "alexa", [spoken_alexa] * 3, [], (20.0, 30.0))
    assert heard.hits(alexa.cutoff, alexa.window) == (3, 3)  # Piper's clean "Alexa", three times
    assert heard.hits(255, alexa.window) == (0, 3)  # a cutoff above every output hears nothing
