"""Wake-word stages (`edgekd build --target esphome --wake-word PHRASE`).

    corpus -> examples -> frame teacher -> student (QAT) -> export -> calibrate -> verify

- **examples**: the corpus's training clips (augmented views) and 1 s windows of real speech from the
  pool's `fit` part, each placed after 1 s of other audio and run through the micro frontend as one
  piece, with per-step targets (`edgekd.train.wakeword.in_context`) and the teacher's speech embeddings;
- **frame teacher**: a head on those embeddings, whose per-80-ms probabilities the student distils
  (skipped with `wakeword.alpha: 0`);
- **student**: the streaming student through the QAT schedule;
- **mine / fine-tune** (`wakeword.mining_rounds`, each round): the student runs over the pool's `fit` part as
  one stream per source, the windows where it fires are kept (`edgekd.train.wakeword.hard_windows`), and the
  frozen QAT student is fine-tuned with every round's windows drawn into each epoch;
- **export**: its step form, the flatbuffer ESPHome loads, and the arena TFLite Micro needs for it;
- **calibrate**: the (cutoff, window) with the best recall on the synthetic *validation* clips among
  those within `gates.max_fa_per_hour` on the pool's `calibration` part, which nothing trained on;
- **verify**: the ESPHome contract, the budget, false accepts per hour on the pool's `check` part and
  recall of the *test* clips (quiet and in real speech) and of the user's real recordings
  (`verify.holdout`), all through the component's own loop on TFLite Micro.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from edgekd.artifacts import write_json
from edgekd.audio.channel import codec
from edgekd.audio.frontend import MICRO_FEATURE_SCALE, MicroFrontend
from edgekd.audio.io import SAMPLE_RATE, from_pcm16, read_wav
from edgekd.config import BuildConfig
from edgekd.data.corpus import Corpus, keyword_clips
from edgekd.data.real_pool import HELD_OUT_POOL, negative_recordings, pool_fingerprint
from edgekd.data.views import background_speech, make_views
from edgekd.esphome import contract
from edgekd.esphome.engine import WakeWordEngine
from edgekd.esphome.measure import NegativeRuns, PositiveRun
from edgekd.pipeline import StageOutput, Stages, folder_fingerprint
from edgekd.runtime_env import machine
from edgekd.stats import clopper_pearson, poisson_rate_interval, poisson_rate_upper, within_fa_budget
from edgekd.stream import BUILTIN, audio_files
from edgekd.train.spec_augment import SpecAugment
from edgekd.train.wakeword import (
    Examples,
    WakeTrainConfig,
    distil_targets,
    fine_tune,
    fit_teacher,
    hard_windows,
    in_context,
    train,
)
from edgekd.verify.budget import check
from edgekd.verify.parity import WAKEWORD_SCHEMA, stream_gates
from edgekd.words import slug

EXAMPLES = "examples.npz"
STUDENT = "student.pt"
MINED = "mined.npz"
CONTEXT_GAIN = 0.3  # real speech under a context second and the real negatives: about -20 dBFS peaks
STRIDE = 3  # feature frames per invoke (30 ms): `StreamingSpec.stride`


def train_config(cfg: BuildConfig) -> WakeTrainConfig:
    w = cfg.wakeword
    assert w is not None
    return WakeTrainConfig(
        epochs=w.epochs,
        quantize_epoch=w.quantize_epoch,
        freeze_epoch=w.freeze_epoch,
        lr=w.lr,
        batch=w.batch_size,
        positive_steps=w.positive_steps,
        teacher_epochs=w.teacher_epochs,
        alpha=w.alpha,
        temperature=w.temperature,
        temperature_start=w.temperature_start,
        feature_weight=w.feature_weight,
        domain_weight=w.domain_weight,
        spec_augment=SpecAugment.of(w, fill="mean"),
        mining_epochs=w.mining_epochs,
        mining_share=w.mining_share,
        seed=cfg.seed,
    )


def to_u16(features: np.ndarray) -> np.ndarray:
    """Micro-frontend features as the frontend's own uint16 (exact; half the bytes on disk)."""
    return np.round(features / np.float32(MICRO_FEATURE_SCALE)).astype(np.uint16)


def from_u16(u16: np.ndarray) -> np.ndarray:
    return u16.astype(np.float32) * np.float32(MICRO_FEATURE_SCALE)


