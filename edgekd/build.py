"""`edgekd build`: every stage of the chain, wired through the cached `Stages` runner.

Stage functions take their config slice and input artifacts and write their outputs into the stage
directory they are given; they never reach into each other's internals.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from edgekd.artifacts import write_json, write_npz
from edgekd.audio.augment import augment, view_rng
from edgekd.audio.frontend import compute_features, make_frontend
from edgekd.audio.io import to_pcm16
from edgekd.config import BuildConfig
from edgekd.data.corpus import Corpus, build_corpus
from edgekd.pipeline import Stages, corpus_fingerprint
from edgekd.train.trainer import resolve_device


@dataclass
class BuildResult:
    out: Path
    passed: bool
    parity: dict[str, Any]
    summary: str


# ------------------------------------------------------------------------------------------- stages


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


def _audio(pcm: np.ndarray) -> np.ndarray:
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
            "train": compute_features(fe, _audio(views["audio"]), progress=progress),
            "y_train": corpus.labels[views["clip"]],
        }
        for split in ("validation", "test"):
            idx = corpus.indices(split)
            arrays[split] = compute_features(fe, _audio(corpus.clips[idx]), progress=progress)
            arrays[f"y_{split}"] = corpus.labels[idx]
        write_npz(d / "features.npz", **arrays)
        return {"shape": list(arrays["train"].shape[1:]), "frontend": fe.params()}

    return stages.run(
        "features", {"views": views_key, "frontend": cfg.frontend.model_dump(mode="json")}, produce
    )


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
        f_train = teacher.features(_audio(views["audio"]))
        f_val = teacher.features(_audio(corpus.clips[val]))
        f_test = teacher.features(_audio(corpus.clips[test]))
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


def _example(features: np.ndarray, n: int = 2) -> torch.Tensor:
    return torch.as_tensor(features[:n], dtype=torch.float32)


def _student(cfg: BuildConfig, shape: tuple[int, int]) -> torch.nn.Module:
    from edgekd.models.students import build_student

    s = cfg.student
    return build_student(s.arch, len(cfg.classes), shape, s.width, s.dropout)


def load_qat_student(cfg: BuildConfig, student_dir: Path, example: torch.Tensor) -> torch.fx.GraphModule:
    """Rebuild the trained QAT graph: same float model, same preparation, then the trained state."""
    from edgekd.train.qat import freeze_observers, prepare_qat

    model = _student(cfg, tuple(example.shape[1:]))
    model.load_state_dict(torch.load(student_dir / "float.pt", weights_only=True))
    prepared = prepare_qat(model, example)
    prepared.load_state_dict(torch.load(student_dir / "qat.pt", weights_only=True))
    freeze_observers(prepared)
    prepared.eval()  # the exported graph's patched eval() returns None, so no chaining
    return prepared


def stage_student(
    cfg: BuildConfig,
    features_dir: Path,
    features_key: str,
    teacher_dir: Path | None,
    teacher_key: str | None,
    stages: Stages,
    device: torch.device,
    progress: bool,
) -> tuple[Path, str]:
    """Distil into the float student, then quantization-aware training on the PT2E graph."""
    from edgekd.train.qat import freeze_observers, prepare_qat
    from edgekd.train.trainer import FitSpec, fit, predict

    t, d_cfg = cfg.train, cfg.distill
    use_teacher = teacher_dir is not None and d_cfg.alpha > 0

    def produce(d: Path) -> dict[str, Any]:
        torch.set_num_threads(t.threads)
        f = np.load(features_dir / "features.npz")
        x_tr, y_tr, x_val, y_val = f["train"], f["y_train"], f["validation"], f["y_validation"]
        teacher_logits = np.load(teacher_dir / "logits.npz")["train"] if use_teacher else None
        torch.manual_seed(cfg.seed)  # initial weights: fit() seeds only what happens after construction
        model = _student(cfg, x_tr.shape[1:]).to(device)
        common = dict(
            batch_size=t.batch_size,
            weight_decay=t.weight_decay,
            alpha=d_cfg.alpha if use_teacher else 0.0,
            temperature=d_cfg.temperature,
            label_smoothing=t.label_smoothing,
            spec_augment=True,
        )
        float_fit = fit(
            model,
            x_tr,
            y_tr,
            x_val,
            y_val,
            FitSpec(epochs=t.epochs, lr=t.lr, **common),
            device=device,
            seed=cfg.seed,
            teacher_logits=teacher_logits,
            fp16=t.precision == "fp16",
            desc="student float",
            progress=progress,
        )
        model = model.cpu()
        torch.save(model.state_dict(), d / "float.pt")
        # QAT's job is to reproduce the float student under int8, not to keep learning: its soft target
        # is the float student's own prediction on the same (un-masked) input, mixed with the labels.
        float_logits = predict(model, x_tr, torch.device("cpu"))
        prepared = prepare_qat(model, _example(x_tr))
        freeze_at = max(1, t.qat_epochs - 2)  # last epochs train with frozen scales: the grid that ships

        def on_epoch_start(m: torch.nn.Module, epoch: int) -> None:
            from torchao.quantization.pt2e import disable_observer, enable_observer

            m.apply(enable_observer if epoch < freeze_at else disable_observer)

        qat_fit = fit(
            prepared,
            x_tr,
            y_tr,
            x_val,
            y_val,
            FitSpec(
                epochs=t.qat_epochs,
                lr=t.qat_lr,
                warmup_epochs=0.0,
                batch_size=t.batch_size,
                weight_decay=t.weight_decay,
                alpha=t.qat_self_distill,
                temperature=t.qat_temperature,
            ),
            device=torch.device("cpu"),
            seed=cfg.seed + 1,
            teacher_logits=float_logits,
            desc="student QAT",
            progress=progress,
            on_epoch_start=on_epoch_start,
            before_eval=freeze_observers,
        )
        freeze_observers(prepared)
        torch.save(prepared.state_dict(), d / "qat.pt")
        logits = {}
        for split in ("validation", "test"):
            logits[f"fp32_{split}"] = predict(model, f[split], torch.device("cpu"))
            logits[f"qat_{split}"] = predict(prepared, f[split], torch.device("cpu"))
        write_npz(d / "logits.npz", **logits)
        from edgekd.models.students import count_params

        return {
            "params": count_params(model),
            "float": {
                "history": float_fit.history,
                "best_epoch": float_fit.best_epoch,
                "skipped_steps": float_fit.skipped_steps,
            },
            "qat": {
                "history": qat_fit.history,
                "best_epoch": qat_fit.best_epoch,
                "skipped_steps": qat_fit.skipped_steps,
            },
            "used_teacher": use_teacher,
        }

    key = {
        "features": features_key,
        "teacher": teacher_key if use_teacher else None,
        "student": cfg.student.model_dump(mode="json"),
        "distill": d_cfg.model_dump(mode="json"),
        "train": t.model_dump(mode="json", exclude={"threads"}),
        "classes": cfg.classes,
        "seed": cfg.seed,
    }
    return stages.run("student", key, produce)


def stage_export(
    cfg: BuildConfig, student_dir: Path, student_key: str, features_dir: Path, stages: Stages
) -> tuple[Path, str]:
    """One QAT graph, converted once for TFLite and once for ONNX, plus the C array."""
    from edgekd.export.c_array import write_c_array
    from edgekd.train.qat import convert_qat

    def produce(d: Path) -> dict[str, Any]:
        x = np.load(features_dir / "features.npz")["validation"]
        prepared = load_qat_student(cfg, student_dir, _example(x))
        converted = convert_qat(prepared)
        formats = cfg.export.formats
        if "tflite" in formats:
            from edgekd.export.tflite import export_tflite

            export_tflite(converted.for_tflite, _example(x, 1), d / "model.tflite")
            if "c_array" in formats:
                write_c_array((d / "model.tflite").read_bytes(), d)
        if "onnx" in formats:
            from edgekd.export.onnx import export_onnx

            export_onnx(converted.for_onnx, _example(x), d / "model.onnx")
        return {"files": sorted(p.name for p in d.iterdir())}

    return stages.run(
        "export", {"student": student_key, "export": cfg.export.model_dump(mode="json")}, produce
    )


def _host_latency_ms(cfg: BuildConfig, export_dir: Path, x: np.ndarray, repeats: int = 20) -> float:
    """Median batch-1 latency on this host, on the fast kernels a phone or server would run
    (XNNPACK LiteRT, onnxruntime) — not the reference kernels used for parity."""
    import time

    from edgekd.verify.runners import LiteRTRunner, OrtRunner, TFLMRunner

    primary = cfg.verify.primary
    if primary == "onnx":
        runner: Any = OrtRunner(export_dir / "model.onnx")
    elif primary == "litert":
        runner = LiteRTRunner(export_dir / "model.tflite", reference=False)
    else:
        runner = TFLMRunner(export_dir / "model.tflite")
    runner.predict(x[:1])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner.predict(x[:1])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def measure_budget(cfg: BuildConfig, export_dir: Path, x: np.ndarray) -> Any:
    """Flash, arena, ops, MACs and latency of the artifact the target's device runs."""
    from edgekd.verify.parity import Budget

    tflite, onnx = export_dir / "model.tflite", export_dir / "model.onnx"
    model_bytes = (onnx if cfg.verify.primary == "onnx" else tflite).stat().st_size
    ops: list[str] = []
    macs, fully_int8, float_tensors, arena = 0, True, [], None
    if tflite.exists():
        from edgekd.verify.tflite_info import describe, measure_arena

        info = describe(tflite)
        ops, macs, fully_int8, float_tensors = info.op_set, info.macs, info.is_fully_int8, info.float_tensors
        arena = measure_arena(tflite) if "tflm" in cfg.verify.runtimes else None
    b = cfg.budget
    if b.clock_mhz is not None and b.macs_per_cycle is not None and macs:
        latency = macs / (b.macs_per_cycle * b.clock_mhz * 1e3)
        source = f"estimate: {macs} MACs / ({b.macs_per_cycle} MAC/cycle x {b.clock_mhz} MHz)"
    else:
        latency = _host_latency_ms(cfg, export_dir, x)
        source = f"measured on this host ({cfg.verify.primary}, fast kernels, batch 1, median of 20)"
    return Budget(model_bytes, arena, ops, macs, fully_int8, float_tensors, latency, source)


