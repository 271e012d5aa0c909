"""Automatic batch size: the largest power-of-two batch whose training step fits the device's memory.

On CUDA the step is simply tried, halving on out-of-memory. On the CPU an OOM kills the process rather
than raising, so the memory a step needs is estimated instead: the bytes autograd saves for the backward
pass, measured at two small probe batches and extrapolated linearly, plus weights and optimizer state,
must fit in half of the available memory (MemAvailable, or a container's limit when lower).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.errors import EdgekdError

MAX_AUTO_BATCH = 256
PROBE_BATCHES = (2, 4)  # CPU memory probes: two sizes give the per-example slope; 2 avoids batch-1 quirks


def fitting_batch_size(module: nn.Module, train: np.ndarray, device: torch.device, fp16: bool = False) -> int:
    """auto_batch_size for training `module` on rows like `train` with AdamW (what `batch_size: 0` means).

    Besides one step's activations, training holds the gradients, two AdamW moments and fit()'s copy
    of the best weights: those are reserved up front.
    """
    params = list(module.parameters())
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    weights = sum(p.numel() * p.element_size() for p in params)

    def step(batch: int) -> None:
        xb = torch.as_tensor(np.resize(train, (batch, *train.shape[1:])), dtype=torch.float32, device=device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            logits = module(xb)
        target = torch.zeros(batch, dtype=torch.long, device=device)
        nn.functional.cross_entropy(logits.float(), target).backward()

    was_training = module.training
    module.train()  # dropout masks and the like are part of a training step's memory
    try:
        start = min(MAX_AUTO_BATCH, 1 << max(0, len(train) - 1).bit_length())  # >= the whole set
        return auto_batch_size(step, device, start, extra_bytes=3 * trainable + weights)
    finally:
        module.zero_grad(set_to_none=True)
        module.train(was_training)


def auto_batch_size(
    step_fn: Callable[[int], None],
    device: torch.device,
    start: int = MAX_AUTO_BATCH,
    *,
    extra_bytes: int = 0,
    budget_bytes: int | None = None,
) -> int:
    """The largest power-of-two batch (at most `start` and 256) whose training step fits in memory.

    `step_fn(b)` runs one forward and backward pass on a batch of `b` without updating any weight;
    `extra_bytes` is what training holds besides that step (optimizer state, weight copies). On CUDA,
    batches are tried from the top with `extra_bytes` held allocated, halving on out-of-memory. On the
    CPU nothing fails cleanly (the machine swaps, or the OOM killer strikes) and torch's allocator keeps
    no statistics, so the bytes autograd saves for the backward pass are counted at two small batches,
    extrapolated linearly and fitted, with `extra_bytes`, into `budget_bytes` (default: half of the
    available memory).
    """
    top = 1 << (max(1, min(start, MAX_AUTO_BATCH)).bit_length() - 1)
    if device.type == "cuda":
        return _cuda_batch_size(step_fn, device, top, extra_bytes)
    budget = available_memory_bytes() // 2 if budget_bytes is None else budget_bytes
    need = step_bytes_estimate(step_fn)
    batch = top
    while batch >= 1 and extra_bytes + need(batch) > budget:
        batch //= 2
    if batch == 0:
        raise EdgekdError(
            f"batch_size 0 (automatic): even one example needs ~{(extra_bytes + need(1)) / 1e9:.2f} GB to "
            f"train, more than the {budget / 1e9:.2f} GB budget (half of the available memory); enable "
            "teacher.gradient_checkpointing, use a smaller checkpoint or free memory"
        )
    return batch


def step_bytes_estimate(step_fn: Callable[[int], None]) -> Callable[[int], float]:
    """Bytes a step of batch b saves for backward, extrapolated from two probe batches (b -> bytes)."""
    lo, hi = PROBE_BATCHES
    at_lo, at_hi = saved_tensor_bytes(step_fn, lo), saved_tensor_bytes(step_fn, hi)
    per_example = max(0.0, (at_hi - at_lo) / (hi - lo))
    return lambda batch: at_lo + per_example * (batch - lo)


def saved_tensor_bytes(step_fn: Callable[[int], None], batch: int) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of `step_fn(batch)`.

    These are the activations -- the part of a step's memory that grows with the batch -- and they
    are all alive together when backward starts, so distinct storages never share an address here.
    """
    sizes: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        sizes[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step_fn(batch)
    return sum(sizes.values())


def available_memory_bytes() -> int:
    """MemAvailable, lowered to the cgroup's remaining allowance (in a container /proc shows the host)."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        raise EdgekdError(
            "batch_size 0 (automatic) sizes CPU batches from /proc/meminfo, which this system lacks; set "
            "an explicit batch size"
        ) from None
    found = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    available = int(found.group(1)) * 1024 if found else 0
    cgroups = (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    )
    for limit_file, usage_file in cgroups:
        try:
            limit, usage = Path(limit_file).read_text().strip(), int(Path(usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or a huge number: no limit
            available = min(available, int(limit) - usage)
    return max(0, available)


def _cuda_batch_size(step_fn: Callable[[int], None], device: torch.device, top: int, extra_bytes: int) -> int:
    try:
        reserve = torch.empty(extra_bytes, dtype=torch.uint8, device=device) if extra_bytes else None
    except torch.cuda.OutOfMemoryError:
        raise EdgekdError(
            f"the teacher's weights and optimizer state (~{extra_bytes / 1e9:.1f} GB) do not fit on "
            f"{device}; use a smaller checkpoint or teacher.precision: fp16"
        ) from None
    batch = top
    try:
        while batch >= 1:
            try:
                step_fn(batch)
                return batch
            except torch.cuda.OutOfMemoryError:
                pass  # leave the except block first, so its traceback releases the step's tensors
            batch //= 2
            torch.cuda.empty_cache()
        raise EdgekdError(
            f"batch_size 0 (automatic): not even one example trains on {device} without running out of "
            "memory; enable teacher.gradient_checkpointing, set teacher.precision: fp16 or use a smaller "
            "checkpoint"
        )
    finally:
        del reserve
        torch.cuda.empty_cache()