def real_windows(
    minutes: float, gain_db: tuple[float, float], seed: int, codec_share: float = 0.0
) -> np.ndarray:
    """1 s windows of the pool's `fit` part (each source an equal share), a random `codec_share` of them
    heard through a telephone channel, levelled with a random gain in `gain_db` (the augmentation's range)."""
    if not minutes:
        return np.zeros((0, SAMPLE_RATE), np.float32)
    real = np.concatenate([r.audio for r in negative_recordings("fit", minutes, seed + 7)])
    n = len(real) // SAMPLE_RATE
    windows = real[: n * SAMPLE_RATE].reshape(n, SAMPLE_RATE)
    rng = np.random.default_rng(seed)
    gain = 10 ** (rng.uniform(*gain_db, (n, 1)) / 20)
    phone = np.flatnonzero(rng.random(n) < codec_share)
    if len(phone):  # `windows` views `real`, a fresh array of this call: coded in place, no copy of the hours
        windows[phone] = [codec(windows[i], rng) for i in phone]
    peak = np.abs(windows).max(1, keepdims=True) + 1e-6
    return (windows * gain * CONTEXT_GAIN / peak).astype(np.float32)


def stage_examples(cfg: BuildConfig, corpus: StageOutput, stages: Stages, progress: bool) -> StageOutput:
    w = cfg.wakeword
    assert w is not None

    def produce(d: Path) -> dict[str, Any]:
        from edgekd.models.speech_embedding import SpeechEmbedding

        clips = Corpus.load(corpus.dir / "corpus.npz")
        speech = background_speech(cfg.data.augment, cfg.seed, part="fit")
        train = clips.indices("train")
        # the user's own recordings (`data.extra`) get `extra_weight` times the views, as in a classifier
        # build: a few dozen real clips are otherwise lost among thousands of synthetic ones
        extra = clips.extra_rows()[train]
        weights = np.where(extra, cfg.data.extra_weight, 1)
        audio, clip_idx, _ = make_views(
            clips.clips, train, cfg.data.augment, cfg.seed, clips.backgrounds, progress,
            weights=weights, speech=speech,
        )  # fmt: skip
        positive = clips.labels[clip_idx] == clips.classes.index(cfg.labels[0])
        real = real_windows(
            w.real_negatives_minutes, cfg.data.augment.gain_db, cfg.seed, w.real_negatives_codec
        )
        talk = []  # real talk as context too: the phrase often follows other speech
        if speech is not None:
            starts = range(0, len(speech) - SAMPLE_RATE, 7 * SAMPLE_RATE)
            talk = [CONTEXT_GAIN * np.stack([speech[i : i + SAMPLE_RATE] for i in starts])]
        # each array built once and the int16 views dropped: the stage holds hours of audio (peak RSS)
        contexts = np.concatenate([from_pcm16(audio[~positive]), *talk])
        audio = np.concatenate([from_pcm16(audio), real])
        data = in_context(
            audio,
            np.concatenate([positive, np.zeros(len(real), bool)]),
            contexts,
            STRIDE,
            w.positive_steps,
            cfg.seed,
            SpeechEmbedding(pad_ms=0) if w.alpha > 0 or w.feature_weight > 0 else None,
            progress,
        )
        u16 = to_u16(data.features)
        arrays = {"features_u16": u16, "targets": data.targets, "mask": data.mask, "positive": data.positive}
        if data.embeddings is not None:
            arrays["embeddings"] = data.embeddings
        np.savez(d / EXAMPLES, clip_start=data.clip_start, **arrays)
        return {
            "examples": len(u16),
            "wake_word": int(data.positive.sum()),
            "real_negatives": len(real),
            "frames": int(u16.shape[1]),
            "extra_train_clips": int(extra.sum()),
        }

    key = {
        "corpus": corpus.key,
        "augment": cfg.data.augment.model_dump(mode="json"),
        "real_negatives_minutes": w.real_negatives_minutes,
        **({"real_negatives_codec": w.real_negatives_codec} if w.real_negatives_codec else {}),
        "positive_steps": w.positive_steps,
        "embeddings": w.alpha > 0 or w.feature_weight > 0,
        "seed": cfg.seed,
        "pool": pool_fingerprint("debian-speech"),
        **({"extra_weight": cfg.data.extra_weight} if cfg.data.extra else {}),
    }
    return stages.run("wake_examples", key, produce)


