"""One training loop for every model edgekd trains: teacher heads and fine-tunes, the student, QAT.

The loop keeps the checkpoint with the best validation accuracy (restored at the end; with EMA, the
best averaged weights; `keep_last`: the final ones), or the best agreement with reference predictions
where the data gives them (QAT keeps the epoch that reproduces the float student best, not the one a clip
or two of labels favour), stops early after `patience` epochs without improvement, shows a progress bar
with an ETA, and logs every loss component, the gradient norm, alpha, T and the learning rate per step
(TensorBoard, when given a log dir) and per epoch (the history the report plots). Steps whose logits or
loss are not finite are skipped and counted, never applied; too many stop the run.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edgekd.errors import EdgekdError
from edgekd.train.domain import DomainCritic, class_weights
from edgekd.train.losses import UNLABELED, LossWeights, distill_loss, teacher_log_probs
from edgekd.train.schedules import Schedule
from edgekd.train.soft_labels import SoftLabels
from edgekd.train.spec_augment import SpecAugment
from edgekd.train.tb import writer_for

MAX_SKIPPED_FRACTION = 0.05


@dataclass(frozen=True)
class FitSpec:
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    alpha: Schedule = Schedule(0.0)
    temperature: Schedule = Schedule(1.0)
    feature_weight: Schedule = Schedule(0.0)
    unlabeled_weight: float = 1.0
    trust_wrong_teacher: bool = True
    label_smoothing: float = 0.0
    spec_augment: SpecAugment = SpecAugment()  # none by default
    mixup: float = 0.0  # Beta(a, a) mixing of inputs, labels and teacher distributions; 0 = off
    ema_decay: float = 0.0
    patience: int = 0  # epochs without a better validation accuracy before stopping; 0 = never
    keep_last: bool = False  # keep the final weights instead of the best validation epoch's
    warmup_epochs: float = 1.0
    domain_weight: float = 0.0  # DANN between labelled (synthetic) and unlabelled (real) rows; 0 = off


@dataclass(frozen=True)
class TrainData:
    """Training rows (label -1: unlabeled, learnt from soft labels only) and the validation split.

    `val_reference`: predictions on the validation split that the kept checkpoint should agree with
    instead of the labels (QAT: the float student's, which it is there to reproduce)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    val_reference: np.ndarray | None = None


@dataclass(frozen=True)
class FitRun:
    """How one fit runs, apart from what it learns (`FitSpec`): where, seeded how, shown and logged as."""

    device: torch.device
    seed: int
    fp16: bool = False  # autocast + GradScaler on CUDA; ignored on the CPU
    desc: str = "train"  # progress bar and TensorBoard tag
    progress: bool = True
    log_dir: Path | None = None  # TensorBoard event files, per step


@dataclass(frozen=True)
class Hooks:
    """Calls into the loop: QAT switches its observers on for training and off for validation
    (otherwise validation data would move the quantization scales). `on_epoch_start` runs after the
    epoch's `train()`, so it may put the model back in its inference form (QAT's batch norm)."""

    on_epoch_start: Callable[[nn.Module, int], None] | None = None
    before_eval: Callable[[nn.Module], None] | None = None


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_accuracy: float = 0.0  # of the kept epoch
    best_val_agreement: float | None = None  # of the kept epoch, with `TrainData.val_reference`
    best_epoch: int = 0
    skipped_steps: int = 0
    stopped_early: bool = False


def resolve_device(requested: str) -> torch.device:
    """`cuda` without a GPU is a user error (the p100 profile); `auto` falls back to CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise EdgekdError(
            "this target trains on CUDA but no CUDA device is available here; "
            "pass --device cpu to train on the CPU (slower), or run on a GPU machine"
        )
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = [
        model(torch.as_tensor(x[i : i + batch_size], dtype=torch.float32, device=device))
        .float()
        .cpu()
        .numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class _FeatureTap:
    """Captures the input of the student's final `fc` layer: the pooled features feature matching uses."""

    def __init__(self, model: nn.Module) -> None:
        fc = getattr(model, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise EdgekdError("feature matching needs a student whose last layer is `fc` (nn.Linear)")
        self.width = fc.in_features
        self.value: torch.Tensor | None = None
        self.handle = fc.register_forward_pre_hook(self._hook)

    def _hook(self, _module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.value = args[0]


class _Ema:
    """Exponential moving average of the weights (buffers copied), evaluated instead of the raw weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - self.decay)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)


def _mix(
    gen: torch.Generator, a: float, x: torch.Tensor, y: torch.Tensor, n_cls: int
) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """Mixup of a batch's labelled rows among themselves: inputs and one-hot labels (teacher side:
    `_mix_teacher`).

    Unlabeled rows (the real pool) are their own partner, so they pass unmixed, and their target row is
    all zeros, which `distill_loss` reads as unlabeled: a pool window has no label to mix, and mixing it into
    a synthetic row would hand the critic and the feature term rows that are neither domain.
    """
    lam = float(torch.distributions.Beta(a, a).sample()) if a > 0 else 1.0
    is_labelled = y != UNLABELED
    labelled = torch.nonzero(is_labelled).flatten()
    perm = torch.arange(len(x), device=x.device)
    perm[labelled] = labelled[torch.randperm(len(labelled), generator=gen).to(x.device)]
    onehot = torch.nn.functional.one_hot(y.clamp_min(0), n_cls).float() * is_labelled.unsqueeze(-1)
    return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm], lam, perm


def _mix_teacher(t_logp: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """log(lam p + (1 - lam) q): the teacher's distribution for a mixed input, as mixup mixes labels."""
    return torch.logaddexp(t_logp + math.log(max(lam, 1e-12)), t_logp[perm] + math.log(max(1.0 - lam, 1e-12)))


def fit(
    model: nn.Module,
    data: TrainData,
    spec: FitSpec,
    run: FitRun,
    soft: SoftLabels | None = None,
    param_groups: list[dict] | None = None,
    hooks: Hooks = Hooks(),
) -> FitResult:
    """Train `model` in place; restore the weights of the best validation epoch.

    `soft` holds the teacher's outputs for every training row (the only supervision of unlabeled
    rows). `param_groups` (dicts with "params" and "lr_scale") give parts of the model their own
    learning rate (layer-wise decay).
    """
    x_train, y_train, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
    device, seed, fp16, desc = run.device, run.seed, run.fp16, run.desc
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n_classes = int(soft.n_classes) if soft is not None else int(np.max(y_train)) + 1
    if soft is not None and len(soft) != len(x_train):
        raise ValueError(f"{len(soft)} soft labels for {len(x_train)} training rows")
    if soft is None and bool((np.asarray(y_train) == UNLABELED).any()):
        raise ValueError("unlabeled rows need teacher soft labels")
    # Eager NCHW conv/BN training takes a ~10x slower oneDNN path on CPU (measured: ds_cnn S, batch 64,
    # 1.38 s/step NCHW vs 0.14 s channels_last); the layout is restored before returning.
    model.to(memory_format=torch.channels_last)
    feature_on = max(spec.feature_weight.start, spec.feature_weight.end or 0.0) > 0
    domain_on = spec.domain_weight > 0
    if domain_on and not bool((np.asarray(y_train) == UNLABELED).any()):
        raise ValueError("domain-adversarial training needs unlabeled (real) rows beside the labelled ones")
    tap = _FeatureTap(model) if (feature_on and soft is not None) or domain_on else None
    projection = None
    if tap is not None and soft is not None and soft.embeddings is not None:
        projection = nn.Linear(tap.width, soft.embeddings.shape[1]).to(device)
    groups = [{**g, "params": list(g["params"])} for g in param_groups or []] or [
        {"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}
    ]
    if projection is not None:
        groups = [*groups, {"params": list(projection.parameters()), "lr_scale": 1.0}]
    critic = None
    if domain_on and tap is not None:
        per_class = class_weights(np.asarray(y_train), soft, n_classes)
        critic = DomainCritic(tap.width, spec.domain_weight, per_class).to(device)
        groups = [*groups, {"params": list(critic.parameters()), "lr_scale": 1.0}]
    opt = torch.optim.AdamW(
        [{"params": g["params"], "lr": spec.lr * g["lr_scale"]} for g in groups],
        lr=spec.lr,
        weight_decay=spec.weight_decay,
    )
    steps_per_epoch = max(1, math.ceil(len(x_train) / spec.batch_size))
    total = spec.epochs * steps_per_epoch
    warmup = int(spec.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 2% of the peak
        if step < warmup:
            return (step + 1) / warmup
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    scaler = torch.amp.GradScaler("cuda", enabled=fp16 and device.type == "cuda")
    x_all = torch.as_tensor(x_train, dtype=torch.float32)
    y_all = torch.as_tensor(y_train, dtype=torch.long)
    ema = _Ema(model, spec.ema_decay) if spec.ema_decay > 0 else None
    writer = writer_for(run.log_dir)
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    best_score = -1.0
    bar = tqdm(total=total, desc=desc, unit="step", disable=not run.progress, leave=False)
    params = [p for g in groups for p in g["params"]]
    step = 0
    for epoch in range(spec.epochs):
        model.train()
        if hooks.on_epoch_start is not None:
            hooks.on_epoch_start(model, epoch)
        order = torch.randperm(len(x_all), generator=gen)
        sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "feature": 0.0, "grad_norm": 0.0}
        if critic is not None:
            sums["domain"] = 0.0
        n_ok, t0 = 0, time.perf_counter()
        for i in range(steps_per_epoch):
            progress_frac = step / max(1, total - 1)
            w = LossWeights(
                alpha=spec.alpha.at(progress_frac) if soft is not None else 0.0,
                temperature=spec.temperature.at(progress_frac),
                feature=spec.feature_weight.at(progress_frac),
                unlabeled=spec.unlabeled_weight,
                label_smoothing=spec.label_smoothing,
                trust_wrong_teacher=spec.trust_wrong_teacher,
            )
            idx = order[i * spec.batch_size : (i + 1) * spec.batch_size]
            xb = x_all[idx]
            xb = spec.spec_augment(xb, gen)
            xb, yb = xb.to(device), y_all[idx].to(device)
            # A train-mode forward updates buffers (BatchNorm statistics, QAT observers) before the loss
            # is known: keep a copy so that a skipped step cannot leave NaN in them.
            buffers = list(model.buffers())
            saved = [b.detach().clone() for b in buffers]
            targets: torch.Tensor = yb
            mixed = spec.mixup > 0 and int((yb != UNLABELED).sum()) > 1
            if mixed:
                xb, targets, lam, perm = _mix(gen, spec.mixup, xb, yb, n_classes)
            with torch.autocast(device.type, dtype=torch.float16, enabled=fp16 and device.type == "cuda"):
                logits = model(xb)
            t_logp = None
            if soft is not None:  # after the forward: a top-k cache needs the student's top-k
                t_logp = teacher_log_probs(soft.teacher_logits(idx, logits), w.temperature)
                if mixed:
                    t_logp = _mix_teacher(t_logp, lam, perm)
            feature_error = None
            if projection is not None and tap is not None and tap.value is not None and soft is not None:
                emb = soft.teacher_embeddings(idx, device)
                if mixed:  # the student saw the mixture: so does its target
                    emb = lam * emb + (1 - lam) * emb[perm]
                ok = torch.isfinite(emb).all(-1)  # masked rows must not leak a NaN gradient either
                err = ((projection(tap.value.float().flatten(1)) - torch.nan_to_num(emb)) ** 2).mean(-1)
                feature_error = torch.where(ok, err, torch.full_like(err, float("nan")))
            loss, parts = distill_loss(logits, targets, t_logp, w, feature_error)
            if critic is not None and tap is not None and tap.value is not None:
                domain_loss = critic.loss(tap.value, yb, progress_frac)
                loss = loss + domain_loss
                parts["domain"] = float(domain_loss.detach())
            opt.zero_grad(set_to_none=True)
            if not (torch.isfinite(loss) and bool(torch.isfinite(logits).all())):
                with torch.no_grad():
                    for b, s in zip(buffers, saved, strict=True):
                        b.resize_(s.shape).copy_(s)  # observers resize their buffers in place, too
                result.skipped_steps += 1
                if result.skipped_steps > MAX_SKIPPED_FRACTION * total + 3:
                    raise EdgekdError(
                        f"{desc}: {result.skipped_steps} steps had non-finite logits or loss; lower the "
                        "learning rate or check the input features for NaN/Inf"
                    )
                sched.step()
                step += 1
                bar.update(1)
                continue
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, 5.0))
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                ema.update(model)
            n_ok += 1
            row = {"loss": float(loss.detach()), **parts, "grad_norm": grad_norm}
            for k, v in row.items():
                sums[k] += v
            if writer is not None:
                for k, v in {
                    **row,
                    "alpha": w.alpha,
                    "temperature": w.temperature,
                    "lr": sched.get_last_lr()[0],
                }.items():
                    writer.add_scalar(f"{desc}/{k}", v, step)
            step += 1
            bar.update(1)
        epoch_s = time.perf_counter() - t0
        evaluated = ema.model if ema is not None else model
        if hooks.before_eval is not None:
            hooks.before_eval(evaluated)
        val_pred = predict(evaluated, x_val, device).argmax(1) if len(y_val) else np.zeros(0, dtype=np.int64)
        val_acc = float((val_pred == y_val).mean()) if len(y_val) else 0.0
        agreement = None
        if data.val_reference is not None and len(y_val):
            agreement = float((val_pred == data.val_reference).mean())
        hist = {
            "epoch": epoch + 1,
            **{k: v / max(1, n_ok) for k, v in sums.items()},
            "val_accuracy": val_acc,
            **({} if agreement is None else {"val_agreement": agreement}),
            "lr": float(opt.param_groups[0]["lr"]),
            "alpha": w.alpha,
            "temperature": w.temperature,
            "epoch_s": epoch_s,
        }
        result.history.append(hist)
        if writer is not None:
            writer.add_scalar(f"{desc}/val_accuracy", val_acc, step)
        bar.set_postfix(loss=f"{hist['loss']:.3f}", val=f"{val_acc:.3f}")
        score = val_acc if agreement is None else agreement
        if spec.keep_last or score >= best_score:
            best_score, result.best_val_accuracy, result.best_epoch = score, val_acc, epoch + 1
            result.best_val_agreement = agreement
            best_state = copy.deepcopy(evaluated.state_dict())
        elif spec.patience and epoch + 1 - result.best_epoch >= spec.patience:
            result.stopped_early = True
            bar.update(total - step)
            break
    bar.close()
    if tap is not None:
        tap.handle.remove()
    if writer is not None:
        writer.close()
    model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return result
