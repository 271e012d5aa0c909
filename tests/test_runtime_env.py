"""The CLI sets OpenMP's wait policy before torch loads, and a value the user set wins; `machine` names
what else a training's bits depend on."""

from __future__ import annotations

import os
import subprocess
import sys

from edgekd.runtime_env import DEFAULT_OMP_WAIT_POLICY

PROBE = "import edgekd.cli, os, sys; sys.stdout.write(os.environ['OMP_WAIT_POLICY'])"


def _policy_after_import(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout


def test_cli_defaults_to_sleeping_openmp_workers_and_keeps_the_users_choice() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_after_import(env) == DEFAULT_OMP_WAIT_POLICY == "PASSIVE"
    assert _policy_after_import({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_machine_names_the_instruction_set_and_threads_torch_trains_with() -> None:
    import torch

    from edgekd.runtime_env import machine

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = machine()
    finally:
        torch.set_num_threads(before)
    assert one["threads"] == 1 and machine()["threads"] == before
    assert one["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability() != ""
    assert one["arch"] and one["cpu"] and one["cpu"] != "unknown"