def load_examples(examples: StageOutput) -> Examples:
    z = np.load(examples.dir / EXAMPLES)
    n, real = len(z["positive"]), examples.info["real_negatives"]  # the pool's windows come last
    return Examples(
        features=from_u16(z["features_u16"]),
        targets=z["targets"],
        mask=z["mask"],
        positive=z["positive"],
        clip_start=int(z["clip_start"]),
        embeddings=z["embeddings"] if "embeddings" in z.files else None,
        real=np.arange(n) >= n - real,
    )


def stage_frame_teacher(
    cfg: BuildConfig, examples: StageOutput, stages: Stages, progress: bool
) -> StageOutput | None:
    """The frame teacher's logits per student step; None when the build does not distil."""
    tc = train_config(cfg)
    if tc.alpha == 0:
        return None

    def produce(d: Path) -> dict[str, Any]:
        data = load_examples(examples)
        teacher = fit_teacher(data, tc, progress)
        distil_targets(data, teacher, STRIDE)
        assert data.teacher_logits is not None and data.teacher_mask is not None
        np.savez(d / "targets.npz", logits=data.teacher_logits.astype(np.float16), mask=data.teacher_mask)
        torch.save(teacher.state_dict(), d / "frame_teacher.pt")
        last = data.teacher_logits[:, -1]
        return {
            "wake_word_last_step": float((last[data.positive] > 0).mean()),
            "others_last_step": float((last[~data.positive] > 0).mean()),
        }

    key = {"examples": examples.key, "teacher_epochs": tc.teacher_epochs, "seed": tc.seed, "stores": "logits"}
    return stages.run("wake_teacher", key, produce)


def training_data(examples: StageOutput, teacher: StageOutput | None) -> Examples:
    """The examples with the frame teacher's targets, as the student trains on them."""
    data = load_examples(examples)
    if teacher is not None:
        z = np.load(teacher.dir / "targets.npz")
        data.teacher_logits, data.teacher_mask = z["logits"].astype(np.float32), z["mask"]
    return data


def student_spec(cfg: BuildConfig) -> Any:
    """The streaming student's shape: the default `StreamingSpec` at the recipe's width."""
    from edgekd.models.streaming import StreamingSpec

    assert cfg.wakeword is not None
    return StreamingSpec(channels=cfg.wakeword.channels)


def stage_wake_student(
    cfg: BuildConfig, examples: StageOutput, teacher: StageOutput | None, stages: Stages, progress: bool
) -> StageOutput:
    from edgekd.models.streaming import StreamingStudent

    tc, spec = train_config(cfg), student_spec(cfg)

    def produce(d: Path) -> dict[str, Any]:
        data = training_data(examples, teacher)
        torch.manual_seed(cfg.seed)
        model = StreamingStudent(spec)
        train(model, data, tc, progress)
        torch.save(model.state_dict(), d / STUDENT)
        return {
            "params": sum(p.numel() for p in model.parameters()),
            "receptive_frames": model.spec.receptive_frames,
            "distilled": teacher is not None,
            "trained_on": machine(),
        }

    # the fine-tuning settings belong to `wake_finetune`: changing them does not train the student again
    train_key = {k: v for k, v in tc.__dict__.items() if not k.startswith("mining_")}
    key = {"examples": examples.key, "teacher": teacher and teacher.key, "train": train_key,
           "spec": dataclasses.asdict(spec)}  # fmt: skip
    return stages.run("wake_student", key, produce)


def stage_mine(
    cfg: BuildConfig, examples: StageOutput, student: StageOutput, stages: Stages, progress: bool
) -> StageOutput:
    """Hard negatives: the windows of the pool's `fit` part (real speech without the phrase, which the
    examples already cut into 1 s negatives) where the student fires at `wakeword.mining_cutoff`, each
    source run as one stream at its own level, as calibration and the device hear it."""
    w = cfg.wakeword
    assert w is not None

    def produce(d: Path) -> dict[str, Any]:
        model, frontend = load_student(cfg, student), MicroFrontend()
        found, per_source = [], {}
        recordings = negative_recordings("fit", w.mining_minutes, cfg.seed + 7)
        rng = np.random.default_rng(cfg.seed)
        streams = [(r.source, r.audio) for r in recordings] + (
            [(f"{r.source} (codec)", codec(r.audio, rng)) for r in recordings] if w.mining_codec else []
        )
        for name, audio in tqdm(streams, desc="mining", unit="stream", disable=not progress):
            windows = hard_windows(model, frontend(audio), examples.info["frames"], w.mining_cutoff, cfg.seed)
            found.append(windows)
            per_source[name] = {"windows": len(windows), "hours": len(audio) / SAMPLE_RATE / 3600}
        mined = np.concatenate(found)
        np.savez(d / MINED, features_u16=to_u16(mined))
        hours = sum(s["hours"] for s in per_source.values())
        return {
            "windows": len(mined),
            "hours": hours,
            "per_hour": len(mined) / hours,
            "per_source": per_source,
        }

    key = {
        "student": student.key,  # holds the examples' key, hence their length in frames
        **w.model_dump(mode="json", include={"mining_cutoff", "mining_minutes", "mining_codec"}),
        "seed": cfg.seed,
        "pool": pool_fingerprint("debian-speech"),
    }
    return stages.run("wake_mine", key, produce)


