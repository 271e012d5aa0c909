"""Teacher stage: fit the teacher on the training views and cache its logits for every clip and view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.artifacts import write_npz
from edgekd.config import BuildConfig
from edgekd.data.corpus import Corpus
from edgekd.pipeline import Stages
from edgekd.stages.data import as_float


def stage_teacher(
    cfg: BuildConfig,
    corpus_dir: Path,
    views_dir: Path,
    views_key: str,
    stages: Stages,
    device: torch.device,
    progress: bool,
) -> tuple[Path, str]:
    """Fit the teacher on the train views; cache its logits for every train view, validation and test clip."""
    from edgekd.models.teachers import build_teacher

    def produce(d: Path) -> dict[str, Any]:
        corpus = Corpus.load(corpus_dir / "corpus.npz")
        views = np.load(views_dir / "views.npz")
        teacher = build_teacher(cfg.teacher, cfg.classes, cfg.seed, device)
        y_train = corpus.labels[views["clip"]]
        val, test = corpus.indices("validation"), corpus.indices("test")
        f_train = teacher.features(as_float(views["audio"]))
        f_val = teacher.features(as_float(corpus.clips[val]))
        f_test = teacher.features(as_float(corpus.clips[test]))
        result = teacher.fit(f_train, y_train, f_val, corpus.labels[val], progress=progress)
        logits = {
            "train": teacher.logits(f_train),
            "validation": teacher.logits(f_val),
            "test": teacher.logits(f_test),
        }
        write_npz(d / "logits.npz", **logits)
        teacher.save(d)
        acc = {
            k: float((v.argmax(1) == (y_train if k == "train" else corpus.labels[corpus.indices(k)])).mean())
            for k, v in logits.items()
        }
        return {
            "name": teacher.name,
            "why": teacher.why,
            "accuracy": acc,
            "identity": teacher.identity(),
            "features_shape": list(f_train.shape[1:]),
            "history": result.history,
            "best_epoch": result.best_epoch,
        }

    return stages.run(
        "teacher",
        {
            "views": views_key,
            "teacher": cfg.teacher.model_dump(mode="json"),
            "classes": cfg.classes,
            "seed": cfg.seed,
        },
        produce,
    )
