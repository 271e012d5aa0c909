"""Tiny INT8-friendly students.

Every student takes frontend features `[N, T, F]` (raw, unnormalised: the input quantizer learns
their range, so the firmware feeds the frontend's output straight in) and returns logits `[N, C]`.
Only ops that stay int8 end to end in the PT2E -> TFLite route are used: Conv/BN/ReLU(6), depthwise
conv, residual add, average pooling and a linear layer (FINDINGS: hardswish, SE and friends leave
float islands).

Activation sizes decide the TFLite Micro arena (the two largest live buffers), so the first
layers stride aggressively: for a 98x40 micro-frontend input, `ds_cnn` width S keeps every
activation at 16 KB, which is what fits the ESP32-S3's 48 KB arena budget. Its depthwise kernels are
chosen so that their padding is TFLite's SAME (`same_kernel`): any other padding is converted to a PAD op
whose copy of the activation is the arena's peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def conv_bn(
    cin: int,
    cout: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
    dilation: tuple[int, int] = (1, 1),
    pad: tuple[int, int] | None = None,
) -> nn.Sequential:
    """Conv + BN (+ activation); QAT folds the BN into the conv. Default padding keeps the size."""
    if pad is None:
        pad = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, pad, dilation, groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def same_kernel(size: int, stride: int, k: int = 3) -> int:
    """`k`, or `k + 1` where TFLite's SAME padding of `k` taps over `size` inputs would be lopsided.

    litert-torch writes a conv whose (symmetric) padding equals SAME's as one op, and any other as a PAD
    op plus a VALID conv; TFLite Micro then holds the padded copy beside its input. In ds_cnn S that copy
    (27x22x32 int8 before the first block's stride-2 depthwise conv over 20 bands, which SAME pads (0, 1)
    with 3 taps and (1, 1) with 4) was the arena's peak: 3.2 KB of the ESP32-S3's 48 (docs/DESIGN.md).
    """
    out = -(-size // stride)
    for taps in (k, k + 1):
        if max((out - 1) * stride + taps - size, 0) == 2 * ((taps - 1) // 2):  # SAME's total = conv_bn's
            return taps
    return k  # (a stride above 2 may fit neither: the PAD op stays, the arithmetic is the same)


class DSBlock(nn.Sequential):
    """Depthwise-separable block of DS-CNN (Zhang et al., "Hello Edge", 2017)."""

    def __init__(
        self, cin: int, cout: int, stride: tuple[int, int], kernel: tuple[int, int] = (3, 3)
    ) -> None:
        super().__init__(conv_bn(cin, cin, kernel, stride, groups=cin), conv_bn(cin, cout, (1, 1), (1, 1)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block with ReLU6 (int8-friendly: ReLU6 folds into the conv's clamp)."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int], expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.body = nn.Sequential(
            conv_bn(cin, hidden, (1, 1), (1, 1), act=nn.ReLU6),
            conv_bn(hidden, hidden, (3, 3), stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, cout, (1, 1), (1, 1), act=None),
        )
        self.residual = stride == (1, 1) and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class SubSpectralNorm(nn.Module):
    """Batch norm per (channel, frequency sub-band) (Chang et al., 2021), in a form QAT folds.

    A frequency-dependent affine cannot fold into a conv that shares its kernel across frequency, and
    a bare BatchNorm would stay a float island in the PT2E route. So the sub-bands are moved into the
    channel axis and normalised by a 1x1 depthwise conv + BN over channels x sub-bands: QAT folds that
    pair into one int8 DEPTHWISE_CONV_2D (at inference it is exactly the per-sub-band affine), between
    two layout ops that move no arithmetic. Layout: `[N, C, T, F]`, F split into `subbands` bands.
    """

    def __init__(self, channels: int, subbands: int) -> None:
        super().__init__()
        self.subbands = subbands
        groups = channels * subbands
        self.norm = conv_bn(groups, groups, (1, 1), (1, 1), groups=groups, act=None)
        nn.init.ones_(self.norm[0].weight)  # starts as plain BN per band; the conv is there to be folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, t, f = x.shape
        s, band = self.subbands, f // self.subbands
        y = x.reshape(-1, c, t, s, band).permute(0, 1, 3, 2, 4).reshape(-1, c * s, t, band)
        y = self.norm(y)
        return y.reshape(-1, c, s, t, band).permute(0, 1, 3, 2, 4).reshape(-1, c, t, f)


class BCResBlock(nn.Module):
    """Broadcasted residual block of BC-ResNet (Kim et al., 2021), int8-friendly.

    A frequency-wise depthwise conv + sub-spectral norm (f2) keeps the 2-D detail; its output averaged
    over frequency feeds a cheap temporal branch (f1: dilated depthwise conv, BN, ReLU, 1x1 conv) whose
    1-D result is broadcast back over frequency and added. Swish is ReLU here (a float island in the
    PT2E route); the frequency mean is an AVERAGE_POOL_2D (a global MEAN drifted in TFLite, see tests).
    A transition block changes the width with a 1x1 conv first and has no identity shortcut.
    """

    def __init__(
        self, cin: int, cout: int, freq: int, freq_stride: int, dilation: int, subbands: int
    ) -> None:
        super().__init__()
        self.transition = cin != cout or freq_stride != 1
        self.pre = conv_bn(cin, cout, (1, 1), (1, 1)) if cin != cout else nn.Identity()
        self.f2 = nn.Sequential(
            nn.Conv2d(cout, cout, (1, 3), stride=(1, freq_stride), padding=(0, 1), groups=cout, bias=False),
            SubSpectralNorm(cout, subbands),
        )
        out_freq = (freq - 1) // freq_stride + 1
        self.freq_pool = nn.AvgPool2d((1, out_freq))
        self.f1 = nn.Sequential(
            conv_bn(cout, cout, (3, 1), (1, 1), groups=cout, dilation=(dilation, 1)),
            conv_bn(cout, cout, (1, 1), (1, 1), act=None),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        x1 = self.f2(x)
        y = x1 + self.f1(self.freq_pool(x1))  # [N, C, T, 1] broadcast over frequency
        if not self.transition:
            y = y + x
        return self.act(y)


class Student(nn.Module):
    """features [N,T,F] -> stem -> blocks -> global average pool -> dropout -> linear."""

    def __init__(
        self,
        stem: nn.Module,
        blocks: nn.Module,
        channels: int,
        n_classes: int,
        dropout: float,
        input_shape: tuple[int, int],
    ) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = blocks
        with torch.no_grad():
            final_hw = self.blocks(self.stem(torch.zeros(1, 1, *input_shape))).shape[2:]
        self.pool = nn.AvgPool2d(tuple(final_hw))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (what feature-matching distillation projects)."""
        x = self.blocks(self.stem(x.unsqueeze(1)))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.embed(x)))


