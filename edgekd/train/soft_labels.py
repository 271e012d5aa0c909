"""The soft-label cache: the teacher's outputs for every training example, computed once.

Running a large teacher inside the student's training loop would make every KD epoch cost a teacher
forward pass per example; instead the teacher stage writes its logits (and pooled embeddings, for
feature matching) for every clip and augmented view to `.npy` files. The files live in the teacher
stage's content-addressed cache directory (its key hashes the views and the teacher config), and
training opens them memory-mapped, so a KD step costs one row gather more than a plain step.

For large label sets only the top-k logits per example are stored (`top_k`); training then does
subset KD over the union of the teacher's and the student's top-k (see `losses.expand_topk`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekd.artifacts import write_npy
from edgekd.train.losses import expand_topk


@dataclass
class SoftLabels:
    """Teacher outputs per training row: dense logits, or top-k (values, classes) over `n_classes`."""

    logits: np.ndarray  # [N, C] dense, or [N, k] top-k values
    n_classes: int
    index: np.ndarray | None = None  # [N, k] class ids when top-k
    embeddings: np.ndarray | None = None  # [N, D] standardised teacher embeddings (feature matching)

    @classmethod
    def from_logits(
        cls, logits: np.ndarray, top_k: int = 0, embeddings: np.ndarray | None = None
    ) -> SoftLabels:
        logits = np.asarray(logits, dtype=np.float32)
        n_classes = logits.shape[1]
        if 0 < top_k < n_classes:
            index = np.argsort(-logits, axis=1, kind="stable")[:, :top_k].astype(np.int32)
            return cls(np.take_along_axis(logits, index, 1), n_classes, index, embeddings)
        return cls(logits, n_classes, None, embeddings)

    def __len__(self) -> int:
        return len(self.logits)

    def concat(self, other: SoftLabels) -> SoftLabels:
        """Rows of `self` then `other` (labelled views, then unlabeled clips)."""
        if (self.index is None) != (other.index is None) or self.n_classes != other.n_classes:
            raise ValueError("soft labels differ in layout; build both with the same top_k and classes")

        if (self.embeddings is None) != (other.embeddings is None):
            raise ValueError("only one side has teacher embeddings; feature matching needs both")

        def cat(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return None if a is None or b is None else np.concatenate([a, b])

        return SoftLabels(
            np.concatenate([self.logits, other.logits]),
            self.n_classes,
            cat(self.index, other.index),
            cat(self.embeddings, other.embeddings),
        )

    def teacher_logits(self, rows: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        """Dense teacher logits for a batch (-inf outside the top-k union when the cache is top-k)."""
        idx = np.sort(rows.numpy())  # sorted gathers read a memory map sequentially
        order = np.argsort(np.argsort(rows.numpy()))
        values = torch.from_numpy(np.asarray(self.logits[idx])[order]).to(student_logits.device)
        if self.index is None:
            return values
        classes = torch.from_numpy(np.asarray(self.index[idx])[order].astype(np.int64)).to(values.device)
        return expand_topk(values, classes, self.n_classes, student_logits.detach())

    def teacher_embeddings(self, rows: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        if self.embeddings is None:
            return None
        return torch.from_numpy(np.asarray(self.embeddings[rows.numpy()], dtype=np.float32)).to(device)

    def save(self, folder: Path, prefix: str) -> None:
        """`<prefix>_logits.npy` (+ `_index`, `_embeddings`), atomically, ready for memory mapping."""
        write_npy(folder / f"{prefix}_logits.npy", self.logits)
        if self.index is not None:
            write_npy(folder / f"{prefix}_index.npy", self.index)
        if self.embeddings is not None:
            write_npy(folder / f"{prefix}_embeddings.npy", self.embeddings)

    @classmethod
    def load(cls, folder: Path, prefix: str, n_classes: int, embeddings: bool = False) -> SoftLabels:
        def opt(name: str) -> np.ndarray | None:
            p = folder / f"{prefix}_{name}.npy"
            return np.load(p, mmap_mode="r") if p.exists() else None

        emb = opt("embeddings") if embeddings else None
        return cls(np.load(folder / f"{prefix}_logits.npy", mmap_mode="r"), n_classes, opt("index"), emb)


def standardise(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance per dimension (statistics of `reference`, the training views), so the
    feature loss weighs every dimension alike and unlabeled clips share the labelled clips' scale."""
    mean = reference.mean(axis=0, keepdims=True)
    std = reference.std(axis=0, keepdims=True) + 1e-6
    return ((embeddings - mean) / std).astype(np.float32)
