"""Process-wide settings that must be in place before torch loads OpenMP.

On a machine whose cores are busy with something else, OpenMP's default of spinning idle worker
threads (OMP_WAIT_POLICY=ACTIVE) makes each training step wait for a spinning thread that has lost
its core; sleeping workers (PASSIVE) degrade gracefully (`bench/bench_threads.py` measures both).
A value the user set wins.

It also keeps libraries' chatter off the terminal, where it means nothing to a user: litert-torch's
per-pass progress lines (`LITERT_TORCH_SHOW_PROGRESS`, also user-overridable) and torch's deprecation
notice printed each time a prepared QAT graph is copied.

`machine()` names what else a training's bits depend on, for the manifest.
"""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path
from typing import Any

DEFAULT_OMP_WAIT_POLICY = "PASSIVE"


def apply() -> None:
    """Set the defaults (call before the first `import torch`)."""
    os.environ.setdefault("OMP_WAIT_POLICY", DEFAULT_OMP_WAIT_POLICY)
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What a training's bits depend on besides its seed, config and data: torch picks its CPU kernels by
    instruction set (AVX2, AVX-512, ...) and sums in another order with another thread count, so two
    machines that differ here train different weights from one config. Measured: kws12 seed 0, one code
    and config, shipped 75.0 % of `real-commands-dev` keywords on an AVX2 host and 69.6 % on an AVX-512
    one (docs/DESIGN.md, stop 56)."""
    import torch

    return {
        "arch": platform.machine(),
        "cpu": _cpu_model(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
