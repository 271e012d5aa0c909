"""Teachers: the speech-embedding head and transformers classifiers (tiny random checkpoints, offline)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it

import json
import pickle
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from conftest import CLASSIFIERS, CONFIGS, save_tiny
from safetensors.torch import load_file
from torch import nn

from edgekd.config import TeacherConfig
from edgekd.errors import EdgekdError
from edgekd.models import teacher_sources
from edgekd.models.teachers import (
    ARCHS,
    HFTeacher,
    SpeechEmbeddingTeacher,
    arch_spec,
    build_teacher,
    llrd_param_groups,
    load_hf_classifier,
    teacher_device,
)
from edgekd.train.auto_batch import auto_batch_size, saved_tensor_bytes, step_bytes_estimate

torch.set_num_threads(1)  # shared 2-core machine
CPU = torch.device("cpu")
CLASSES = ["low", "mid", "high"]
N_SAMPLES = 4000  # 0.25 s at 16 kHz
BACKBONE_KEY = "encoder.layers.0.attention.k_proj.weight"
FEATURE_KEY = "feature_extractor.conv_layers.0.conv.weight"


@pytest.fixture(autouse=True, scope="module")
def _offline_and_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Offline even if huggingface_hub was imported (by another test module) before HF_HUB_OFFLINE was
    set; pytest's temporary folders are an allowed root for teacher weights. Module-scoped, so that the
    module-scoped teacher fixtures see it too."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setenv("EDGEKD_MODELS", str(tmp_path_factory.getbasetemp()))
        yield


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
    source: str | Path | None, arch: str = "wav2vec2", epochs: int = 2, lr: float = 1e-3, **kw: Any
) -> TeacherConfig:
    return TeacherConfig(
        kind="hf",
        source=None if source is None else str(source),
        arch=arch,
        epochs=epochs,
        batch_size=kw.pop("batch_size", 8),
        lr=lr,
        **kw,
    )


def sibling_config(src: Path, dst: Path) -> None:
    """config.json next to a single-file checkpoint, as save_pretrained wrote it."""
    shutil.copy(src / "config.json", dst / "config.json")


@pytest.fixture(scope="module")
def w2v_teacher(ckpts, data) -> tuple[HFTeacher, object]:
    x_tr, y_tr, x_val, y_val = data
    teacher = HFTeacher(hf_cfg(ckpts["wav2vec2"], epochs=4, lr=3e-3), CLASSES, 0, CPU)
    result = teacher.fit(teacher.features(x_tr), y_tr, teacher.features(x_val), y_val, progress=False)
    return teacher, result


# --- transformers teachers: every architecture ------------------------------------------------------------


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_each_arch_loads_fits_embeds_and_round_trips(ckpts, data, arch: str, tmp_path: Path) -> None:
    x_tr, y_tr, x_val, y_val = data
    cfg = hf_cfg(ckpts[arch], arch=arch, epochs=1)
    teacher = build_teacher(cfg, CLASSES, 0, CPU)
    assert isinstance(teacher, HFTeacher) and teacher.name == f"hf:{arch}"
    assert isinstance(teacher.model, CLASSIFIERS[arch])
    feats = teacher.features(x_val)
    expected = (12, 16, 100) if arch == "whisper" else (12, N_SAMPLES)  # whisper: log-mel padded to 1 s
    assert feats.shape == expected and feats.dtype == np.float32
    result = teacher.fit(teacher.features(x_tr), y_tr, feats, y_val, progress=False)
    assert len(result.history) == 1
    logits, emb = teacher.logits(feats), teacher.embeddings(feats)
    assert logits.shape == (12, 3) and logits.dtype == np.float32 and np.isfinite(logits).all()
    assert emb.shape == (12, 32) and emb.dtype == np.float32 and np.isfinite(emb).all()
    teacher.save(tmp_path)
    restored = build_teacher(cfg, CLASSES, 0, CPU, load=False)
    restored.restore(tmp_path, feats.shape[1:])
    np.testing.assert_array_equal(restored.logits(restored.features(x_val)), logits)
    np.testing.assert_array_equal(restored.embeddings(feats), emb)


def test_embeddings_are_the_mean_pooled_last_hidden_state(w2v_teacher, data) -> None:
    teacher, _ = w2v_teacher
    feats = teacher.features(data[2][:2])
    with torch.no_grad():
        hidden = teacher.model.wav2vec2(input_values=torch.from_numpy(feats)).last_hidden_state
    np.testing.assert_allclose(teacher.embeddings(feats), hidden.mean(1).numpy(), rtol=1e-5, atol=1e-6)


def test_hf_teacher_fine_tunes_a_local_directory(w2v_teacher, ckpts, data) -> None:
    teacher, result = w2v_teacher
    _, _, x_val, y_val = data
    logits = teacher.logits(teacher.features(x_val))
    assert logits.shape == (12, 3) and logits.dtype == np.float32 and np.isfinite(logits).all()
    assert len(result.history) == 4
    assert result.best_val_accuracy > 0.5  # chance is 1/3; the tones are easy
    assert float((logits.argmax(1) == y_val).mean()) == pytest.approx(result.best_val_accuracy)
    assert teacher.name == "hf:wav2vec2" and "wav2vec2" in teacher.why and "fresh 3-class head" in teacher.why
    identity = teacher.identity()
    assert int(identity["params"]) == sum(p.numel() for p in teacher.model.parameters())
    assert identity["weights"] == str(ckpts["wav2vec2"].resolve())
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


def test_hf_save_restore_round_trip(w2v_teacher, data, tmp_path: Path) -> None:
    teacher, _ = w2v_teacher
    feats = teacher.features(data[2])
    teacher.save(tmp_path)
    # load=False must not touch the source: a hub id that cannot be fetched offline proves it
    restored = build_teacher(hf_cfg("facebook/wav2vec2-base"), CLASSES, 0, CPU, load=False)
    assert isinstance(restored, HFTeacher) and restored.name == "hf:wav2vec2"
    with pytest.raises(EdgekdError, match="restore"):
        restored.logits(feats)
    restored.restore(tmp_path, feats.shape[1:])
    np.testing.assert_array_equal(restored.logits(feats), teacher.logits(feats))
    assert restored.model.config.id2label == dict(enumerate(CLASSES))
    other = build_teacher(hf_cfg("facebook/wav2vec2-base"), ["a", "b", "c"], 0, CPU, load=False)
    with pytest.raises(EdgekdError, match="fitted for the labels"):
        other.restore(tmp_path, feats.shape[1:])
    with pytest.raises(EdgekdError, match="no fitted teacher"):
        other.restore(tmp_path / "nothing", feats.shape[1:])


# --- sources ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.safetensors", "teacher.pt", "teacher.pth"])
def test_single_file_checkpoints_load(ckpts, data, tmp_path: Path, name: str) -> None:
    ckpt = load_file(str(ckpts["wav2vec2"] / "model.safetensors"))
    path = tmp_path / name
    if name.endswith(".safetensors"):
        shutil.copy(ckpts["wav2vec2"] / "model.safetensors", path)
    else:
        torch.save(ckpt, path)  # a plain state dict: torch.load(weights_only=True) reads it
    sibling_config(ckpts["wav2vec2"], tmp_path)
    teacher = HFTeacher(hf_cfg(path, epochs=1), CLASSES, 0, CPU)
    key = f"wav2vec2.{BACKBONE_KEY}"
    assert torch.equal(teacher.model.state_dict()[key], ckpt[key])  # pretrained weights, not a random init
    x_tr, y_tr, x_val, y_val = data
    teacher.fit(teacher.features(x_tr), y_tr, teacher.features(x_val), y_val, progress=False)
    assert teacher.logits(teacher.features(x_val)).shape == (12, 3)


@pytest.mark.parametrize(
    "arch,model_cls,prefix,key",
    [
        (
            "wav2vec2",
            transformers.Wav2Vec2ForPreTraining,
            "wav2vec2.",
            BACKBONE_KEY,
        ),  # facebook/wav2vec2-base
        ("hubert", transformers.HubertModel, "", BACKBONE_KEY),  # facebook/hubert-base-ls960: no prefix/head
        # openai/whisper-*: encoder and decoder under "model."; the classifier takes the encoder
        ("whisper", transformers.WhisperForConditionalGeneration, "model.", "encoder.layers.0.fc1.weight"),
    ],
)
@pytest.mark.parametrize("as_file", [False, True])
def test_pretraining_and_base_checkpoints_load(
    tmp_path: Path, arch: str, model_cls: type, prefix: str, key: str, as_file: bool
) -> None:
    folder = save_tiny(tmp_path / "ckpt", arch, model_cls)
    ckpt = load_file(str(folder / "model.safetensors"))
    source = folder / "model.safetensors" if as_file else folder
    loaded = load_hf_classifier(str(source), arch, CLASSES)
    model = loaded.model
    assert isinstance(model, CLASSIFIERS[arch]) and model.config.num_labels == 3 and loaded.head == "fresh"
    ours = f"{arch}.{key}" if arch != "whisper" else key
    assert torch.equal(model.state_dict()[ours], ckpt[f"{prefix}{key}"])


def test_hub_id_offline_fails_fast_with_instructions() -> None:
    start = time.perf_counter()
    with pytest.raises(EdgekdError) as err:
        HFTeacher(hf_cfg("facebook/wav2vec2-base"), CLASSES, 0, CPU)
    assert time.perf_counter() - start < 1.0
    msg = str(err.value)
    assert "facebook/wav2vec2-base" in msg and "offline" in msg
    assert "directory" in msg and "model.safetensors" in msg and "hf download facebook/wav2vec2-base" in msg


def test_hub_id_offline_uses_the_local_cache(ckpts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An offline machine that has the model in its hub cache loads it from there."""
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--org--tiny-w2v"
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(ckpts["wav2vec2"], snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = load_hf_classifier("org/tiny-w2v", "wav2vec2", CLASSES)
    assert loaded.weights == str(snapshot.resolve())


def test_hub_id_online_is_left_to_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Online, a hub id is downloaded by transformers (not here: resolving it touches no network)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    src = teacher_sources.resolve_source("facebook/wav2vec2-base")
    assert (src.kind, src.location, src.config_dir) == (
        "hub",
        "facebook/wav2vec2-base",
        "facebook/wav2vec2-base",
    )


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the bare pickle below
def test_code_executing_pickle_is_refused_without_running(ckpts, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (exec, (f"open({str(marker)!r}, 'w').write('code ran')",))

    sibling_config(ckpts["wav2vec2"], tmp_path)
    zipped = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1024), "x": Payload()}, zipped)  # torch's zip format
    legacy = tmp_path / "evil_legacy.pth"
    legacy.write_bytes(pickle.dumps({"w": Payload(), "pad": "x" * 2048}))  # a bare pickle
    module = tmp_path / "module.pt"
    torch.save(nn.Linear(64, 64), module)  # a whole module: needs its class, so also code
    for path in (zipped, legacy, module):
        with pytest.raises(EdgekdError) as err:
            load_hf_classifier(str(path), "wav2vec2", CLASSES)
        msg = str(err.value)
        assert "not a plain tensor state dict" in msg and str(path) in msg
        assert "safetensors" in msg and "weights_only=True" in msg
    assert not marker.exists()