def make_runners(cfg: BuildConfig, export_dir: Path) -> dict[str, Any]:
    from edgekd.verify.runners import LiteRTRunner, OrtRunner, TFLMRunner

    made: dict[str, Any] = {}
    for name in cfg.verify.runtimes:
        if name == "tflm":
            made[name] = TFLMRunner(export_dir / "model.tflite")
        elif name == "litert":
            made[name] = LiteRTRunner(export_dir / "model.tflite", reference=True)
        else:
            made[name] = OrtRunner(export_dir / "model.onnx")
    return made


def parity_rows(
    cfg: BuildConfig,
    x: np.ndarray,
    y: np.ndarray,
    teacher: np.ndarray,
    fp32: np.ndarray,
    qat: np.ndarray,
    runners: dict[str, Any],
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Every runtime's metrics on the same clips, each INT8 runtime compared with the fake-quant model."""
    from edgekd.verify.parity import RUNTIME_ROWS, row

    classes = cfg.classes
    s_pred, t_pred = fp32.argmax(1), teacher.argmax(1)
    rows = {
        "teacher_fp32": row(teacher, y, classes, s_pred, t_pred),
        "student_fp32": row(fp32, y, classes, s_pred, t_pred),
        "student_qat": row(qat, y, classes, s_pred, t_pred, reference_logits=qat),
    }
    for name in ("onnx", "litert", "tflm"):
        if name in runners:
            logits = _batched(runners[name], x, name, progress)
            rows[RUNTIME_ROWS[name]] = row(logits, y, classes, s_pred, t_pred, reference_logits=qat)
    return rows


def _batched(runner: Any, x: np.ndarray, name: str, progress: bool, chunk: int = 64) -> np.ndarray:
    out = [
        runner.predict(x[i : i + chunk])
        for i in tqdm(
            range(0, len(x), chunk), desc=f"verify {name}", unit="batch", disable=not progress, leave=False
        )
    ]
    return np.concatenate(out)


def stage_verify(
    cfg: BuildConfig,
    export_dir: Path,
    export_key: str,
    features_dir: Path,
    features_key: str,
    student_dir: Path,
    teacher_dir: Path,
    teacher_key: str,
    stages: Stages,
    progress: bool,
) -> tuple[Path, str]:
    from edgekd.verify.parity import parity_report

    def produce(d: Path) -> dict[str, Any]:
        f = np.load(features_dir / "features.npz")
        x, y = f["test"], f["y_test"]
        s = np.load(student_dir / "logits.npz")
        teacher = np.load(teacher_dir / "logits.npz")["test"]
        n = len(y) if not cfg.verify.max_clips else min(len(y), cfg.verify.max_clips)
        runners = make_runners(cfg, export_dir)
        rows = parity_rows(
            cfg, x[:n], y[:n], teacher[:n], s["fp32_test"][:n], s["qat_test"][:n], runners, progress
        )
        budget = measure_budget(cfg, export_dir, x)
        write_json(d / "parity.json", parity_report(cfg, rows, budget, n))
        return {}

    key = {
        "export": export_key,
        "features": features_key,
        "teacher": teacher_key,
        "verify": cfg.verify.model_dump(mode="json"),
        "budget": cfg.budget.model_dump(mode="json"),
        "gates": cfg.gates.model_dump(mode="json"),
        "classes": cfg.classes,
        "target": cfg.target,
    }
    return stages.run("verify", key, produce)


# ------------------------------------------------------------------------------------------- build

ARTIFACTS = ["model.tflite", "model.onnx", "model_data.h", "model_data.cc"]


def _promote(staging: Path, out: Path, passed: bool) -> Path:
    """Move a finished build into place. Only a passing build replaces the previous one."""
    if not passed:
        rejected = out / "rejected"
        shutil.rmtree(rejected, ignore_errors=True)
        staging.rename(rejected)
        return rejected
    for item in sorted(staging.iterdir()):
        target = out / item.name
        if item.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        item.replace(target)  # atomic per artifact
    staging.rmdir()
    shutil.rmtree(out / "rejected", ignore_errors=True)
    return out


def run_build(
    cfg: BuildConfig, out: Path, cache_root: Path, progress: bool = True, log: Any = print
) -> BuildResult:
    """Run every stage (cached), verify, and write the build directory."""
    from edgekd.export.manifest import build_manifest, file_hashes, model_io
    from edgekd.report.markdown import report_md, summary

    if cfg.data.path and not Path(cfg.data.path).is_dir():  # fail before any stage starts
        from edgekd.errors import DataError

        raise DataError(
            f"data.path {cfg.data.path!r} is not a directory; pass --data a folder in the Speech "
            "Commands layout (one folder per label with .wav files)"
        )
    device = resolve_device(cfg.train.device)
    torch.set_num_threads(cfg.train.threads)
    stages = Stages(cache_root, log=log)
    corpus_dir, corpus_key = stage_corpus(cfg, stages, progress)
    views_dir, views_key = stage_views(cfg, corpus_dir, corpus_key, stages, progress)
    features_dir, features_key = stage_features(cfg, corpus_dir, views_dir, views_key, stages, progress)
    teacher_dir, teacher_key = stage_teacher(cfg, corpus_dir, views_dir, views_key, stages, device, progress)
    teacher_info = json.loads((teacher_dir / "_done.json").read_text())
    log(
        f"teacher: {teacher_info['name']} ({teacher_info['why']}); held-out accuracy "
        f"{100 * teacher_info['accuracy']['test']:.1f}%"
    )
    student_dir, student_key = stage_student(
        cfg, features_dir, features_key, teacher_dir, teacher_key, stages, device, progress
    )
    export_dir, export_key = stage_export(cfg, student_dir, student_key, features_dir, stages)
    verify_dir, _ = stage_verify(
        cfg,
        export_dir,
        export_key,
        features_dir,
        features_key,
        student_dir,
        teacher_dir,
        teacher_key,
        stages,
        progress,
    )

    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "weights").mkdir(parents=True)
    for name in ARTIFACTS:
        if (export_dir / name).exists():
            shutil.copy2(export_dir / name, staging / name)
    shutil.copy2(verify_dir / "parity.json", staging / "parity.json")
    for src, name in ((student_dir, "float.pt"), (student_dir, "qat.pt"), (teacher_dir, "teacher_head.pt")):
        if (src / name).exists():
            shutil.copy2(src / name, staging / "weights" / name)
    if (teacher_dir / "teacher_hf").is_dir():
        shutil.copytree(teacher_dir / "teacher_hf", staging / "weights" / "teacher_hf")

    parity = json.loads((verify_dir / "parity.json").read_text())
    corpus_info = json.loads((corpus_dir / "_done.json").read_text())
    student_info = json.loads((student_dir / "_done.json").read_text())
    features_info = json.loads((features_dir / "_done.json").read_text())
    write_json(
        staging / "logs" / "training.json",
        {
            "teacher": teacher_info.get("history"),
            "student_float": student_info["float"]["history"],
            "student_qat": student_info["qat"]["history"],
        },
    )
    manifest = build_manifest(
        target=cfg.target,
        recipe=cfg.recipe,
        seed=cfg.seed,
        classes=cfg.classes,
        frontend={
            **cfg.frontend.model_dump(mode="json"),
            **features_info["frontend"],
            "input_shape": features_info["shape"],
        },
        model_io=model_io(staging / "model.tflite"),
        arena={
            "measured_bytes": parity["budget"]["arena_bytes"],
            "with_headroom_bytes": parity["budget"]["arena_bytes_with_headroom"],
        },
        teacher={k: teacher_info.get(k) for k in ("name", "why", "accuracy", "identity", "features_shape")},
        student={
            "arch": cfg.student.arch,
            "width": cfg.student.width,
            "params": student_info["params"],
            "used_teacher": student_info["used_teacher"],
        },
        data={
            "source": cfg.data.path or "synthetic (Piper + espeak-ng)",
            "summary": corpus_info["summary"],
            "skipped": corpus_info["skipped"],
            "groups": corpus_info["groups"],
            "test_note": "speakers never seen in training"
            if cfg.data.path
            else "synthetic voices never seen in training",
        },
        timings=[t.__dict__ for t in stages.timings],
        cache_keys={
            "corpus": corpus_key,
            "views": views_key,
            "features": features_key,
            "teacher": teacher_key,
            "student": student_key,
            "export": export_key,
        },
        config=cfg.model_dump(mode="json"),
        files=file_hashes(staging, [*ARTIFACTS, "parity.json"]),
    )
    write_json(staging / "manifest.json", manifest)
    write_json(staging / "config.json", cfg.model_dump(mode="json"))
    from edgekd.artifacts import write_text

    write_text(staging / "report.md", report_md(parity, manifest))
    final = _promote(staging, out, parity["passed"])
    return BuildResult(final, parity["passed"], parity, summary(parity))
