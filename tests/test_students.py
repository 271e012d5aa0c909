"""Students: shapes and sizes per arch/width, and the exported INT8 graph reproducing the fake-quant model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _models import realistic_features

from edgekd.models.students import build_student, count_params
from edgekd.train.qat import convert_qat, freeze_observers, prepare_qat
from edgekd.verify.runners import LiteRTRunner
from edgekd.verify.tflite_info import describe

ARCHS = ["tiny_conv", "ds_cnn", "mobilenet", "bc_resnet"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("width", ["S", "M", "L"])
def test_every_student_maps_features_to_logits(arch: str, width: str) -> None:
    model = build_student(arch, 12, (98, 40), width).eval()
    assert model(torch.rand(3, 98, 40) * 20).shape == (3, 12)
    assert 5_000 < count_params(model) < 400_000


def test_widths_grow() -> None:
    for arch in ARCHS:
        sizes = [count_params(build_student(arch, 12, (98, 40), w)) for w in "SML"]
        assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_unknown_arch_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown student arch"):
        build_student("transformer", 12, (98, 40))


@pytest.mark.parametrize("arch", ["ds_cnn", "mobilenet", "bc_resnet"])
def test_int8_tflite_reproduces_fake_quant_logits(arch: str, tmp_path: Path) -> None:
    """Guards the pooling choice: a global MEAN made TFLite's logits drift ~100 output steps per class
    away from the fake-quant model. AVERAGE_POOL_2D keeps them within a few steps; what remains is int8
    requantization rounding, measured on this barely trained model (logits within +-0.1, so one step is
    0.003): ds_cnn <= 2 steps, mobilenet <= 6 steps with per-class means up to 2.5, bc_resnet (sub-band
    norm folded into a depthwise conv, broadcast ADDs) <= 2 steps."""
    from edgekd.export.tflite import export_tflite

    torch.manual_seed(0)
    x = realistic_features(128, seed=1)
    prepared = prepare_qat(build_student(arch, 12, (98, 40), "S"), x[:2])
    opt = torch.optim.SGD(prepared.parameters(), lr=1e-2)
    labels = torch.randint(0, 12, (128,))
    for i in range(4):
        loss = torch.nn.functional.cross_entropy(
            prepared(x[i * 32 : (i + 1) * 32]), labels[i * 32 : (i + 1) * 32]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    freeze_observers(prepared)
    prepared.eval()
    fake_quant = prepared(x).detach().numpy()
    path = export_tflite(convert_qat(prepared).for_tflite, x[:1], tmp_path / "m.tflite")
    info = describe(path)
    assert info.is_fully_int8 and "MEAN" not in info.op_set
    if arch == "ds_cnn":  # every conv's padding is SAME's: no PAD op copies an activation (the arena's peak)
        assert "PAD" not in info.op_set
    steps = (LiteRTRunner(path).predict(x.numpy()) - fake_quant) / info.output.scale
    assert np.abs(steps.mean(axis=0)).max() < 4.0  # no per-class offset (MEAN: ~100)
    assert np.abs(steps).max() <= 8.0


@pytest.mark.parametrize("stride", [1, 2])
def test_same_kernel_pads_as_tflite_same(stride: int) -> None:
    """The chosen kernel's symmetric padding, as PyTorch applies it, is TFLite's SAME padding: the same
    output size and the same taps before and after, so the converter writes no PAD op (strides 1 and 2,
    the ones DS blocks use)."""
    from edgekd.models.students import same_kernel

    for size in range(4, 60):
        k = same_kernel(size, stride)
        assert k in (3, 4)
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        assert (total // 2, total - total // 2) == ((k - 1) // 2, (k - 1) // 2)
        assert (size + 2 * ((k - 1) // 2) - k) // stride + 1 == out


def test_sub_spectral_norm_normalises_each_band_and_folds_to_an_affine() -> None:
    """Training: each (channel, sub-band) is normalised on its own. Inference: a per-band affine that
    the int8 export carries as one depthwise conv (no float op is left, see the test above)."""
    from edgekd.models.students import SubSpectralNorm

    torch.manual_seed(0)
    ssn = SubSpectralNorm(3, 5)
    bands = torch.arange(5.0).repeat_interleave(8) * 10  # five bands with very different levels
    x = torch.randn(64, 3, 7, 40) + bands
    y = ssn.train()(x)
    per_band = y.reshape(64, 3, 7, 5, 8).permute(1, 3, 0, 2, 4).reshape(15, -1)
    assert per_band.mean(1).abs().max() < 1e-4 and (per_band.std(1) - 1).abs().max() < 1e-2
    ssn.eval()
    a = ssn(torch.zeros(1, 3, 7, 40))
    b = ssn(torch.ones(1, 3, 7, 40)) - a  # an affine map: the slope is constant within a band
    assert torch.allclose(ssn(2 * torch.ones(1, 3, 7, 40)), a + 2 * b, atol=1e-5)
    assert (b.reshape(3, 7, 5, 8).std(-1) < 1e-6).all() and b.reshape(3, 7, 5, 8).std(2).max() > 1e-3


def test_student_layers_name_every_kernel_and_follow_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The student stages key on `student_layers`: a plan that differs for the same config (a newer
    edgekd's widths) must give other text, so an old stage cache is not loaded into the new layers."""
    from edgekd.config import load_config
    from edgekd.models import students
    from edgekd.models.restore import student_layers

    cfg = load_config("esp32s3")
    layers = student_layers(cfg)
    assert layers == student_layers(cfg)
    assert "kernel_size=(3, 4), stride=(1, 2)" in layers  # SAME's kernel over the stem's 20 bands
    monkeypatch.setitem(students.DS_CNN_WIDTHS, "S", students.DSCNNWidth(32, (4, 2), ((64, (1, 2)),)))
    assert student_layers(cfg) != layers
