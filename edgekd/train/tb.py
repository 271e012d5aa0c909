"""TensorBoard event files for a training run (`tensorboard --logdir <build>/logs/tensorboard`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def writer_for(log_dir: Path | None) -> Any:
    """A `SummaryWriter` writing under `log_dir`, or None when no directory is given."""
    if log_dir is None:
        return None
    with warnings.catch_warnings():  # tensorboard's protobuf/pkg_resources deprecation chatter
        warnings.simplefilter("ignore")
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(log_dir), flush_secs=30)