class TinyConv(nn.Module):
    """TensorFlow speech_commands' tiny_conv: one strided conv and a linear layer."""

    def __init__(self, n_classes: int, input_shape: tuple[int, int], width: int, dropout: float) -> None:
        super().__init__()
        self.conv = conv_bn(1, width, (10, 8), (4, 4))
        t, f = _out_hw(input_shape, (10, 8), (4, 4))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width * t * f, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.conv(x.unsqueeze(1)), 1)))


def _out_hw(shape: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    return tuple((n + 2 * ((k - 1) // 2) - k) // s + 1 for n, k, s in zip(shape, kernel, stride, strict=True))


@dataclass(frozen=True)
class DSCNNWidth:
    stem: int
    stem_stride: tuple[int, int]
    blocks: tuple[tuple[int, tuple[int, int]], ...]


DS_CNN_STEM_KERNEL = (10, 4)
DS_CNN_WIDTHS = {
    # Hello Edge's four blocks and two more, the second halving time: fewer MACs (4.3 M against 4.7 M), a
    # 35 KB arena against 43 KB, and a student that hears people better (docs/DESIGN.md, stop 54)
    "S": DSCNNWidth(
        32, (4, 2), ((64, (1, 2)), (64, (2, 1)), (64, (1, 1)), (64, (1, 1)), (64, (1, 1)), (64, (1, 1)))
    ),
    "M": DSCNNWidth(64, (2, 2), ((64, (1, 2)), (96, (2, 1)), (96, (1, 1)), (96, (1, 1)), (96, (1, 1)))),
    "L": DSCNNWidth(96, (2, 2), ((128, (1, 2)), (128, (2, 1)), (160, (1, 1)), (160, (1, 1)), (160, (1, 1)))),
}
TINY_CONV_WIDTHS = {"S": 8, "M": 16, "L": 32}
MOBILENET_WIDTHS = {"S": (16, 1.0), "M": (24, 1.5), "L": (32, 2.0)}
BC_RESNET_WIDTHS = {"S": 1, "M": 2, "L": 3}  # the paper's BC-ResNet-c multiplier c
# (channels / c, blocks, frequency stride of the first block, temporal dilation) per stage (paper, Table 1)
_BC_RESNET_STAGES = ((8, 2, 1, 1), (12, 2, 2, 2), (16, 4, 2, 4), (20, 4, 1, 8))


def _bc_resnet(
    n_classes: int, input_shape: tuple[int, int], c: int, dropout: float, subbands: int = 5
) -> Student:
    """BC-ResNet-c on `[T, F]` features, 5 sub-bands as in the paper.

    Unlike the paper (full time resolution), the stem also strides time by 2, halving every activation;
    the dilations still span ~1 s at the last stage. Measured INT8 on TFLite Micro (98x40 input):
    c=1 (S) 1.3 M MAC, 179 KB flatbuffer, 75 KB arena; c=2 (M) 3.8 M MAC. Three activations of the
    broadcast block are live at once and the sub-band layout ops add their own buffers, so even c=1 is
    over the ESP32-S3 budget (48 KB arena): `ds_cnn` stays that target's student.
    """
    freq = (input_shape[1] - 1) // 2 + 1
    stem = conv_bn(1, 16 * c, (5, 5), (2, 2))
    blocks: list[nn.Module] = []
    cin = 16 * c
    for width, count, freq_stride, dilation in _BC_RESNET_STAGES:
        for i in range(count):
            stride = freq_stride if i == 0 else 1
            blocks.append(BCResBlock(cin, width * c, freq, stride, dilation, subbands))
            cin, freq = width * c, (freq - 1) // stride + 1
    # head: a depthwise conv over the remaining bands (no frequency padding) and a 1x1 conv to 32c
    blocks.append(conv_bn(cin, cin, (5, freq), (1, 1), groups=cin, pad=(2, 0)))
    blocks.append(conv_bn(cin, 32 * c, (1, 1), (1, 1)))
    return Student(stem, nn.Sequential(*blocks), 32 * c, n_classes, dropout, input_shape)


def build_student(
    arch: str, n_classes: int, input_shape: tuple[int, int], width: str = "S", dropout: float = 0.1
) -> nn.Module:
    """Student registry: `tiny_conv`, `ds_cnn`, `mobilenet` and `bc_resnet`, each in widths S/M/L."""
    if arch == "tiny_conv":
        return TinyConv(n_classes, input_shape, TINY_CONV_WIDTHS[width], dropout)
    if arch == "ds_cnn":
        w = DS_CNN_WIDTHS[width]
        blocks, cin = [], w.stem
        size = _out_hw(input_shape, DS_CNN_STEM_KERNEL, w.stem_stride)
        for cout, stride in w.blocks:
            kernel = (same_kernel(size[0], stride[0]), same_kernel(size[1], stride[1]))
            blocks.append(DSBlock(cin, cout, stride, kernel))
            cin, size = cout, _out_hw(size, kernel, stride)
        stem = conv_bn(1, w.stem, DS_CNN_STEM_KERNEL, w.stem_stride)
        return Student(stem, nn.Sequential(*blocks), cin, n_classes, dropout, input_shape)
    if arch == "mobilenet":
        base, mult = MOBILENET_WIDTHS[width]
        plan = [
            (base, (1, 2), 1),
            (int(base * 1.5 * mult), (2, 2), 4),
            (int(base * 1.5 * mult), (1, 1), 4),
            (int(base * 2 * mult), (2, 1), 4),
            (int(base * 2 * mult), (1, 1), 4),
        ]
        blocks, cin = [], 2 * base
        for cout, stride, expand in plan:
            blocks.append(InvertedResidual(cin, cout, stride, expand))
            cin = cout
        # MobileNetV2's 1x1 "head" conv before pooling. Beyond accuracy it gives the pooled tensor its own
        # trained quantizer: a residual ADD feeding the pool had none, so the converter borrowed the
        # post-pool scale and clipped 10% of the ADD's values (per-layer comparison, mobile build).
        head = 2 * cin
        blocks.append(conv_bn(cin, head, (1, 1), (1, 1), act=nn.ReLU6))
        stem = conv_bn(1, 2 * base, (5, 3), (2, 2), act=nn.ReLU6)
        return Student(stem, nn.Sequential(*blocks), head, n_classes, dropout, input_shape)
    if arch == "bc_resnet":
        return _bc_resnet(n_classes, input_shape, BC_RESNET_WIDTHS[width], dropout)
    raise ValueError(f"unknown student arch {arch!r}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
