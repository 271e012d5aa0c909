"""Data stages: the corpus, its augmented training views, and the target frontend's features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edgekd.artifacts import write_npz
from edgekd.audio.augment import augment, view_rng
from edgekd.audio.frontend import compute_features, make_frontend
from edgekd.audio.io import to_pcm16
from edgekd.config import BuildConfig
from edgekd.data.corpus import Corpus, build_corpus
from edgekd.pipeline import Stages, corpus_fingerprint


def stage_corpus(cfg: BuildConfig, stages: Stages, progress: bool) -> tuple[Path, str]:
    def produce(d: Path) -> dict[str, Any]:
        corpus = build_corpus(cfg, progress=progress)
        corpus.save(d / "corpus.npz")
        return {"summary": corpus.summary(), "skipped": corpus.skipped, "groups": len(set(corpus.groups))}

    return stages.run("corpus", corpus_fingerprint(cfg), produce)


def stage_views(
    cfg: BuildConfig, corpus_dir: Path, corpus_key: str, stages: Stages, progress: bool
) -> tuple[Path, str]:
    """Training audio: each train clip clean plus `augment.views` augmented views (deterministic per view)."""

    def produce(d: Path) -> dict[str, Any]:
        corpus = Corpus.load(corpus_dir / "corpus.npz")
        train = corpus.indices("train")
        clip_idx, view_idx, audio = [], [], []
        for i in tqdm(train, desc="augmenting", unit="clip", disable=not progress):
            x = corpus.clips[i].astype(np.float32) / 32768.0
            for v in range(cfg.data.augment.views + 1):
                y = (
                    x
                    if v == 0
                    else augment(x, cfg.data.augment, view_rng(cfg.seed, int(i), v), corpus.backgrounds)
                )
                audio.append(to_pcm16(y))
                clip_idx.append(i)
                view_idx.append(v)
        write_npz(d / "views.npz", audio=np.stack(audio), clip=np.array(clip_idx), view=np.array(view_idx))
        return {"views": len(audio)}

    return stages.run(
        "views",
        {"corpus": corpus_key, "augment": cfg.data.augment.model_dump(mode="json"), "seed": cfg.seed},
        produce,
    )


def as_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768.0


def stage_features(
    cfg: BuildConfig, corpus_dir: Path, views_dir: Path, views_key: str, stages: Stages, progress: bool
) -> tuple[Path, str]:
    """Student features through the target's frontend: one code path for train, eval and calibration."""

    def produce(d: Path) -> dict[str, Any]:
        corpus = Corpus.load(corpus_dir / "corpus.npz")
        views = np.load(views_dir / "views.npz")
        fe = make_frontend(cfg.frontend.name)
        arrays = {
            "train": compute_features(fe, as_float(views["audio"]), progress=progress),
            "y_train": corpus.labels[views["clip"]],
        }
        for split in ("validation", "test"):
            idx = corpus.indices(split)
            arrays[split] = compute_features(fe, as_float(corpus.clips[idx]), progress=progress)
            arrays[f"y_{split}"] = corpus.labels[idx]
        write_npz(d / "features.npz", **arrays)
        return {"shape": list(arrays["train"].shape[1:]), "frontend": fe.params()}

    return stages.run(
        "features", {"views": views_key, "frontend": cfg.frontend.model_dump(mode="json")}, produce
    )
