"""The build chooses OpenMP's wait policy from what the cores are doing before torch loads, a value the
user set wins, and the policy never changes the trained bits; `machine` names what else they depend on."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from edgekd import runtime_env

# a fresh interpreter: OpenMP reads its wait policy once, when torch loads it
CHOOSE = (
    "import json, os, sys; from edgekd import runtime_env; note = runtime_env.choose_wait_policy(2); "
    "sys.stdout.write(json.dumps([os.environ.get('OMP_WAIT_POLICY'), note]))"
)
# a few plain steps of a small student, two threads: the weights' bytes, hashed
TRAIN = """
import hashlib, sys
import numpy as np, torch
from edgekd.models.students import build_student
from edgekd.train.trainer import FitRun, FitSpec, TrainData, fit
torch.set_num_threads(2)
rng = np.random.default_rng(0)
x, y = rng.normal(size=(256, 98, 40)).astype(np.float32), rng.integers(0, 12, 256)
torch.manual_seed(0)
model = build_student("ds_cnn", 12, (98, 40), "S", 0.1)
fit(model, TrainData(x, y, x[:64], y[:64]), FitSpec(epochs=1, lr=1e-3, batch_size=64),
    FitRun(torch.device("cpu"), 0, progress=False))
weights = b"".join(v.numpy().tobytes() for v in model.state_dict().values())
sys.stdout.write(hashlib.sha256(weights).hexdigest())
"""


def _run(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout


def _env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != runtime_env.WAIT_POLICY}, **extra}


def _spin(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def test_importing_the_cli_leaves_the_wait_policy_to_the_build() -> None:
    probe = "import edgekd.cli, os, sys; sys.stdout.write(os.environ.get('OMP_WAIT_POLICY', '-'))"
    assert _run(probe, _env()) == "-"


def test_apply_keeps_torchaos_import_notices_off_the_terminal() -> None:
    """Bench scripts call `apply` as the CLI does: importing torchao (what QAT loads) then prints nothing
    about the CUDA kernels a CPU wheel cannot load, and a user's TF_CPP_MIN_LOG_LEVEL is kept."""
    quiet = "from edgekd import runtime_env; runtime_env.apply(); import torchao.quantization.pt2e"
    out = subprocess.run(
        [sys.executable, "-c", quiet], env=_env(), capture_output=True, text=True, check=True
    )
    assert "Failed to load" not in out.stdout + out.stderr, out.stderr[-1000:]
    probe = "import os; from edgekd import runtime_env; runtime_env.apply(); "
    probe += "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    assert _run(probe, _env(TF_CPP_MIN_LOG_LEVEL="0")).strip() == "0"


def test_the_users_policy_wins() -> None:
    policy, note = json.loads(_run(CHOOSE, _env(OMP_WAIT_POLICY="ACTIVE")))
    assert policy == "ACTIVE" and note == "OMP_WAIT_POLICY=ACTIVE (yours)"


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="busy cores are read from /proc/stat (Linux)")
def test_a_busy_core_makes_openmp_workers_sleep() -> None:
    """A process spinning on every core: the probe counts them, and with no core free for the two
    training threads the build asks OpenMP's idle workers to sleep instead of spinning."""
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(os.cpu_count() or 1)]
    for p in spinners:
        p.start()
    try:
        time.sleep(0.3)
        assert runtime_env.busy_cores() >= 0.7 * len(spinners)
        policy, note = json.loads(_run(CHOOSE, _env()))
    finally:
        stop.set()
        for p in spinners:
            p.join()
    assert policy == "PASSIVE" and "cores were busy at the start" in note


def test_the_wait_policy_changes_speed_not_the_trained_bits() -> None:
    """How idle workers wait is not how the work is split: one config trains the same weights either way."""
    assert _run(TRAIN, _env(OMP_WAIT_POLICY="PASSIVE")) == _run(TRAIN, _env(OMP_WAIT_POLICY="ACTIVE"))


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
