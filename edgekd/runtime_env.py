"""Process-wide settings that must be in place before torch loads OpenMP.

OpenMP's wait policy is chosen per build, from what the cores are doing when it starts
(`choose_wait_policy`). libgomp's default lets an idle worker spin ~3 ms before it sleeps: on a free
machine that is the fastest (the esp32s3 student's step: 35 ms, where sleeping workers, PASSIVE, take
~53). On a machine whose cores are busy with something else, a spinning worker that has lost its core
holds every step until the scheduler gives it back, and sleeping workers degrade far more gracefully
(85 ms vs 150-700). `bench/bench_threads.py` measures both. A value the user set wins.

It also keeps libraries' chatter off the terminal, where it means nothing to a user: litert-torch's
per-pass progress lines (`LITERT_TORCH_SHOW_PROGRESS`, also user-overridable), TensorFlow's C++ log, torchao's
notices about CUDA kernels a CPU wheel cannot load and torch's deprecation notice printed each time a prepared
QAT graph is copied. The CLI calls `apply`, and so do the bench scripts that build or score builds.

`machine()` names what else a training's bits depend on, for the manifest.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

WAIT_POLICY = "OMP_WAIT_POLICY"
BUSY_POLICY = "PASSIVE"  # what a busy machine gets; an idle one keeps OpenMP's own default
_choice: str | None = None  # what choose_wait_policy decided in this process, and why


def apply() -> None:
    """Set the defaults (call before the first `import torch`)."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # torchao warns at import about CUDA-only kernels a CPU wheel cannot load: noise for every user here.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    # torch.export logs a pytree registration notice for torchao's enums on every QAT graph it rebuilds.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


def busy_cores(probe_s: float = 0.2) -> float | None:
    """How many cores other work keeps busy now: /proc/stat's busy share over `probe_s` seconds (this
    process sleeps meanwhile) times the cores it counts; the 1-minute load average where there is no
    /proc/stat; None where neither exists."""

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]  # user .. steal
        except (OSError, ValueError):
            return None
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    first = sample()
    if first is None:
        try:
            return os.getloadavg()[0]
        except OSError:
            return None
    time.sleep(probe_s)
    second = sample()
    if second is None:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return (total - idle) / total * (os.cpu_count() or 1) if total > 0 else 0.0


def choose_wait_policy(threads: int) -> str:
    """Leave OpenMP's default (spin, then sleep) when `threads` cores are free, set PASSIVE when other
    work holds them; say which and why. Call before torch is imported: OpenMP reads the policy once,
    when torch loads it. The policy changes how idle workers wait, never how the work is split, so the
    trained bits are the same either way (tests/test_runtime_env.py)."""
    global _choice
    if WAIT_POLICY in os.environ:
        _choice = f"{WAIT_POLICY}={os.environ[WAIT_POLICY]} (yours)"
    elif "torch" in sys.modules:
        _choice = "OpenMP's default (torch was loaded before the build could choose)"
    else:
        busy, cores = busy_cores(), os.cpu_count() or 1
        if busy is not None and busy > max(0, cores - threads) + 0.5:
            os.environ[WAIT_POLICY] = BUSY_POLICY
            _choice = (
                f"{WAIT_POLICY}={BUSY_POLICY}: {busy:.1f} of {cores} cores were busy at the start, so "
                "OpenMP's workers sleep when idle (set OMP_WAIT_POLICY to choose)"
            )
        else:
            _choice = f"OpenMP's default (spin, then sleep): {busy or 0:.1f} of {cores} cores busy at start"
    return _choice


def wait_policy() -> str:
    """The wait policy this process's OpenMP runs with, and why (for the manifest beside the timings)."""
    if _choice is not None:
        return _choice
    value = os.environ.get(WAIT_POLICY)
    return f"{WAIT_POLICY}={value}" if value else "OpenMP's default (spin, then sleep)"


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
