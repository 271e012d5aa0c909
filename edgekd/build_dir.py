"""A finished build directory: its layout, and reading its parts with typed results and clear errors.

Every command that takes a BUILD argument (`eval`, `compare`, `detect`/firmware, the per-layer
comparison) and the build itself, when it assembles one, name the files through `BuildDir`, so the
layout is written down once:

    build/<target>/
      model.tflite  model.onnx  model_data.h  model_data.cc   the artifacts (ARTIFACTS), and
      model.names.json                                        the TFLite tensor names, kept out of flash
      parity.json  manifest.json  config.json                 the verdict, the facts, the merged config
      report.md  report.html  model_settings.h  ...           reports and the firmware package
      weights/{float.pt, qat.pt, teacher_head.pt, teacher_hf/}
      logs/{parity,parity_views,holdout,real_unlabeled}_logits.npz  logs/training.json  logs/layers.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgekd.config import BuildConfig
from edgekd.errors import EdgekdError

ARTIFACTS = ("model.tflite", "model.names.json", "model.onnx", "model_data.h", "model_data.cc")


@dataclass(frozen=True)
class BuildDir:
    """The layout of one build directory (finished, staged or rejected)."""

    path: Path

    CONFIG = "config.json"
    MANIFEST = "manifest.json"
    PARITY = "parity.json"
    TFLITE = "model.tflite"
    ONNX = "model.onnx"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def tflite(self) -> Path:
        return self.path / self.TFLITE

    @property
    def onnx(self) -> Path:
        return self.path / self.ONNX

    @property
    def weights(self) -> Path:
        """float.pt, qat.pt and the teacher (teacher_head.pt or teacher_hf/): what `eval` rebuilds from."""
        return self.path / "weights"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def logits(self, section: str) -> Path:
        """Per-clip logits behind a parity section: `parity`, `holdout` or `real_unlabeled`."""
        return self.logs / f"{section}_logits.npz"

    def wake_word_manifest(self) -> Path | None:
        """The ESPHome manifest of a wake-word build (`edgekd.build_wakeword`), or None."""
        try:
            manifest = json.loads((self.path / self.MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        name = manifest.get("esphome_manifest") if manifest.get("kind") == "wakeword" else None
        return self.path / name if isinstance(name, str) else None

    def require(self, *names: str) -> None:
        """Fail naming every missing part, for commands that rebuild runtimes from the directory."""
        if not self.path.is_dir():
            raise EdgekdError(f"{self.path}: no such build directory; run `edgekd build` first")
        missing = [n for n in names if not (self.path / n).exists()]
        if missing and self.wake_word_manifest() is not None:
            raise EdgekdError(
                f"{self.path}: a wake-word build for ESPHome, not a keyword classifier; run it as the "
                f"device does with `edgekd esphome {self.wake_word_manifest()} --audio FILE_OR_DIR`, and "
                "compare wake-word models on the same audio with bench/bench_wakeword.py --model A.json "
                "--model B.json"
            )
        if missing:
            raise EdgekdError(
                f"{self.path}: incomplete build directory, missing {missing}; re-run `edgekd build`"
            )

    def config(self) -> BuildConfig:
        """The merged config the build was made with."""
        path = self.path / self.CONFIG
        if not path.is_file():
            raise EdgekdError(
                f"{self.path}: not an edgekd build directory (no {self.CONFIG}); run `edgekd build` first"
            )
        try:
            return BuildConfig.model_validate(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise EdgekdError(
                f"{path}: not a valid edgekd build config ({first}); re-run `edgekd build`"
            ) from None

    def manifest(self) -> dict[str, Any]:
        return self._json(self.MANIFEST)

    def parity(self) -> dict[str, Any]:
        return self._json(self.PARITY)

    def features_shape(self) -> tuple[int, ...]:
        """The teacher's input shape, which restoring its checkpoint needs."""
        return tuple(self.manifest()["teacher"]["features_shape"])

    def _json(self, name: str) -> dict[str, Any]:
        path = self.path / name
        if not path.is_file():
            raise EdgekdError(f"{path}: no {name}; pass the directory `edgekd build` wrote (build/<target>)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EdgekdError(f"{path}: not valid JSON ({e}); re-run `edgekd build`") from None
        if not isinstance(data, dict):
            raise EdgekdError(f"{path}: expected a JSON object; re-run `edgekd build`")
        return data