def stage_fine_tune(
    cfg: BuildConfig,
    examples: StageOutput,
    teacher: StageOutput | None,
    student: StageOutput,
    mined: list[StageOutput],
    stages: Stages,
    progress: bool,
) -> StageOutput:
    """The student fine-tuned on its examples and every mining round's windows so far (`fine_tune`)."""
    tc = train_config(cfg)

    def produce(d: Path) -> dict[str, Any]:
        windows = np.concatenate([from_u16(np.load(m.dir / MINED)["features_u16"]) for m in mined])
        model = fine_tune(load_student(cfg, student), training_data(examples, teacher), windows, tc, progress)
        torch.save(model.state_dict(), d / STUDENT)
        return {"mined_windows": len(windows), "epochs": tc.mining_epochs}

    key = {
        "student": student.key,
        "mined": [m.key for m in mined],  # the student's key already holds the examples' and teacher's
        "train": tc.__dict__,
    }
    return stages.run("wake_finetune", key, produce)


def load_student(cfg: BuildConfig, student: StageOutput) -> Any:
    """The trained student, fake-quant on and frozen, as it was exported."""
    from edgekd.models.streaming import StreamingStudent

    model = StreamingStudent(student_spec(cfg)).quantize().freeze()
    model.load_state_dict(torch.load(student.dir / STUDENT, weights_only=True))
    return model.eval()


def stage_wake_export(cfg: BuildConfig, student: StageOutput, stages: Stages) -> StageOutput:
    """The step model and the contract's figures for it (no manifest yet: the operating point comes
    from calibration). The arena ESPHome will allocate: TFLite Micro's need plus `budget.arena_headroom`."""
    from edgekd.export.streaming import write_step_model

    def produce(d: Path) -> dict[str, Any]:
        model = write_step_model(load_student(cfg, student), d / f"{slug(cfg.labels[0])}.tflite")
        report = contract.check(model)
        arena = 16 * math.ceil(report.arena_bytes * (1 + cfg.budget.arena_headroom) / 16)
        return {"model": model.name, "contract": report.record(), "tensor_arena_size": arena}

    key = {"student": student.key, "headroom": cfg.budget.arena_headroom, "phrase": cfg.labels[0]}
    return stages.run("wake_export", key, produce)


def esphome_manifest(cfg: BuildConfig, model: str, arena: int, cutoff: float, window: int) -> dict[str, Any]:
    """ESPHome's micro_wake_word v2 manifest for the model (`contract.manifest_problems` accepts it)."""
    w = cfg.wakeword
    assert w is not None
    raw = {
        "type": "micro",
        "wake_word": cfg.labels[0],
        "author": w.author,
        **({"website": w.website} if w.website else {}),
        "model": model,
        "trained_languages": w.trained_languages,
        "version": contract.MANIFEST_VERSION,
        "micro": {
            "probability_cutoff": cutoff,
            "sliding_window_size": window,
            "feature_step_size": 10,
            "tensor_arena_size": arena,
            "minimum_esphome_version": contract.MIN_ESPHOME_VERSION,
        },
    }
    assert not contract.manifest_problems(raw), contract.manifest_problems(raw)
    return raw


