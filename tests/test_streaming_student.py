"""The streaming student and its two int8 forms: causal by construction, the step form (what ESPHome
runs) equal to the clip form bit for bit on TFLite Micro, the fake-quant model predicting both, and the
step form inside ESPHome's contract and budgets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import speech_like

from edgekd.audio.frontend import MICRO_FEATURE_SCALE
from edgekd.audio.io import SAMPLE_RATE
from edgekd.esphome import contract
from edgekd.esphome.engine import WakeWordEngine, frontend_u16
from edgekd.export.streaming import write_clip_model, write_step_model
from edgekd.models.streaming import StreamingSpec, StreamingStudent
from edgekd.verify.tflite_info import load_tflm, measure_arena


def bursts(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """3 s of quiet noise with two loud bursts, and a per-step target: a burst is under way."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.01, 3 * SAMPLE_RATE).astype(np.float32)
    target = np.zeros(len(x) // 160, np.float32)
    for start in rng.uniform(0, 2.5, 2):
        i = int(start * SAMPLE_RATE)
        x[i : i + 4000] += rng.normal(0, 0.3, 4000).astype(np.float32)
        target[i // 160 : (i + 4000) // 160 + 20] = 1
    u = frontend_u16(np.clip(x, -1, 1))
    frames = len(u) // 3 * 3
    return u[:frames] * MICRO_FEATURE_SCALE, target[2 : frames + 2 : 3]


@dataclass
class Exported:
    model: StreamingStudent
    step: Path
    clip: Path
    frames: int
    u16: np.ndarray  # a 6 s stream's frontend output, [frames, 40]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A student trained for a few seconds to hear bursts (observe, then fake-quant, then frozen), and
    both forms written from it: outputs that move, so equality below means something."""
    torch.manual_seed(0)
    data = [bursts(s) for s in range(16)]
    x = torch.tensor(np.stack([d[0] for d in data]), dtype=torch.float32)
    y = torch.tensor(np.stack([d[1] for d in data]))
    model = StreamingStudent()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for it in range(60):
        if it == 20:
            model.quantize()
        if it == 50:
            model.freeze()
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    u16 = frontend_u16(speech_like(6.0, 5))
    frames = len(u16) // 3 * 3
    out = tmp_path_factory.mktemp("streaming")
    step = write_step_model(model, out / "step.tflite")
    clip = write_clip_model(model, frames, out / "clip.tflite")
    return Exported(model, step, clip, frames, u16[:frames])


def tflm_clip(e: Exported) -> np.ndarray:
    interp = load_tflm(e.clip, measure_arena(e.clip))
    interp.set_input(contract.feature_to_int8(e.u16)[None], 0)
    interp.invoke()
    return interp.get_output(0)[0]


def test_step_form_equals_clip_form_bit_for_bit(exported: Exported, tmp_path: Path) -> None:
    clip = tflm_clip(exported)
    assert clip.max() - clip.min() > 40  # the bursts move the output
    manifest = {
        "type": "micro",
        "wake_word": "burst",
        "author": "edgekd tests",
        "model": exported.step.name,
        "trained_languages": ["en"],
        "version": 2,
        "micro": {
            "probability_cutoff": 0.5,
            "sliding_window_size": 3,
            "feature_step_size": 10,
            "tensor_arena_size": 24576,
            "minimum_esphome_version": "2024.7.0",
        },
    }
    path = exported.step.with_suffix(".json")
    path.write_text(json.dumps(manifest))
    # ESPHome's loop on TFLite Micro: 3 frames per invoke, state in resource variables from zero points
    engine = WakeWordEngine.from_manifest(path)
    step = engine.probabilities(contract.feature_to_int8(exported.u16))
    assert len(step) == exported.frames // 3 and np.array_equal(step, clip)


def test_fake_quant_model_predicts_the_device(exported: Exported) -> None:
    with torch.no_grad():
        logits = exported.model(torch.tensor(exported.u16 * MICRO_FEATURE_SCALE, dtype=torch.float32)[None])[
            0
        ]
    step = exported.model.logit_q.qparams()[0]
    device = tflm_clip(exported).astype(np.float64)
    # Not bit-exact by design: float rounding in training against fixed-point multipliers on the device,
    # compounded over ten layers, moves the int8 logit by up to two steps (measured; near p = 0.5 one
    # step is 256 * step / 4 output steps), plus one output step for TFLite's sigmoid approximation.
    # A layout or scale defect lands far outside.
    low = torch.sigmoid(logits - 2 * step).numpy() * 256 - 1
    high = torch.sigmoid(logits + 2 * step).numpy() * 256 + 1
    assert np.all((low <= device) & (device <= high))
    assert np.mean(np.abs(torch.sigmoid(logits).numpy() * 256 - device)) < 1.0


def test_step_model_meets_esphome_contract_and_budgets(exported: Exported) -> None:
    report = contract.check(exported.step)
    assert report.passed, report.violations
    stateful = 1 + 4 + 1  # first conv, four depthwise, head (pointwise convs keep no frames)
    assert report.variables == stateful and report.stride == 3
    assert report.flash_bytes <= 64 * 1024 and report.arena_bytes <= 24 * 1024
    assert report.macs_per_second <= 2e6


def test_causal_with_the_stated_receptive_field() -> None:
    torch.manual_seed(1)
    spec = StreamingSpec(channels=8, kernels=(3, 3), dilations=(1, 2), head_frames=2)
    model = StreamingStudent(spec).eval()
    x = torch.rand(1, 120, 40) * 20
    base = model(x)[0]
    t = 60  # change one frame: steps before it and steps whose window ends past its reach stay equal
    y = x.clone()
    y[0, t] += 5
    changed = torch.nonzero(model(y)[0] != base).flatten().tolist()
    # step n hears frames up to 3n + 2, back to 3n + 3 - receptive_frames
    first, last = t // spec.stride, (t + spec.receptive_frames - spec.stride) // spec.stride
    assert changed and min(changed) >= first and max(changed) <= last
    assert spec.receptive_frames == 5 + (2 + 4 + 2 - 1) * 3  # first kernel 5, then 8 steps of 3 frames
    assert (min(changed), max(changed)) == (first, last)  # the reach is exactly the receptive field
