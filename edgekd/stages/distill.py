"""Distillation stage: the float student learns from labels and the teacher, then QAT makes it int8-exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.artifacts import write_npz
from edgekd.config import BuildConfig
from edgekd.pipeline import Stages


def example_batch(features: np.ndarray, n: int = 2) -> torch.Tensor:
    return torch.as_tensor(features[:n], dtype=torch.float32)


def make_student(cfg: BuildConfig, shape: tuple[int, int]) -> torch.nn.Module:
    from edgekd.models.students import build_student

    s = cfg.student
    return build_student(s.arch, len(cfg.classes), shape, s.width, s.dropout)


def load_qat_student(cfg: BuildConfig, student_dir: Path, example: torch.Tensor) -> torch.fx.GraphModule:
    """Rebuild the trained QAT graph: same float model, same preparation, then the trained state."""
    from edgekd.train.qat import freeze_observers, prepare_qat

    model = make_student(cfg, tuple(example.shape[1:]))
    model.load_state_dict(torch.load(student_dir / "float.pt", weights_only=True))
    prepared = prepare_qat(model, example)
    prepared.load_state_dict(torch.load(student_dir / "qat.pt", weights_only=True))
    freeze_observers(prepared)
    prepared.eval()  # the exported graph's patched eval() returns None, so no chaining
    return prepared


def predict_float_twin(prepared: torch.fx.GraphModule, x: np.ndarray) -> np.ndarray:
    """The shipped weights run in float32: the QAT graph with its fake quantizers switched off.

    This is the float model the INT8 artifacts must reproduce (measured: 100% argmax agreement with
    the fake-quant model); the float student before QAT differs from it only by fine-tuning drift.
    """
    from torchao.quantization.pt2e import disable_fake_quant, enable_fake_quant

    from edgekd.train.trainer import predict

    prepared.apply(disable_fake_quant)
    try:
        return predict(prepared, x, torch.device("cpu"))
    finally:
        prepared.apply(enable_fake_quant)


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
        model = make_student(cfg, x_tr.shape[1:]).to(device)
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
        prepared = prepare_qat(model, example_batch(x_tr))
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
            logits[f"pre_qat_{split}"] = predict(model, f[split], torch.device("cpu"))
            logits[f"qat_{split}"] = predict(prepared, f[split], torch.device("cpu"))
            logits[f"fp32_{split}"] = predict_float_twin(prepared, f[split])
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
