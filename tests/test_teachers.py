"""Teachers: the speech-embedding head and transformers classifiers (tiny random checkpoints, offline)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

from edgekd.config import TeacherConfig
from edgekd.errors import EdgekdError
from edgekd.models.teachers import HFTeacher, SpeechEmbeddingTeacher, build_teacher, load_hf_classifier

torch.set_num_threads(1)  # shared 2-core machine
CPU = torch.device("cpu")
CLASSES = ["low", "mid", "high"]
N_SAMPLES = 4000  # 0.25 s at 16 kHz
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 16),
    conv_kernel=(10, 3),
    conv_stride=(5, 2),
    num_feat_extract_layers=2,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    classifier_proj_size=16,
)
CONFIGS = {"wav2vec2": transformers.Wav2Vec2Config, "hubert": transformers.HubertConfig}
CLASSIFIERS = {
    "wav2vec2": transformers.Wav2Vec2ForSequenceClassification,
    "hubert": transformers.HubertForSequenceClassification,
}
BACKBONE_KEY = "encoder.layers.0.attention.k_proj.weight"
FEATURE_KEY = "feature_extractor.conv_layers.0.conv.weight"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline even if huggingface_hub was imported (by another test module) before HF_HUB_OFFLINE was set."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def save_tiny(
    folder: Path, arch: str, model_cls: type | None = None, num_labels: int = 5, seed: int = 0
) -> Path:
    """A randomly initialised tiny checkpoint written by save_pretrained (config.json + model.safetensors)."""
    torch.manual_seed(seed)
    model_cls = model_cls or CLASSIFIERS[arch]
    model_cls(CONFIGS[arch](**TINY, num_labels=num_labels)).save_pretrained(folder)
    return folder


def tones(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """0.25 s noisy tones whose frequency depends on the class (300 Hz / 1.2 kHz / 3.5 kHz, +-5%)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    t = np.arange(N_SAMPLES) / 16000
    freq = np.array([300.0, 1200.0, 3500.0])[y] * rng.uniform(0.95, 1.05, n)
    x = 0.5 * np.sin(2 * np.pi * freq[:, None] * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    return (x + 0.05 * rng.normal(size=x.shape)).astype(np.float32), y


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {arch: save_tiny(root / arch, arch) for arch in CONFIGS}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (*tones(24, seed=0), *tones(12, seed=1))


def hf_cfg(
    source: str | Path | None, arch: str = "wav2vec2", epochs: int = 2, lr: float = 1e-3
) -> TeacherConfig:
    return TeacherConfig(
        kind="hf",
        source=None if source is None else str(source),
        arch=arch,
        epochs=epochs,
        batch_size=8,
        lr=lr,
    )


@pytest.fixture(scope="module")
def w2v_teacher(ckpts, data) -> tuple[HFTeacher, object]:
    x_tr, y_tr, x_val, y_val = data
    teacher = HFTeacher(hf_cfg(ckpts["wav2vec2"], epochs=4, lr=3e-3), CLASSES, 0, CPU)
    result = teacher.fit(teacher.features(x_tr), y_tr, teacher.features(x_val), y_val, progress=False)
    return teacher, result


# --- transformers teachers ---------------------------------------------------------------------------------


def test_hf_teacher_fine_tunes_a_local_directory(w2v_teacher, ckpts, data) -> None:
    teacher, result = w2v_teacher
    _, _, x_val, y_val = data
    logits = teacher.logits(teacher.features(x_val))
    assert logits.shape == (12, 3) and logits.dtype == np.float32 and np.isfinite(logits).all()
    assert len(result.history) == 4
    assert result.best_val_accuracy > 0.5  # chance is 1/3; the tones are easy
    assert float((logits.argmax(1) == y_val).mean()) == pytest.approx(result.best_val_accuracy)
    assert teacher.name == "hf:wav2vec2" and "wav2vec2" in teacher.why
    assert int(teacher.identity()["params"]) == sum(p.numel() for p in teacher.model.parameters())
    # the feature encoder is frozen; the transformer layers are fine-tuned from the checkpoint
    ckpt = load_file(str(ckpts["wav2vec2"] / "model.safetensors"))
    state = teacher.model.state_dict()
    assert torch.equal(state[f"wav2vec2.{FEATURE_KEY}"], ckpt[f"wav2vec2.{FEATURE_KEY}"])
    assert not torch.equal(state[f"wav2vec2.{BACKBONE_KEY}"], ckpt[f"wav2vec2.{BACKBONE_KEY}"])


def test_hf_features_are_normalised_per_clip(data) -> None:
    x = data[0][:3] * 0.1 + 0.2
    feats = HFTeacher(hf_cfg("unused"), CLASSES, 0, CPU, load=False).features(x)
    assert feats.shape == x.shape and feats.dtype == np.float32
    np.testing.assert_allclose(feats.mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(feats.std(1), 1.0, atol=1e-4)


def test_hf_save_restore_round_trip(w2v_teacher, ckpts, data, tmp_path: Path) -> None:
    teacher, _ = w2v_teacher
    feats = teacher.features(data[2])
    teacher.save(tmp_path)
    # load=False must not touch the source: a hub id that cannot be fetched offline proves it
    restored = build_teacher(hf_cfg("facebook/wav2vec2-base"), CLASSES, 0, CPU, load=False)
    assert isinstance(restored, HFTeacher) and restored.name == "hf:wav2vec2"
    restored.restore(tmp_path, feats.shape[1:])
    np.testing.assert_array_equal(restored.logits(feats), teacher.logits(feats))
    assert restored.model.config.id2label == dict(enumerate(CLASSES))


def test_hf_teacher_from_safetensors_file(ckpts, data) -> None:
    x_tr, y_tr, x_val, y_val = data
    path = ckpts["wav2vec2"] / "model.safetensors"
    teacher = HFTeacher(hf_cfg(path, epochs=1), CLASSES, 0, CPU)
    ckpt = load_file(str(path))
    key = f"wav2vec2.{BACKBONE_KEY}"
    assert torch.equal(teacher.model.state_dict()[key], ckpt[key])  # pretrained weights, not a random init
    result = teacher.fit(teacher.features(x_tr), y_tr, teacher.features(x_val), y_val, progress=False)
    assert len(result.history) == 1
    logits = teacher.logits(teacher.features(x_val))
    assert logits.shape == (12, 3) and np.isfinite(logits).all()


def test_hubert_teacher_fits_and_round_trips(ckpts, data, tmp_path: Path) -> None:
    x_tr, y_tr, x_val, y_val = data
    cfg = hf_cfg(ckpts["hubert"], arch="hubert")
    teacher = build_teacher(cfg, CLASSES, 0, CPU)
    assert isinstance(teacher, HFTeacher) and teacher.name == "hf:hubert"
    assert isinstance(teacher.model, transformers.HubertForSequenceClassification)
    teacher.fit(teacher.features(x_tr), y_tr, teacher.features(x_val), y_val, progress=False)
    feats = teacher.features(x_val)
    logits = teacher.logits(feats)
    assert logits.shape == (12, 3) and np.isfinite(logits).all()
    teacher.save(tmp_path)
    restored = build_teacher(cfg, CLASSES, 0, CPU, load=False)
    restored.restore(tmp_path, feats.shape[1:])
    np.testing.assert_array_equal(restored.logits(feats), logits)


@pytest.mark.parametrize(
    "arch,model_cls,prefix",
    [
        ("wav2vec2", transformers.Wav2Vec2ForPreTraining, "wav2vec2."),  # what facebook/wav2vec2-base is
        ("hubert", transformers.HubertModel, ""),  # what facebook/hubert-base-ls960 is: no prefix, no head
    ],
)
@pytest.mark.parametrize("as_file", [False, True])
def test_pretraining_and_base_checkpoints_load(
    tmp_path: Path, arch: str, model_cls: type, prefix: str, as_file: bool
) -> None:
    folder = save_tiny(tmp_path / "ckpt", arch, model_cls)
    ckpt = load_file(str(folder / "model.safetensors"))
    source = folder / "model.safetensors" if as_file else folder
    model = load_hf_classifier(str(source), arch, 3, CLASSES)
    assert isinstance(model, CLASSIFIERS[arch]) and model.config.num_labels == 3
    assert torch.equal(model.state_dict()[f"{arch}.{BACKBONE_KEY}"], ckpt[f"{prefix}{BACKBONE_KEY}"])


@pytest.mark.parametrize("as_file", [False, True])
def test_weights_of_another_architecture_are_rejected(ckpts, as_file: bool) -> None:
    source = ckpts["hubert"] / "model.safetensors" if as_file else ckpts["hubert"]
    with pytest.raises(EdgekdError, match="do not match a wav2vec2 model"):
        load_hf_classifier(str(source), "wav2vec2", 3, CLASSES)


@pytest.mark.parametrize("as_file", [False, True])
def test_labels_follow_the_classes_not_the_checkpoint(ckpts, as_file: bool) -> None:
    """The checkpoint was saved with 5 labels; the corpus has 3: a fresh 3-way head with our names."""
    assert len(json.loads((ckpts["wav2vec2"] / "config.json").read_text())["id2label"]) == 5
    source = ckpts["wav2vec2"] / "model.safetensors" if as_file else ckpts["wav2vec2"]
    model = load_hf_classifier(str(source), "wav2vec2", 3, CLASSES)
    assert model.config.num_labels == 3
    assert model.config.id2label == {0: "low", 1: "mid", 2: "high"}
    assert model.config.label2id == {"low": 0, "mid": 1, "high": 2}
    assert model.classifier.out_features == 3 and torch.isfinite(model.classifier.weight).all()
    out = model(input_values=torch.randn(2, N_SAMPLES)).logits
    assert out.shape == (2, 3)


def test_hub_id_offline_fails_fast_with_instructions() -> None:
    start = time.perf_counter()
    with pytest.raises(EdgekdError) as err:
        HFTeacher(hf_cfg("facebook/wav2vec2-base"), CLASSES, 0, CPU)
    assert time.perf_counter() - start < 1.0
    msg = str(err.value)
    assert "facebook/wav2vec2-base" in msg and "offline" in msg
    assert "directory" in msg and "model.safetensors" in msg and "hf download" in msg


def test_source_errors(ckpts, tmp_path: Path) -> None:
    with pytest.raises(EdgekdError, match="file not found"):
        load_hf_classifier(str(tmp_path / "missing.safetensors"), "wav2vec2", 3, CLASSES)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "model.safetensors").write_bytes((ckpts["wav2vec2"] / "model.safetensors").read_bytes())
    with pytest.raises(EdgekdError, match="config.json"):
        load_hf_classifier(str(lonely / "model.safetensors"), "wav2vec2", 3, CLASSES)
    with pytest.raises(EdgekdError, match="needs teacher.source"):
        HFTeacher(hf_cfg(None), CLASSES, 0, CPU)
    with pytest.raises(EdgekdError, match="needs teacher.source"):
        build_teacher(hf_cfg(None), CLASSES, 0, CPU, load=False)
    with pytest.raises(EdgekdError, match="expected a hub id, a directory or a .safetensors"):
        load_hf_classifier(str(ckpts["wav2vec2"] / "config.json"), "wav2vec2", 3, CLASSES)
    start = time.perf_counter()
    with pytest.raises(EdgekdError, match="directory not found"):  # a typo in a local path is not a hub id
        load_hf_classifier(str(tmp_path / "no_such_dir"), "wav2vec2", 3, CLASSES)
    assert time.perf_counter() - start < 1.0


# --- speech-embedding teacher (head only; the backbone has its own tests) ---------------------------------


def embeddings(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, 9, 96] stand-ins for speech embeddings: class-dependent mean pattern plus noise."""
    means = np.random.default_rng(99).normal(size=(3, 9, 96)).astype(np.float32)
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return (0.5 * means[y] + rng.normal(size=(n, 9, 96))).astype(np.float32), y


@pytest.fixture(scope="module")
def se_teacher() -> SpeechEmbeddingTeacher:
    cfg = TeacherConfig(kind="speech_embedding", epochs=5, lr=1e-3, batch_size=16)
    teacher = build_teacher(cfg, CLASSES, 0, CPU)
    assert isinstance(teacher, SpeechEmbeddingTeacher)
    return teacher


def test_speech_embedding_head_fit_and_round_trip(se_teacher: SpeechEmbeddingTeacher, tmp_path: Path) -> None:
    x_tr, y_tr = embeddings(60, seed=0)
    x_val, y_val = embeddings(30, seed=1)
    result = se_teacher.fit(x_tr, y_tr, x_val, y_val, progress=False)
    assert len(result.history) == 5 and result.best_val_accuracy > 0.9
    logits = se_teacher.logits(x_val)
    assert logits.shape == (30, 3) and logits.dtype == np.float32 and np.isfinite(logits).all()
    assert float((logits.argmax(1) == y_val).mean()) == pytest.approx(result.best_val_accuracy)
    se_teacher.save(tmp_path)
    fresh = SpeechEmbeddingTeacher(se_teacher.cfg, 3, seed=0)
    fresh.restore(tmp_path, x_val.shape[1:])
    np.testing.assert_array_equal(fresh.logits(x_val), logits)
    identity = se_teacher.identity()
    assert "backbone" in identity and {"melspectrogram.tflite", "embedding_model.tflite"} <= set(identity)
    assert all(len(v) == 64 for k, v in identity.items() if k.endswith(".tflite"))


def test_speech_embedding_features_shape(se_teacher: SpeechEmbeddingTeacher) -> None:
    clips = np.random.default_rng(0).normal(scale=0.1, size=(2, 16000)).astype(np.float32)
    feats = se_teacher.features(clips)
    assert feats.shape == (2, 9, 96) and feats.dtype == np.float32 and np.isfinite(feats).all()
