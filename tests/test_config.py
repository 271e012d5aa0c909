"""Config merging and validation: every bad value fails before any work, naming file, field, value, range."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.config import SILENCE, UNKNOWN, load_config, parse_override, with_overrides
from edgekd.errors import ConfigError


def test_targets_and_recipe_merge_into_one_validated_config() -> None:
    cfg = load_config("esp32s3")
    assert cfg.target == "esp32s3" and cfg.recipe == "kws12"
    assert cfg.classes[:10] == ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    assert cfg.classes[10:] == [UNKNOWN, SILENCE]
    assert cfg.frontend.name == "micro" and cfg.verify.primary == "tflm"
    assert load_config("mobile").frontend.name == "logmel"
    assert load_config("p100").train.device == "cuda"


def test_override_wins_and_is_typed() -> None:
    cfg = load_config(
        "esp32s3",
        overrides=[
            "distill.alpha=0.7",
            "train.epochs=3",
            "export.formats=[tflite]",
            "verify.runtimes=[tflm]",
        ],
    )
    assert cfg.distill.alpha == 0.7 and cfg.train.epochs == 3 and cfg.export.formats == ["tflite"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("distill.alpha=1.5", ["--set distill.alpha=1.5", "distill.alpha", "1.5", "[0, 1]"]),
        ("distill.temperature=0", ["distill.temperature", "(0, 20]"]),
        ("distill.temperature=25", ["distill.temperature", "25", "(0, 20]"]),
        ("budget.arena_bytes=-1", ["budget.arena_bytes", "-1", "greater than 0"]),
        ("budget.ops=[CONV_2D,NOT_AN_OP]", ["budget.ops", "NOT_AN_OP", "unknown TFLite op"]),
        ("train.epochs=abc", ["train.epochs", "abc", "integer"]),
        ("distil.alpha=0.5", ["unknown field 'distil'"]),
        ("train.epoch=3", ["unknown field 'train.epoch'"]),
        ("labels=[true,no]", ["quote a word"]),
        ("verify.runtimes=[litert]", ["verify.primary='tflm' must be one of verify.runtimes"]),
        ("data.augment.snr_db=[30,5]", ["low <= high"]),
    ],
)
def test_bad_values_name_source_field_value_and_range(override: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("esp32s3", overrides=[override])
    for text in expected:
        assert text in str(err.value), str(err.value)


def test_words_stay_the_words_the_user_wrote(tmp_path: Path) -> None:
    """YAML 1.1 would read off/on/yes/no as booleans; string fields must get the word itself."""
    cfg = load_config(
        "esp32s3",
        overrides=["distill.teacher_gate=off", "labels=[yes, no, on, off]", "distill.skip_wrong_teacher=on"],
    )
    assert cfg.distill.teacher_gate == "off"
    assert cfg.labels == ["yes", "no", "on", "off"]
    assert cfg.distill.skip_wrong_teacher is True
    recipe = tmp_path / "words.yaml"
    recipe.write_text("labels: [yes, no]\ndistill:\n  teacher_gate: warn\n  feature_curriculum: yes\n")
    cfg = load_config("esp32s3", str(recipe))
    assert cfg.labels == ["yes", "no"] and cfg.distill.feature_curriculum is True


def test_error_names_the_file_that_set_the_bad_value(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text('labels: ["yes"]\ndistill:\n  alpha: 2\n')
    with pytest.raises(ConfigError) as err:
        load_config("esp32s3", str(recipe))
    assert f"{recipe}: distill.alpha = 2" in str(err.value)


def test_unknown_target_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown target 'esp32'.*esp32s3"):
        load_config("esp32")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no_equals", "expected key=value"),
        ("a..b=1", "empty field name"),
        ("a=[1,", "not valid YAML"),
    ],
)
def test_malformed_overrides(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_override(text)


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("labels: [yes\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config("esp32s3", str(broken))
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config("esp32s3", str(listy))


def test_runtimes_need_their_export_format() -> None:
    with pytest.raises(ConfigError, match="need export.formats to include"):
        load_config("esp32s3", overrides=["export.formats=[onnx]"])


def test_bias_scales_are_dropped_only_for_tflite_micro() -> None:
    assert load_config("esp32s3").export.drop_bias_scales
    assert not load_config("mobile").export.drop_bias_scales
    with pytest.raises(ConfigError, match="export.drop_bias_scales is for TFLite Micro devices"):
        load_config("mobile", overrides=["export.drop_bias_scales=true"])


def test_the_teachers_operating_point_needs_an_unknown_class() -> None:
    with pytest.raises(ConfigError, match="distill.fire_rate=argmax"):
        load_config("esp32s3", overrides=["distill.fire_rate=teacher", "unknown_words=[]"])
    cfg = load_config("esp32s3", overrides=["distill.fire_rate=argmax", "unknown_words=[]"])
    assert "_unknown_" not in cfg.classes


def test_several_teacher_heads_are_for_the_speech_embedding_teacher() -> None:
    assert load_config("esp32s3").teacher.heads == 3  # the kws12 recipe
    assert load_config("esp32s3", recipe="digits").teacher.heads == 1  # not measured on digits
    assert load_config("esp32s3", overrides=["teacher.heads=5"]).teacher.heads == 5
    # the recipe's heads are its speech-embedding teacher's: switching the teacher does not trip over them
    hf = load_config("esp32s3", overrides=["teacher.kind=hf", "teacher.source=some/model"])
    assert hf.teacher.heads == 1
    with pytest.raises(ConfigError, match="teacher.heads"):  # heads given beside the hf teacher: refused
        load_config("esp32s3", overrides=["teacher={kind: hf, source: some/model, heads: 2}"])
    for sets in (
        ["teacher.kind=hf", "teacher.source=some/model", "teacher.heads=3"],
        ["teacher.heads=3", "teacher.kind=hf", "teacher.source=some/model"],
    ):  # typed: never dropped
        with pytest.raises(ConfigError, match=r"teacher\.heads is 3, .*teacher\.kind is 'hf'"):
            load_config("esp32s3", overrides=sets)
    with pytest.raises(ConfigError, match="teacher.heads"):
        load_config("esp32s3", overrides=["teacher.heads=0"])


def test_keeping_the_last_epoch_rules_out_early_stopping() -> None:
    with pytest.raises(ConfigError, match=r"--set train\.keep=last: .*keep 'last' with patience 3"):
        load_config("esp32s3", overrides=["train.keep=last", "train.patience=3"])
    assert load_config("esp32s3", overrides=["train.keep=last"]).train.keep == "last"


def test_domain_adversarial_training_needs_real_unlabelled_audio() -> None:
    with pytest.raises(ConfigError, match="set data.unlabeled"):
        load_config("esp32s3", overrides=["distill.domain_weight=0.3", "data.unlabeled=null"])
    cfg = load_config(
        "esp32s3", overrides=["distill.domain_weight=0.3", "data.unlabeled=builtin:debian-speech"]
    )
    assert cfg.distill.domain_weight == 0.3


def test_with_overrides_changes_a_finished_builds_config_and_validates_it() -> None:
    base = load_config("esp32s3")
    cfg = with_overrides(base, ["distill.alpha=0.9", "data.augment.views=4"])
    assert (cfg.distill.alpha, cfg.data.augment.views) == (0.9, 4)
    assert cfg.distill.temperature == base.distill.temperature and base.distill.alpha != 0.9
    with pytest.raises(ConfigError, match="distill.alpha=7"):
        with_overrides(base, ["distill.alpha=7"])


def test_the_wake_word_critic_needs_real_negatives() -> None:
    with pytest.raises(ConfigError, match="wakeword.real_negatives_minutes above 0"):
        load_config(
            "esphome",
            overrides=[
                "labels=[computer]",
                "wakeword.domain_weight=0.3",
                "wakeword.real_negatives_minutes=0",
            ],
        )


def test_the_soft_labels_of_unlabeled_audio_follow_its_source(tmp_path: Path) -> None:
    """Unset, `distill.unlabeled_weight` is 0 for a built-in pool (its soft labels teach that a real voice
    is `_unknown_`) and 1 for your own recordings; a value you set is kept either way."""
    assert (
        load_config("esp32s3").distill.unlabeled_weight == 0.0
    )  # the recipe trains on builtin:debian-speech
    mine = load_config("esp32s3", overrides=[f"data.unlabeled={tmp_path}"])
    assert mine.distill.unlabeled_weight == 1.0
    none = load_config("esp32s3", overrides=["data.unlabeled=null", "distill.domain_weight=0"])
    assert none.distill.unlabeled_weight == 1.0
    kept = load_config("esp32s3", overrides=["distill.unlabeled_weight=0.5"])
    assert kept.distill.unlabeled_weight == 0.5
    again = with_overrides(kept, ["distill.alpha=0.4"])  # a finished build's config keeps its weight
    assert again.distill.unlabeled_weight == 0.5
