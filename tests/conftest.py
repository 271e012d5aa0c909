"""Shared fixtures and builders: the tiny KWS net and its exports, and tiny transformers checkpoints.

Test modules import builders from here (never from each other), and session fixtures are built once.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import pytest
import soundfile as sf
import torch
import transformers
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema_fb

from edgekd.artifacts import write_json
from edgekd.audio.frontend import MicroFrontend
from edgekd.audio.io import SAMPLE_RATE
from edgekd.config import load_config
from edgekd.data.real_pool import HELD_OUT_SOURCES, MARKER, NEGATIVE_SOURCES, SOURCES, in_part
from edgekd.export.firmware import write_firmware_package
from edgekd.export.manifest import file_hashes, model_io
from edgekd.verify.tflite_info import measure_arena

# ---------------------------------------------------------------- a tiny conv KWS net and its exports

T, F, CLASSES = 98, 40, 12


@dataclass(frozen=True)
class KwsModels:
    """A tiny conv KWS net and its exports; `net` maps float32 [N, T, F] to logits [N, 12]."""

    net: object
    int8: Path
    float: Path
    float_4d: Path  # float model whose input is [1, T, F, 1]
    dynamic_batch: Path  # float model with input shape signature [-1, T, F]
    onnx: Path  # float ONNX with a dynamic batch dimension


def features(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, T, F)).astype(np.float32)


@functools.cache
def build_models(out: Path) -> KwsModels:
    """Convert the fixture net once per session (~5 s): float/INT8 TFLite via litert-torch, ONNX."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    class Net(torch.nn.Module):
        """conv (10x4, stride 2) -> depthwise 3x3 -> pointwise -> avg-pool (9x1) -> global mean -> linear."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, (10, 4), stride=2)
            self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.pw = torch.nn.Conv2d(8, 16, 1)
            self.pool = torch.nn.AvgPool2d((9, 1))
            self.mean = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(16, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.conv(x.unsqueeze(1)))
            x = torch.relu(self.pw(torch.relu(self.dw(x))))
            return self.fc(self.mean(self.pool(x)).flatten(1))

    class Channels(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x[..., 0])

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = Net().eval()
    example = (torch.from_numpy(features(1, 0)),)
    paths = {name: out / f"{name}.tflite" for name in ("int8", "float", "float_4d", "dynamic_batch")}
    litert_torch.convert(net, example).export(str(paths["float"]))
    litert_torch.convert(Channels(net).eval(), (example[0][..., None],)).export(str(paths["float_4d"]))
    _with_dynamic_batch(paths["float"], paths["dynamic_batch"])

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(net, example).module(), quantizer)
    for clip in features(16, seed=1):  # the export is batch 1
        prepared(torch.from_numpy(clip[None]))
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
        str(paths["int8"])
    )

    onnx_path = out / "float.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(
        net,
        (torch.from_numpy(features(2, 0)),),
        str(onnx_path),
        dynamo=True,
        external_data=False,
        dynamic_shapes=({0: batch},),
    )
    return KwsModels(net=net, onnx=onnx_path, **paths)


def read_tflite(path: Path) -> schema_fb.ModelT:
    """A .tflite flatbuffer as the mutable object tree tests edit (defects, shapes, dtypes)."""
    return schema_fb.ModelT.InitFromObj(schema_fb.Model.GetRootAsModel(path.read_bytes(), 0))


def write_tflite(model: schema_fb.ModelT, path: Path) -> None:
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())


def _with_dynamic_batch(src: Path, dst: Path) -> None:
    """Mark the input batch dynamic (-1) and make the leading RESHAPE infer it.

    litert-torch 0.10 fails to convert this net with a dynamic batch, so the flatbuffer is edited.
    """
    model = read_tflite(src)
    graph = model.subgraphs[0]
    new_shape = graph.tensors[graph.operators[0].inputs[1]]
    model.buffers[new_shape.buffer].data = np.array([-1, T, F, 1], np.int32).view(np.uint8)
    graph.tensors[graph.inputs[0]].shapeSignature = np.array([-1, T, F], np.int32)
    write_tflite(model, dst)


def torch_logits(net: object, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> KwsModels:
    return build_models(tmp_path_factory.getbasetemp() / "kws_models")


# ---------------------------------------------------------------- tiny transformers checkpoints

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
WHISPER_TINY = dict(
    d_model=32,
    encoder_layers=2,
    encoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_layers=1,
    decoder_attention_heads=2,
    decoder_ffn_dim=64,
    num_mel_bins=16,
    max_source_positions=50,  # 100 log-mel frames: clips are padded to 1 s (OpenAI's models: 1500 -> 30 s)
    max_target_positions=16,
    vocab_size=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=1,
    classifier_proj_size=16,
)
CONFIGS: dict[str, tuple[type, dict[str, Any]]] = {
    "wav2vec2": (transformers.Wav2Vec2Config, TINY),
    "hubert": (transformers.HubertConfig, TINY),
    "wavlm": (transformers.WavLMConfig, TINY),
    # data2vec's num_conv_pos_embeddings counts conv layers, not kernel taps
    "data2vec-audio": (
        transformers.Data2VecAudioConfig,
        {**TINY, "num_conv_pos_embeddings": 2, "conv_pos_kernel_size": 5},
    ),
    "whisper": (transformers.WhisperConfig, WHISPER_TINY),
}
CLASSIFIERS = {
    "wav2vec2": transformers.Wav2Vec2ForSequenceClassification,
    "hubert": transformers.HubertForSequenceClassification,
    "wavlm": transformers.WavLMForSequenceClassification,
    "data2vec-audio": transformers.Data2VecAudioForSequenceClassification,
    "whisper": transformers.WhisperForAudioClassification,
}


def save_tiny(
    folder: Path,
    arch: str,
    model_cls: type | None = None,
    num_labels: int = 5,
    seed: int = 0,
    labels: list[str] | None = None,
) -> Path:
    """A randomly initialised tiny checkpoint written by save_pretrained (config.json + model.safetensors).

    `labels` names the head's classes (a trained head); otherwise they are transformers' LABEL_i.
    """
    torch.manual_seed(seed)
    model_cls = model_cls or CLASSIFIERS[arch]
    config_cls, kwargs = CONFIGS[arch]
    head = {"id2label": dict(enumerate(labels))} if labels else {"num_labels": num_labels}
    model_cls(config_cls(**kwargs, **head)).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- streaming: a build around the tiny net


def stream_build(folder: Path, models: KwsModels) -> Path:
    """A build directory around the fixture's INT8 model: manifest, firmware package, nothing trained."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(models.int8.read_bytes())
    arena = measure_arena(folder / "model.tflite")
    manifest = {
        "target": "esp32s3",
        "classes": load_config("esp32s3").classes,
        "frontend": {**MicroFrontend().params(), "input_shape": [98, 40]},
        "model_io": model_io(folder / "model.tflite"),
        "arena": {"measured_bytes": arena, "with_headroom_bytes": arena + 1024},
        "config": {},
        "files": file_hashes(folder, ["model.tflite"]),
    }
    write_json(folder / "manifest.json", manifest)
    write_firmware_package(folder)
    return folder


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Noise with loud bursts: something for the frontend to adapt to and the model to react to."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.01, int(seconds * SAMPLE_RATE)).astype(np.float32)
    for start in rng.uniform(0, seconds - 0.5, int(seconds)):
        i = int(start * SAMPLE_RATE)
        x[i : i + 4000] += rng.normal(0, 0.3, 4000).astype(np.float32)
    return np.clip(x, -1, 1)


