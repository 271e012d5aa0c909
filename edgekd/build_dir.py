"""Reading a finished build directory: what every command that takes a BUILD argument starts with."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from edgekd.config import BuildConfig
from edgekd.errors import EdgekdError


def load_build_config(build: Path) -> BuildConfig:
    """The merged config a build was made with (clear errors for a missing or corrupt file)."""
    path = build / "config.json"
    if not path.is_file():
        raise EdgekdError(
            f"{build}: not an edgekd build directory (no config.json); run `edgekd build` first"
        )
    try:
        return BuildConfig.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise EdgekdError(
            f"{path}: not a valid edgekd build config ({first}); re-run `edgekd build`"
        ) from None