def engine_for(export: StageOutput, manifest: dict[str, Any], folder: Path) -> WakeWordEngine:
    """The component's loop on the exported model, with the manifest written beside a copy of it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / export.info["model"]).write_bytes((export.dir / export.info["model"]).read_bytes())
    path = folder / f"{Path(export.info['model']).stem}.json"
    write_json(path, manifest)
    return WakeWordEngine.from_manifest(path)


def stage_calibrate(
    cfg: BuildConfig, corpus: StageOutput, export: StageOutput, stages: Stages, progress: bool
) -> StageOutput:
    """Every (cutoff, window) of `wakeword.cutoffs` x `windows`: FA/h on calibration speech and recall of
    the validation clips in quiet noise; the chosen point is the best recall within the FA/h budget at
    `gates.fa_calibration_confidence` (the fewest false accepts when no point is within it), ties to the
    stricter cutoff."""
    w = cfg.wakeword
    assert w is not None
    budget, confidence = cfg.gates.fa_budget, cfg.gates.fa_calibration_confidence

    def produce(d: Path) -> dict[str, Any]:
        phrase = cfg.labels[0]
        manifest = esphome_manifest(cfg, export.info["model"], export.info["tensor_arena_size"], 0.5, 1)
        engine = engine_for(export, manifest, d / "engine")
        recordings = negative_recordings("calibration", w.calibration_minutes, cfg.seed, held_out=True)
        negatives = NegativeRuns.of(engine, [(r.source, r.audio) for r in recordings], progress)
        hours = negatives.total_hours
        clips = [
            a
            for _, a in keyword_clips(
                Corpus.load(corpus.dir / "corpus.npz"), "validation", (phrase,), w.positives, cfg.seed
            )
        ]
        positives = PositiveRun.of(engine, phrase, clips, [], (20.0, 30.0), cfg.seed, progress)
        points = []
        for cutoff in w.cutoffs:
            for window in w.windows:
                k = contract.cutoff_u8(cutoff)
                fa = sum(negatives.false_accepts(k, window).values())
                hits, total = positives.hits(k, window)
                points.append(
                    {"cutoff": cutoff, "window": window, "false_accepts": fa,
                     "fa_per_hour": fa / hours, "recall": hits / total,
                     "fa_per_hour_bound": poisson_rate_upper(fa, hours, confidence)}
                )  # fmt: skip
        within = [p for p in points if within_fa_budget(p["false_accepts"], hours, budget, confidence)]
        chosen = (
            max(within, key=lambda p: (p["recall"], p["cutoff"], p["window"]))
            if within
            else min(points, key=lambda p: (p["fa_per_hour"], -p["recall"]))
        )
        return {
            "chosen": chosen,
            "within_budget": bool(within),
            "fa_budget": budget,
            "fa_confidence": confidence,
            "hours": hours,
            "validation_clips": len(clips),
            "points": points,
            "audio": f"builtin speech, calibration parts ({', '.join(negatives.hours)}), no English",
        }

    key = {
        "export": export.key,
        "corpus": corpus.key,
        "budget": budget,
        "confidence": confidence,
        **w.model_dump(mode="json", include={"calibration_minutes", "cutoffs", "windows", "positives"}),
        "seed": cfg.seed,
        "pool": pool_fingerprint("debian-speech"),
        "held_out": pool_fingerprint(HELD_OUT_POOL),
    }
    return stages.run("wake_calibrate", key, produce)


def recall_record(run: PositiveRun, cutoff: int, window: int, about: str) -> dict[str, Any]:
    hits, total = run.hits(cutoff, window)
    return {"clips": total, "hits": hits, "recall": hits / total,
            "interval": list(clopper_pearson(hits, total)), "audio": about}  # fmt: skip


def stage_wake_verify(
    cfg: BuildConfig,
    corpus: StageOutput,
    export: StageOutput,
    calibration: StageOutput,
    stages: Stages,
    progress: bool,
) -> StageOutput:
    """parity.json of a wake-word build: the contract, the budget and the stream figures, with gates."""
    w = cfg.wakeword
    assert w is not None

    def produce(d: Path) -> dict[str, Any]:
        phrase, point = cfg.labels[0], calibration.info["chosen"]
        manifest = esphome_manifest(
            cfg, export.info["model"], export.info["tensor_arena_size"], point["cutoff"], point["window"]
        )
        engine = engine_for(export, manifest, d / "esphome")
        report = contract.check(engine.manifest.model, engine.manifest.path)
        k, window = engine.cutoff, engine.window
        recordings = negative_recordings("check", w.report_minutes, cfg.seed, held_out=True)
        runs = NegativeRuns.of(engine, [(r.source, r.audio) for r in recordings], progress)
        per_source = runs.false_accepts(k, window)
        fa, hours = sum(per_source.values()), runs.total_hours
        negatives = {
            "audio": f"builtin speech, check parts ({', '.join(per_source)}), no English",
            "false_accepts": fa,
            "hours": hours,
            "fa_per_hour": fa / hours,
            "fa_per_hour_interval": list(poisson_rate_interval(fa, hours)),
            "per_source": {s: {"false_accepts": n, "hours": runs.hours[s]} for s, n in per_source.items()},
        }
        test = [
            a
            for _, a in keyword_clips(
                Corpus.load(corpus.dir / "corpus.npz"), "test", (phrase,), w.positives, cfg.seed
            )
        ]
        quiet, low, high = (20.0, 30.0), *w.snr_db

        def recall_of(
            clips: list[np.ndarray], background: list, snr: tuple[float, float], about: str
        ) -> dict:
            run = PositiveRun.of(engine, phrase, clips, background, snr, cfg.seed, progress)
            return recall_record(run, k, window, about)

        recall = {
            "synthetic_quiet": recall_of(
                test, [], quiet, "synthetic test voices (never trained on), quiet 20-30 dB"
            ),
            "synthetic_in_speech": recall_of(
                test,
                [BUILTIN],
                (low, high),
                f"synthetic test voices in real speech (check part), {low:g}-{high:g} dB",
            ),
        }
        if cfg.verify.holdout:
            real = [read_wav(f, allow_clipped=True) for f in audio_files([Path(cfg.verify.holdout)])]
            about = f"{len(real)} real recordings ({cfg.verify.holdout}) in quiet noise, 20-30 dB"
            recall["holdout_quiet"] = recall_of(real, [], quiet, about)
        c = report.record()
        arena = manifest["micro"]["tensor_arena_size"]
        gates = [
            {**check("esphome_contract", c["passed"], True, ">="), "detail": "; ".join(report.violations)}
        ]
        b = cfg.budget
        if b.model_bytes is not None:
            gates.append(check("model_bytes", c["flash_bytes"], b.model_bytes, "<="))
        if b.arena_bytes is not None:
            gates.append(check("arena_bytes_with_headroom", arena, b.arena_bytes, "<="))
        if b.macs_per_second is not None:
            gates.append(check("macs_per_second", c["macs_per_second"], b.macs_per_second, "<="))
        gates += stream_gates(cfg, negatives, recall["synthetic_in_speech"]["recall"])
        if "holdout_quiet" in recall and cfg.gates.holdout_min_accuracy > 0:
            # the user's own recordings of the phrase: fails when even the interval's high end is below
            r, floor = recall["holdout_quiet"], cfg.gates.holdout_min_accuracy
            gate = check("holdout_recall", r["recall"], floor, ">=")
            gates.append({**gate, "passed": r["interval"][1] >= floor, "n": r["clips"], "unit": "clips",
                          "interval": r["interval"], "rule": "interval"})  # fmt: skip
        parity = {
            "schema": WAKEWORD_SCHEMA,
            "kind": "wakeword",
            "target": cfg.target,
            "wake_word": phrase,
            "passed": all(g["passed"] for g in gates),
            "gates": gates,
            "contract": c,
            "esphome_manifest": manifest,
            "operating_point": {
                **point,
                "cutoff_u8": k,
                "chosen_on": calibration.info["audio"],
                "within_budget": calibration.info["within_budget"],
            },  # fmt: skip
            "negatives": negatives,
            "recall": recall,
            "calibration": {
                k_: calibration.info[k_] for k_ in ("points", "hours", "fa_budget", "fa_confidence")
            },
        }
        write_json(d / "parity.json", parity)
        return {"passed": parity["passed"]}

    key = {
        "export": export.key,
        "calibration": calibration.key,
        "corpus": corpus.key,
        "gates": cfg.gates.model_dump(mode="json"),
        "budget": cfg.budget.model_dump(mode="json"),
        **w.model_dump(
            mode="json",
            include={"report_minutes", "positives", "snr_db", "author", "website", "trained_languages"},
        ),  # fmt: skip
        "holdout": folder_fingerprint(Path(cfg.verify.holdout)) if cfg.verify.holdout else None,
        "seed": cfg.seed,
        "pool": pool_fingerprint("debian-speech"),
        "held_out": pool_fingerprint(HELD_OUT_POOL),
    }
    return stages.run("wake_verify", key, produce)


def read_parity(verify: StageOutput) -> dict[str, Any]:
    return json.loads((verify.dir / "parity.json").read_text())