# ---------------------------------------------------------------- a real student build


def student_build(out: Path, target: str) -> Path:
    """A build directory laid out as `run_build` does (config.json, weights/float.pt, weights/qat.pt,
    model.tflite) around the target's student trained a few steps, QAT-trained a few more and exported
    the real way (~30 s): real conversion, real module names, the target's op set."""
    from _models import realistic_features, train_steps

    from edgekd.export.tflite import export_tflite
    from edgekd.models.restore import make_student
    from edgekd.train.qat import convert_qat, freeze_observers, prepare_qat

    (out / "weights").mkdir(parents=True)
    cfg = load_config(target)
    (out / "config.json").write_text(json.dumps(cfg.model_dump(mode="json")))
    torch.manual_seed(0)
    # channels_last: eager conv+BN training is ~10x faster (DESIGN.md); 200 steps take ~4 s.
    model = make_student(cfg, (98, 40)).to(memory_format=torch.channels_last)
    train_steps(model, 200, seed=1, batch=32, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3))
    with torch.no_grad():  # settle batch-norm statistics on the final weights, as late epochs do
        for step in range(20):
            model(realistic_features(64, seed=5000 + step))
    model = model.to(memory_format=torch.contiguous_format).eval()
    torch.save(model.state_dict(), out / "weights" / "float.pt")
    prepared = prepare_qat(model, realistic_features(2, seed=7))
    train_steps(prepared, 3, seed=2, batch=64, optimizer=torch.optim.SGD(prepared.parameters(), lr=1e-3))
    freeze_observers(prepared)
    prepared.eval()
    torch.save(prepared.state_dict(), out / "weights" / "qat.pt")
    example = realistic_features(1, seed=8)
    export_tflite(
        convert_qat(prepared).for_tflite, example, out / "model.tflite", cfg.export.drop_bias_scales
    )
    return out


@pytest.fixture(scope="session")
def esp32s3_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The esp32s3 student (DS-CNN S) as a small trained build directory, once per session."""
    return student_build(tmp_path_factory.mktemp("esp32s3_student") / "build", "esp32s3")


# ---------------------------------------------------------------- a small real-speech pool stand-in


@pytest.fixture
def fake_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The three negative sources and the held-out ones with 8 files of 2 s in each part (train or
    calibration, and check), at the paths their globs match."""
    root = tmp_path / "pool"
    monkeypatch.setenv("EDGEKD_REAL_POOL", str(root))
    rng = np.random.default_rng(0)
    for name in NEGATIVE_SOURCES + HELD_OUT_SOURCES:
        src = SOURCES[name]
        have = {True: 0, False: 0}
        for i in range(1000):
            path = root / src.package / src.globs[0].replace("**/", "").replace("*", f"f{i}")
            check = in_part(path, root, "check", src.held_out)
            if have[check] < 8:
                have[check] += 1
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(path), speech_like(2.0, int(rng.integers(1 << 30))), SAMPLE_RATE)
        (root / src.package / MARKER).write_text(f"Package: {src.package}\n")
    return root
