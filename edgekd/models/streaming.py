"""The streaming wake-word student: causal temporal convolutions, quantization-aware from the start.

ESPHome's micro_wake_word feeds a model `stride` new feature frames per invoke and expects it to keep
its context in resource variables (`edgekd.esphome.contract`). A stack of *causal* convolutions over time
does exactly that when each layer keeps its last (kernel - 1) * dilation input frames as state. So one
network has two forms, built from the same int8 parameters by `edgekd.export.streaming`:

- the **clip form** (this module, and the whole-clip TFLite): every layer is left-padded with zeros
  (the int8 zero point) and the model returns one wake-word logit per `stride` frames of a clip; it
  trains on whole clips, batched, like any student;
- the **step form** (the streaming TFLite): each layer concatenates its state with the new frames and
  convolves without padding; states start at the zero point, so step n computes exactly what the clip
  form computes at output n.

Layout, after microWakeWord's MixedNet (its shipped alexa has the same skeleton): a strided first
convolution (kernel `first_kernel`, stride `stride` = one output per invoke), then blocks of a dilated
depthwise convolution and a ReLU pointwise convolution, then a head over the last `head_frames`
outputs (flattened, one linear unit) and a sigmoid.

Quantization-aware by construction (no PT2E graph: the exporter must own the graph's layout, state and
input mapping): weights are fake-quantized per output channel, symmetric int8, as TFLite stores them;
activations per tensor, asymmetric int8, from running min/max; the input is fixed to ESPHome's feature
mapping (scale 3330/32768, zero point -128) and the sigmoid's output to TFLite's 1/256 grid. The
fake-quant follows TFLite's integer kernels closely but not bit for bit; parity is measured on the
exported model, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.esphome.contract import INPUT_SCALE, INPUT_ZERO_POINT, N_FEATURES

QMIN, QMAX = -128, 127


@dataclass(frozen=True)
class StreamingSpec:
    """The student's shape. Defaults: ~1.9 s receptive field, ~22 K parameters, ~0.6 M MAC/s."""

    stride: int = 3
    first_kernel: int = 5
    channels: int = 48
    kernels: tuple[int, ...] = (5, 5, 5, 5)
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    head_frames: int = 5
    n_features: int = N_FEATURES

    def __post_init__(self) -> None:
        if len(self.kernels) != len(self.dilations):
            raise ValueError("kernels and dilations need one entry per block")
        if self.first_kernel < self.stride:
            raise ValueError("first_kernel must cover at least one stride of frames")

    @property
    def receptive_frames(self) -> int:
        """Feature frames one output depends on."""
        steps = sum((k - 1) * d for k, d in zip(self.kernels, self.dilations, strict=True)) + self.head_frames
        return self.first_kernel + (steps - 1) * self.stride


class ActQuant(nn.Module):
    """Per-tensor int8 fake-quant of an activation, with TFLite's asymmetric parameters.

    The range is a running min/max (momentum `momentum`) while `observing`; `fixed` pins the scale and
    zero point (the model input, the sigmoid output). Rounding uses a straight-through gradient.
    """

    def __init__(self, fixed: tuple[float, int] | None = None, momentum: float = 0.05) -> None:
        super().__init__()
        self.fixed = fixed
        self.momentum = momentum
        self.observing = fixed is None
        self.enabled = False
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))

    def qparams(self) -> tuple[float, int]:
        """(scale, zero point) as TFLite stores them: the range always holds 0 exactly."""
        if self.fixed is not None:
            return self.fixed
        lo, hi = min(float(self.lo), 0.0), max(float(self.hi), 0.0)
        scale = max(hi - lo, 1e-8) / (QMAX - QMIN)
        zero = int(round(QMIN - lo / scale))
        return scale, max(QMIN, min(QMAX, zero))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.observing:
            with torch.no_grad():
                lo, hi = x.min().detach(), x.max().detach()
                if not bool(self.seen):
                    self.lo.copy_(lo), self.hi.copy_(hi), self.seen.fill_(True)
                else:
                    self.lo.lerp_(lo, self.momentum), self.hi.lerp_(hi, self.momentum)
        if not self.enabled:
            return x
        scale, zero = self.qparams()
        q = torch.clamp(torch.round(x / scale) + zero, QMIN, QMAX)
        return x + ((q - zero) * scale - x).detach()


