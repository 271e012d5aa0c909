"""The slow runtimes in a child process: `python -m edgekd.verify.runtime_worker MODEL_DIR IN.npy OUT RT...`.

TFLite Micro (its reference kernels, one clip at a time, holding the GIL for the whole invoke) and
LiteRT's reference kernels are the slowest rows of a parity table: 43 s and 23 s of a 4,890-clip
`edgekd eval` on this 2-core machine. Run in their own process while the parent computes the teacher
and the torch rows, they cost little wall time. A plain subprocess, not multiprocessing: spawn would
re-import the caller's `__main__`, which a user's script need not guard.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edgekd.artifacts import write_npy
from edgekd.errors import EdgekdError

CHUNK = 64  # clips per progress step


@contextlib.contextmanager
def running(
    model_dir: Path, x: np.ndarray, runtimes: list[str], progress: bool
) -> Iterator[Callable[[], dict[str, np.ndarray]]]:
    """Score `x` with `runtimes` (tflm, litert; tflm_int8 for quantized inputs and raw outputs) in a
    child process while the block runs; the yielded call waits for their outputs and raises what the
    child raised, as an EdgekdError naming the model. Leaving the block, by an error too, stops the
    child and deletes its temporary files."""
    folder = Path(tempfile.mkdtemp(prefix="edgekd-runtimes-"))
    try:
        write_npy(folder / "x.npy", x)
        command = [
            sys.executable,
            "-m",
            __name__,
            str(model_dir),
            str(folder / "x.npy"),
            str(folder),
            *runtimes,
        ]
        child = subprocess.Popen([*command, *(["--progress"] if progress else [])], stderr=subprocess.PIPE)

        def result() -> dict[str, np.ndarray]:
            _, err = child.communicate()
            if child.returncode != 0:
                tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
                raise EdgekdError(f"{model_dir}: runtime worker ({', '.join(runtimes)}) failed: {tail[0]}")
            return {name: np.load(folder / f"{name}.npy") for name in runtimes}

        try:
            yield result
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str]) -> int:
    from tqdm import tqdm

    from edgekd.verify.runners import LiteRTRunner, TFLMRunner

    model_dir, x_path, out = Path(argv[0]), Path(argv[1]), Path(argv[2])
    names = [a for a in argv[3:] if not a.startswith("--")]
    x = np.load(x_path, mmap_mode="r")
    tflite = model_dir / "model.tflite"
    predictors = {  # tflm_int8: already-quantized inputs in, raw outputs out (the stream's device chain)
        "tflm": lambda: TFLMRunner(tflite).predict,
        "litert": lambda: LiteRTRunner(tflite).predict,
        "tflm_int8": lambda: TFLMRunner(tflite).predict_quantized,
    }
    try:
        for name in names:
            predict = predictors[name]()
            steps = tqdm(
                range(0, len(x), CHUNK),
                desc=f"verify {name}",
                unit="batch",
                disable="--progress" not in argv,
                leave=False,
            )
            write_npy(
                out / f"{name}.npy", np.concatenate([predict(np.asarray(x[i : i + CHUNK])) for i in steps])
            )
    except EdgekdError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