def test_corrupt_checkpoints_give_clear_errors(ckpts, tmp_path: Path) -> None:
    sibling_config(ckpts["wav2vec2"], tmp_path)
    good = (ckpts["wav2vec2"] / "model.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    for name in ("truncated.safetensors", "garbage.safetensors"):
        with pytest.raises(EdgekdError, match=f"{name} is not a valid safetensors file"):
            load_hf_classifier(str(tmp_path / name), "wav2vec2", CLASSES)
    torch.save(load_file(str(ckpts["wav2vec2"] / "model.safetensors")), tmp_path / "whole.pt")
    pt = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(pt[: len(pt) // 2])
    (tmp_path / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(EdgekdError, match="truncated.pt could not be read as a PyTorch checkpoint"):
        load_hf_classifier(str(tmp_path / "truncated.pt"), "wav2vec2", CLASSES)
    garbage = "garbage.pt (is not a plain tensor state dict|could not be read)"
    for seed in range(20):  # random bytes stop the unpickler in many different ways: always a clear error
        (tmp_path / "garbage.pt").write_bytes(np.random.default_rng(seed).bytes(4096))
        with pytest.raises(EdgekdError, match=garbage):
            load_hf_classifier(str(tmp_path / "garbage.pt"), "wav2vec2", CLASSES)
    torch.save([torch.zeros(512)], tmp_path / "list.pt")
    with pytest.raises(EdgekdError, match="not a plain tensor state dict.*holds a list"):
        load_hf_classifier(str(tmp_path / "list.pt"), "wav2vec2", CLASSES)
    folder = tmp_path / "dir"
    shutil.copytree(ckpts["wav2vec2"], folder)
    (folder / "model.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(EdgekdError, match="could not load its weights"):
        load_hf_classifier(str(folder), "wav2vec2", CLASSES)


def test_file_size_checks(ckpts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sibling_config(ckpts["wav2vec2"], tmp_path)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 377000000\n"
    (tmp_path / "pointer.safetensors").write_bytes(pointer)
    with pytest.raises(EdgekdError, match="empty.safetensors is empty"):
        load_hf_classifier(str(tmp_path / "empty.safetensors"), "wav2vec2", CLASSES)
    with pytest.raises(EdgekdError, match=f"pointer.safetensors is only {len(pointer)} bytes.*Git LFS"):
        load_hf_classifier(str(tmp_path / "pointer.safetensors"), "wav2vec2", CLASSES)
    monkeypatch.setattr(teacher_sources, "MAX_WEIGHTS_BYTES", 10_000)
    with pytest.raises(EdgekdError, match="model.safetensors is 0.0 GB, over the"):
        load_hf_classifier(str(ckpts["wav2vec2"] / "model.safetensors"), "wav2vec2", CLASSES)
    with pytest.raises(EdgekdError, match="model.safetensors is 0.0 GB, over the"):  # inside a directory too
        load_hf_classifier(str(ckpts["wav2vec2"]), "wav2vec2", CLASSES)


def test_paths_outside_the_allowed_roots_are_refused(
    ckpts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed, outside, work = tmp_path / "models", tmp_path / "outside", tmp_path / "work"
    for d in (allowed, work):
        d.mkdir()
    shutil.copytree(ckpts["wav2vec2"], outside)
    monkeypatch.setenv("EDGEKD_MODELS", str(allowed))
    monkeypatch.chdir(work)
    (allowed / "link").symlink_to(outside)  # a symlink inside the root that leads out of it
    escapes = [
        ("../" * 20 + "etc/passwd", Path("/etc/passwd")),  # relative to the cwd, an allowed root
        (f"{allowed}/../outside/model.safetensors", outside / "model.safetensors"),
        (f"{allowed}/link", outside),
        (f"{allowed}/link/model.safetensors", outside / "model.safetensors"),
    ]
    for source, target in escapes:
        with pytest.raises(EdgekdError) as err:
            load_hf_classifier(source, "wav2vec2", CLASSES)
        msg = str(err.value)
        assert f"resolves to {target}" in msg and "outside the folders" in msg, msg
        assert str(allowed) in msg and str(work) in msg  # the allowed roots are listed
        assert "teacher.allowed_roots" in msg and "EDGEKD_MODELS" in msg
    # allowing the folder, as the message says, lets it load
    loaded = load_hf_classifier(f"{allowed}/link", "wav2vec2", CLASSES, allowed_roots=[str(outside)])
    assert loaded.weights == str(outside)


def test_source_errors(ckpts, tmp_path: Path) -> None:
    with pytest.raises(EdgekdError, match="file not found"):
        load_hf_classifier(str(tmp_path / "missing.safetensors"), "wav2vec2", CLASSES)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "model.safetensors").write_bytes((ckpts["wav2vec2"] / "model.safetensors").read_bytes())
    with pytest.raises(EdgekdError, match="needs its config.json"):
        load_hf_classifier(str(lonely / "model.safetensors"), "wav2vec2", CLASSES)
    with pytest.raises(EdgekdError, match="has no config.json"):
        load_hf_classifier(str(lonely), "wav2vec2", CLASSES)
    (lonely / "model.safetensors").unlink()
    (lonely / "config.json").write_text("{}")
    with pytest.raises(EdgekdError, match="holds no weights"):
        load_hf_classifier(str(lonely), "wav2vec2", CLASSES)
    with pytest.raises(EdgekdError, match="needs teacher.source"):
        HFTeacher(hf_cfg(None), CLASSES, 0, CPU)
    with pytest.raises(EdgekdError, match="needs teacher.source"):
        build_teacher(hf_cfg(None), CLASSES, 0, CPU, load=False)
    with pytest.raises(EdgekdError, match="expected a hub id, a save_pretrained directory, a .safetensors"):
        load_hf_classifier(str(ckpts["wav2vec2"] / "config.json"), "wav2vec2", CLASSES)
    start = time.perf_counter()
    with pytest.raises(EdgekdError, match="directory not found"):  # a typo in a local path is not a hub id
        load_hf_classifier(str(tmp_path / "no_such_dir"), "wav2vec2", CLASSES)
    with pytest.raises(EdgekdError, match="file not found"):  # nor is a relative weights file
        load_hf_classifier("models/teacher.safetensors", "wav2vec2", CLASSES)
    assert time.perf_counter() - start < 1.0
    bad = tmp_path / "bad_json"
    shutil.copytree(ckpts["wav2vec2"], bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(EdgekdError, match="config.json is not a readable JSON config"):
        load_hf_classifier(str(bad), "wav2vec2", CLASSES)


# --- architecture checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("as_file", [False, True])
def test_architecture_mismatch_is_refused(ckpts, as_file: bool, tmp_path: Path) -> None:
    source = ckpts["hubert"] / "model.safetensors" if as_file else ckpts["hubert"]
    with pytest.raises(EdgekdError, match="declares model_type 'hubert'.*set teacher.arch: hubert.*whisper"):
        load_hf_classifier(str(source), "wav2vec2", CLASSES)
    # a config.json of the right type beside weights of another architecture: keys cannot match
    (tmp_path / "model.safetensors").write_bytes((ckpts["hubert"] / "model.safetensors").read_bytes())
    sibling_config(ckpts["wav2vec2"], tmp_path)
    source = tmp_path / "model.safetensors" if as_file else tmp_path
    with pytest.raises(EdgekdError, match="weights do not match a wav2vec2 model"):
        load_hf_classifier(str(source), "wav2vec2", CLASSES)


def test_unknown_architecture_lists_the_supported_ones(ckpts, tmp_path: Path) -> None:
    shutil.copytree(ckpts["wav2vec2"], tmp_path / "bert")
    config = json.loads((tmp_path / "bert" / "config.json").read_text())
    (tmp_path / "bert" / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    supported = "wav2vec2, hubert, wavlm, data2vec-audio, whisper"
    with pytest.raises(EdgekdError, match=f"model_type 'bert'.*supports the architectures {supported}"):
        load_hf_classifier(str(tmp_path / "bert"), "wav2vec2", CLASSES)
    with pytest.raises(EdgekdError, match=f"unknown teacher.arch 'conformer'; supported: {supported}"):
        arch_spec("conformer")
    assert list(ARCHS) == supported.split(", ")


# --- classification heads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("as_file", [False, True])
def test_generic_head_is_replaced_for_the_corpus_classes(ckpts, as_file: bool) -> None:
    """The checkpoint's head has 5 unnamed labels (LABEL_0..): a fresh 3-way head with our names."""
    assert len(json.loads((ckpts["wav2vec2"] / "config.json").read_text())["id2label"]) == 5
    source = ckpts["wav2vec2"] / "model.safetensors" if as_file else ckpts["wav2vec2"]
    model = load_hf_classifier(str(source), "wav2vec2", CLASSES).model
    assert model.config.num_labels == 3
    assert model.config.id2label == {0: "low", 1: "mid", 2: "high"}
    assert model.config.label2id == {"low": 0, "mid": 1, "high": 2}
    assert model.classifier.out_features == 3 and torch.isfinite(model.classifier.weight).all()
    assert model(input_values=torch.randn(2, N_SAMPLES)).logits.shape == (2, 3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint whose head was trained for ["low", "mid", "high"]."""
    return save_tiny(tmp_path_factory.mktemp("trained") / "w2v", "wav2vec2", labels=CLASSES, seed=3)


def test_trained_head_with_the_corpus_labels_is_kept(trained: Path) -> None:
    ckpt = load_file(str(trained / "model.safetensors"))
    loaded = load_hf_classifier(str(trained), "wav2vec2", CLASSES)
    assert loaded.head == "kept"
    for key in ("classifier.weight", "projector.weight"):
        assert torch.equal(loaded.model.state_dict()[key], ckpt[key])
    teacher = HFTeacher(hf_cfg(trained), CLASSES, 0, CPU)
    assert "trained head already has the corpus labels" in teacher.why


@pytest.mark.parametrize(
    "classes,extra",
    [(["yes", "no", "up"], ""), (["high", "mid", "low"], "the same labels in another order")],
)
def test_trained_head_with_other_labels_is_refused(trained: Path, classes: list[str], extra: str) -> None:
    with pytest.raises(EdgekdError) as err:
        HFTeacher(hf_cfg(trained), classes, 0, CPU)
    msg = str(err.value)
    assert str(CLASSES) in msg and str(classes) in msg and extra in msg
    assert "teacher.reset_head: true" in msg and "--set teacher.reset_head=true" in msg


def test_reset_head_replaces_a_trained_head(trained: Path) -> None:
    ckpt = load_file(str(trained / "model.safetensors"))
    classes = ["yes", "no", "up", "down"]
    teacher = HFTeacher(hf_cfg(trained, reset_head=True), classes, 0, CPU)
    state = teacher.model.state_dict()
    assert (
        teacher.model.config.id2label == dict(enumerate(classes)) and state["classifier.weight"].shape[0] == 4
    )
    assert not torch.equal(state["projector.weight"], ckpt["projector.weight"])
    assert torch.equal(state[f"wav2vec2.{BACKBONE_KEY}"], ckpt[f"wav2vec2.{BACKBONE_KEY}"])


# --- fine-tuning options ------------------------------------------------------------------------------------


def test_llrd_groups_decay_with_depth(ckpts) -> None:
    model = load_hf_classifier(str(ckpts["wav2vec2"]), "wav2vec2", CLASSES).model
    groups = llrd_param_groups(model, "wav2vec2", 0.5)
    scales = [g["lr_scale"] for g in groups]
    assert scales == [1.0, 0.5, 0.25, 0.125]  # head, layer 1, layer 0, below the layers (L = 2)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(scale_of)  # each parameter once
    named = dict(model.named_parameters())
    assert scale_of[id(named["classifier.weight"])] == scale_of[id(named["projector.bias"])] == 1.0
    assert scale_of[id(named["wav2vec2.encoder.layers.1.attention.k_proj.weight"])] == 0.5
    assert scale_of[id(named["wav2vec2.encoder.layers.0.attention.k_proj.weight"])] == 0.25
    for name in ("feature_projection.projection.weight", "encoder.layer_norm.weight", FEATURE_KEY):
        assert scale_of[id(named[f"wav2vec2.{name}"])] == 0.125  # post-LN: the norm precedes the layers
    model.freeze_feature_encoder()
    frozen = llrd_param_groups(model, "wav2vec2", 0.5)
    assert id(named[f"wav2vec2.{FEATURE_KEY}"]) not in {id(p) for g in frozen for p in g["params"]}
    assert [len(g["params"]) for g in llrd_param_groups(model, "wav2vec2", 1.0)] == [
        sum(p.requires_grad for p in model.parameters())
    ]


def test_llrd_whisper_final_norm_sits_on_top(ckpts) -> None:
    model = load_hf_classifier(str(ckpts["whisper"]), "whisper", CLASSES).model
    groups = llrd_param_groups(model, "whisper", 0.5)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale_of[id(named["encoder.layer_norm.weight"])] == 1.0  # pre-LN: after the last layer
    assert scale_of[id(named["encoder.layers.1.fc1.weight"])] == 0.5
    assert scale_of[id(named["encoder.conv1.weight"])] == 0.125


def test_fine_tuning_options(ckpts, data) -> None:
    x_tr, y_tr, x_val, y_val = data
    ckpt = load_file(str(ckpts["wav2vec2"] / "model.safetensors"))
    cfg = hf_cfg(
        ckpts["wav2vec2"],
        epochs=1,
        freeze_feature_encoder=False,
        gradient_checkpointing=True,
        layer_lr_decay=0.8,
        batch_size=0,
    )
    teacher = HFTeacher(cfg, CLASSES, 0, CPU)
    assert teacher.model.is_activation_checkpointing
    teacher.fit(teacher.features(x_tr), y_tr, teacher.features(x_val), y_val, progress=False)
    assert teacher.batch_size == 32  # automatic: the whole (tiny) training set fits in one batch
    key = f"wav2vec2.{FEATURE_KEY}"  # the feature encoder was trained too
    assert not torch.equal(teacher.model.state_dict()[key], ckpt[key])
    frozen = HFTeacher(hf_cfg(ckpts["whisper"], arch="whisper"), CLASSES, 0, CPU).model
    assert not any(p.requires_grad for n, p in frozen.named_parameters() if n.startswith("encoder.conv"))


def test_teacher_device_and_precision() -> None:
    assert teacher_device(hf_cfg("x", device="cpu"), torch.device("meta")) == CPU
    assert teacher_device(hf_cfg("x"), torch.device("meta")) == torch.device("meta")  # "train": as passed
    with pytest.raises(EdgekdError, match="teacher.precision fp16 runs on CUDA only"):
        HFTeacher(hf_cfg("x", precision="fp16"), CLASSES, 0, CPU, load=False)
    if not torch.cuda.is_available():
        with pytest.raises(EdgekdError, match="teacher.device is cuda but no CUDA device"):
            HFTeacher(hf_cfg("x", device="cuda"), CLASSES, 0, CPU, load=False)


# --- automatic batch size -----------------------------------------------------------------------------------


def mlp_step(width: int, n_in: int = 256) -> Any:
    """A forward+backward step of Linear(n_in, width) -> ReLU -> Linear(width, 4) on a batch of b."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, 4))

    def step(batch: int) -> None:
        net(torch.randn(batch, n_in)).square().mean().backward()
        net.zero_grad(set_to_none=True)

    return step


def test_saved_tensor_bytes_grow_with_batch_and_width() -> None:
    narrow, wide = mlp_step(64), mlp_step(1024)
    assert saved_tensor_bytes(narrow, 8) > saved_tensor_bytes(narrow, 4) > 0
    per_narrow = saved_tensor_bytes(narrow, 8) - saved_tensor_bytes(narrow, 4)
    per_wide = saved_tensor_bytes(wide, 8) - saved_tensor_bytes(wide, 4)
    assert per_wide > 3 * per_narrow
    need = step_bytes_estimate(narrow)
    assert need(64) == pytest.approx(saved_tensor_bytes(narrow, 64), rel=0.01)  # it is linear


def test_auto_batch_size_on_cpu_fits_the_budget() -> None:
    budget = 1_000_000
    narrow, wide = mlp_step(64), mlp_step(1024)
    b_narrow, b_wide = (
        auto_batch_size(narrow, CPU, budget_bytes=budget),
        auto_batch_size(wide, CPU, budget_bytes=budget),
    )
    assert b_wide < b_narrow  # a bigger per-example footprint gets a smaller batch
    for step, batch in ((narrow, b_narrow), (wide, b_wide)):
        need = step_bytes_estimate(step)
        assert batch & (batch - 1) == 0 and need(batch) <= budget  # a power of two within the budget
        assert batch == 256 or need(2 * batch) > budget  # and the largest such
    extra = auto_batch_size(wide, CPU, budget_bytes=budget, extra_bytes=budget // 2)
    assert extra < b_wide  # memory held besides the step (optimizer state) leaves less room
    assert auto_batch_size(narrow, CPU, start=24, budget_bytes=10**12) == 16  # capped by `start`
    assert auto_batch_size(narrow, CPU, start=10**6, budget_bytes=10**12) == 256  # and by 256
    with pytest.raises(EdgekdError, match="even one example needs"):
        auto_batch_size(wide, CPU, budget_bytes=1000)


def test_auto_batch_size_on_cuda_halves_on_out_of_memory() -> None:
    tried: list[int] = []

    def step(batch: int) -> None:
        tried.append(batch)
        if batch > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert auto_batch_size(step, torch.device("cuda"), 100) == 16
    assert tried == [64, 32, 16]

    def never(batch: int) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(EdgekdError, match="not even one example"):
        auto_batch_size(never, torch.device("cuda"), 8)


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


def test_several_heads_average_the_heads_of_their_seeds(
    se_teacher: SpeechEmbeddingTeacher, tmp_path: Path
) -> None:
    x_tr, y_tr = embeddings(60, seed=0)
    x_val, y_val = embeddings(30, seed=1)
    three = SpeechEmbeddingTeacher(se_teacher.cfg.model_copy(update={"heads": 3}), 3, seed=4)
    result = three.fit(x_tr, y_tr, x_val, y_val, progress=False)
    assert len(result.history) == se_teacher.cfg.epochs
    singles = []
    for seed in (4, 5, 6):  # head k is the single head of seed + k, trained alone
        one = SpeechEmbeddingTeacher(se_teacher.cfg, 3, seed=seed)
        one.fit(x_tr, y_tr, x_val, y_val, progress=False)
        singles.append(one.logits(x_val))
    assert not np.allclose(singles[0], singles[1])  # the seeds draw different heads
    logits = three.logits(x_val)
    np.testing.assert_allclose(logits, np.mean(singles, axis=0), rtol=1e-5, atol=1e-5)
    assert result.best_val_accuracy == pytest.approx(float((logits.argmax(1) == y_val).mean()))
    three.save(tmp_path)
    restored = SpeechEmbeddingTeacher(three.cfg, 3, seed=4)
    restored.restore(tmp_path, x_val.shape[1:])
    np.testing.assert_array_equal(restored.logits(x_val), logits)
    with pytest.raises(RuntimeError, match="state_dict"):  # a one-head config cannot read three heads
        SpeechEmbeddingTeacher(se_teacher.cfg, 3, seed=4).restore(tmp_path, x_val.shape[1:])


def test_row_weights_draw_each_heads_rows(se_teacher: SpeechEmbeddingTeacher) -> None:
    """Weights steer what a head learns: a "voice" whose rows carry the wrong labels misleads an unweighted
    head and is never drawn at weight 0; each head of an ensemble draws its own rows."""
    x_good, y_good = embeddings(60, seed=0)
    x_bad, y_bad = embeddings(90, seed=2)
    x_tr, y_tr = np.concatenate([x_good, x_bad]), np.concatenate([y_good, (y_bad + 1) % 3])
    x_val, y_val = embeddings(30, seed=1)
    weights = np.r_[np.ones(60), np.zeros(90)]
    plain = SpeechEmbeddingTeacher(se_teacher.cfg, 3, seed=0)
    plain.fit(x_tr, y_tr, x_val, y_val, progress=False)
    weighted = SpeechEmbeddingTeacher(se_teacher.cfg, 3, seed=0)
    weighted.fit(x_tr, y_tr, x_val, y_val, progress=False, weights=weights)
    accuracy = [float((t.logits(x_val).argmax(1) == y_val).mean()) for t in (plain, weighted)]
    assert accuracy[1] > 0.9 and accuracy[0] < 0.5
    two = SpeechEmbeddingTeacher(se_teacher.cfg.model_copy(update={"heads": 2}), 3, seed=0)
    two.fit(x_tr, y_tr, x_val, y_val, progress=False, weights=weights)
    first = two.head.heads[0](torch.from_numpy(x_val)).detach().numpy()
    # head 0 of the ensemble is the single head of the same seed, its draw included
    np.testing.assert_allclose(first, weighted.logits(x_val), rtol=1e-5, atol=1e-5)


def test_speech_embedding_automatic_batch_size(se_teacher: SpeechEmbeddingTeacher) -> None:
    x_tr, y_tr = embeddings(60, seed=0)
    auto = SpeechEmbeddingTeacher(se_teacher.cfg.model_copy(update={"batch_size": 0, "epochs": 1}), 3, 0)
    result = auto.fit(x_tr, y_tr, x_tr[:6], y_tr[:6], progress=False)
    assert len(result.history) == 1


def test_speech_embedding_features_and_embeddings(se_teacher: SpeechEmbeddingTeacher) -> None:
    clips = np.random.default_rng(0).normal(scale=0.1, size=(2, 16000)).astype(np.float32)
    feats = se_teacher.features(clips)
    assert feats.shape == (2, 9, 96) and feats.dtype == np.float32 and np.isfinite(feats).all()
    emb = se_teacher.embeddings(feats)
    assert emb.shape == (2, 96) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, feats.mean(1), rtol=1e-6)
