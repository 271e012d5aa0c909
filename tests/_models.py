"""A tiny DS-CNN keyword spotter for QAT/export tests: the op mix of the real students, in milliseconds."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

N_FRAMES, N_MELS, N_CLASSES = 98, 40, 12

# On a shared 2-core machine, torch's default of one intra-op thread per core spins against the
# other workers: a training step of this model took ~0.7 s with 2 threads and ~15 ms with 1.
torch.set_num_threads(1)


class TinyDsCnn(nn.Module):
    """[N, 98, 40] features -> [N, 12] logits via conv, depthwise-separable block, average pool."""

    def __init__(self, channels: int = 16, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, (10, 4), stride=(2, 2)),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.unsqueeze(1)).flatten(1))


def realistic_features(n: int, seed: int) -> torch.Tensor:
    """Smooth random spectrogram-like patterns in 0..26, the range of the device's frontend."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, 8, 6))
    t = np.linspace(0, 7, N_FRAMES)
    f = np.linspace(0, 5, N_MELS)
    ti, fi = np.floor(t).astype(int), np.floor(f).astype(int)
    tw, fw = (t - ti)[None, :, None], (f - fi)[None, None, :]
    ti1, fi1 = np.minimum(ti + 1, 7), np.minimum(fi + 1, 5)
    grid = (
        coarse[:, ti][:, :, fi] * (1 - tw) * (1 - fw)
        + coarse[:, ti1][:, :, fi] * tw * (1 - fw)
        + coarse[:, ti][:, :, fi1] * (1 - tw) * fw
        + coarse[:, ti1][:, :, fi1] * tw * fw
    )
    noise = rng.normal(0, 0.05, grid.shape)
    return torch.from_numpy(np.clip((grid + noise) * 26.0, 0.0, 26.0)).float()


def energy_labels(features: torch.Tensor) -> torch.Tensor:
    """A learnable label that survives global pooling: which of 12 equally likely loudness bands a
    clip falls in, so a few steps give a model whose predictions spread over classes."""
    return torch.bucketize(features.mean(dim=(1, 2)), _energy_edges())


@functools.cache
def _energy_edges() -> torch.Tensor:
    means = realistic_features(1024, seed=999_999).mean(dim=(1, 2))
    return torch.quantile(means, torch.linspace(0, 1, N_CLASSES + 1)[1:-1])


def train_steps(
    model: torch.nn.Module,
    steps: int,
    seed: int,
    batch: int = 32,
    optimizer: torch.optim.Optimizer | None = None,
) -> list[float]:
    """A plain optimizer loop (Adam, lr 1e-2 unless given), as a caller of `prepare_qat` would write it;
    returns the losses."""
    model.train()
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        x = realistic_features(batch, seed=seed * 1000 + step)
        loss = torch.nn.functional.cross_entropy(model(x), energy_labels(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