def weight_scales(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 scales (TFLite: zero point 0, values in [-127, 127])."""
    return w.detach().abs().flatten(1).amax(1).clamp_min(1e-8) / 127


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    s = weight_scales(w).view(-1, *([1] * (w.dim() - 1)))
    return w + (torch.clamp(torch.round(w / s), -127, 127) * s - w).detach()


class CausalConv(nn.Module):
    """A convolution over time on [N, C, T], left-padded so output n sees only inputs up to its own
    step; `quantized` fake-quantizes its weight (the bias stays float: TFLite keeps it in int32)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride, 0, dilation, groups)
        self.pad = (kernel - 1) * dilation + 1 - stride
        self.quantized = False

    @property
    def state_frames(self) -> int:
        """Input frames the step form keeps between invokes."""
        return self.pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = fake_quant_weight(self.conv.weight) if self.quantized else self.conv.weight
        c = self.conv
        return F.conv1d(F.pad(x, (self.pad, 0)), w, c.bias, c.stride, 0, c.dilation, c.groups)


class StreamingStudent(nn.Module):
    """features [N, T, 40] (the frontend's u * 0.0390625) -> wake-word logits [N, T // stride]."""

    def __init__(self, spec: StreamingSpec | None = None) -> None:
        super().__init__()
        self.spec = spec = spec or StreamingSpec()
        c = spec.channels
        self.input_q = ActQuant(fixed=(INPUT_SCALE, INPUT_ZERO_POINT))
        self.first = CausalConv(spec.n_features, c, spec.first_kernel, stride=spec.stride)
        self.first_q = ActQuant()
        self.depthwise = nn.ModuleList(
            CausalConv(c, c, k, dilation=d, groups=c)
            for k, d in zip(spec.kernels, spec.dilations, strict=True)
        )
        self.depthwise_q = nn.ModuleList(ActQuant() for _ in spec.kernels)
        self.pointwise = nn.ModuleList(CausalConv(c, c, 1) for _ in spec.kernels)
        self.pointwise_q = nn.ModuleList(ActQuant() for _ in spec.kernels)
        self.head = CausalConv(c, 1, spec.head_frames)
        self.logit_q = ActQuant()

    def convs(self) -> list[CausalConv]:
        return [self.first, *self.depthwise, *self.pointwise, self.head]

    def act_quants(self) -> list[ActQuant]:
        return [self.first_q, *self.depthwise_q, *self.pointwise_q, self.logit_q]

    def quantize(self, enabled: bool = True) -> StreamingStudent:
        """Switch fake-quant on or off. Switching on restarts the activation ranges, so the next training
        batch sets them from the activations the float training ended with: ranges averaged since
        initialisation lag far behind activations that grew, and clip them."""
        for conv in self.convs():
            conv.quantized = enabled
        for q in self.act_quants():
            q.enabled = enabled
            if enabled:
                q.seen.fill_(False)
                q.observing = True
        self.input_q.enabled = enabled
        return self

    def freeze(self) -> StreamingStudent:
        """Stop the activation ranges moving (the last epochs, and always before export)."""
        for q in self.act_quants():
            q.observing = False
        return self

    def hidden(self, features: torch.Tensor) -> torch.Tensor:
        """The last block's activations [N, channels, T // stride]: one vector per step, what the head
        reads (and what frame-level feature matching shapes)."""
        frames = features.shape[1] // self.spec.stride * self.spec.stride
        x = self.input_q(features[:, :frames].transpose(1, 2))
        x = self.first_q(F.relu(self.first(x)))
        for dw, dw_q, pw, pw_q in zip(
            self.depthwise, self.depthwise_q, self.pointwise, self.pointwise_q, strict=True
        ):
            x = dw_q(dw(x))
            x = pw_q(F.relu(pw(x)))
        return x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.logit_q(self.head(hidden)).squeeze(1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(self.hidden(features))
