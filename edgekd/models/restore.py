"""A trained student back from its weights: the float model, the QAT graph and its float twin.

Stages, `eval`, the per-layer debugger and the benches all rebuild the student the same way, so this
lives below them all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekd.config import BuildConfig
from edgekd.train.trainer import predict


def example_batch(features: np.ndarray, n: int = 2) -> torch.Tensor:
    return torch.as_tensor(features[:n], dtype=torch.float32)


def make_student(cfg: BuildConfig, shape: tuple[int, int]) -> torch.nn.Module:
    from edgekd.models.students import build_student

    s = cfg.student
    return build_student(s.arch, len(cfg.classes), shape, s.width, s.dropout)


def student_layers(cfg: BuildConfig) -> str:
    """Every layer of the student `cfg` builds (kernels, strides, widths) as text, for the stages' cache
    keys: a stage cache written by an edgekd whose student for the same config differed is not reused."""
    from edgekd.audio.frontend import make_frontend
    from edgekd.audio.io import SAMPLE_RATE

    frontend = make_frontend(cfg.frontend.name)
    shape = (frontend.n_frames(SAMPLE_RATE * cfg.frontend.clip_ms // 1000), frontend.n_features)
    return repr(make_student(cfg, shape))


def load_qat_student(cfg: BuildConfig, student_dir: Path, example: torch.Tensor) -> torch.fx.GraphModule:
    """Rebuild the trained QAT graph: same float model, same preparation, then the trained state."""
    from edgekd.train.qat import freeze_observers, prepare_qat

    model = make_student(cfg, tuple(example.shape[1:]))
    model.load_state_dict(torch.load(student_dir / "float.pt", weights_only=True))
    prepared = prepare_qat(model, example)
    prepared.load_state_dict(torch.load(student_dir / "qat.pt", weights_only=True))
    freeze_observers(prepared)
    prepared.eval()  # the exported graph's patched eval() returns None, so no chaining
    return prepared


def predict_float_twin(prepared: torch.fx.GraphModule, x: np.ndarray) -> np.ndarray:
    """The shipped weights run in float32: the QAT graph with its fake quantizers switched off.

    This is the float model the INT8 artifacts must reproduce (measured: 100% argmax agreement with
    the fake-quant model); the float student before QAT differs from it only by fine-tuning drift.
    """
    from torchao.quantization.pt2e import disable_fake_quant, enable_fake_quant

    prepared.apply(disable_fake_quant)
    try:
        return predict(prepared, x, torch.device("cpu"))
    finally:
        prepared.apply(enable_fake_quant)
