"""Process-wide settings that must be in place before torch loads OpenMP.

On a machine whose cores are busy with something else, OpenMP's default of spinning idle worker
threads (OMP_WAIT_POLICY=ACTIVE) makes each training step wait for a spinning thread that has lost
its core; sleeping workers (PASSIVE) degrade gracefully (`bench/bench_threads.py` measures both).
A value the user set wins.

It also keeps libraries' chatter off the terminal, where it means nothing to a user: litert-torch's
per-pass progress lines (`LITERT_TORCH_SHOW_PROGRESS`, also user-overridable) and torch's deprecation
notice printed each time a prepared QAT graph is copied.
"""

from __future__ import annotations

import os
import warnings

DEFAULT_OMP_WAIT_POLICY = "PASSIVE"


def apply() -> None:
    """Set the defaults (call before the first `import torch`)."""
    os.environ.setdefault("OMP_WAIT_POLICY", DEFAULT_OMP_WAIT_POLICY)
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
