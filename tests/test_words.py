"""Vocabulary checks before any synthesis, the default `_unknown_` words, and `--words` / `words:`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgekd.cli import main
from edgekd.config import load_config
from edgekd.errors import ConfigError
from edgekd.words import (
    COMMON_WORDS,
    DICTIONARY,
    WordError,
    check_words,
    default_unknown_words,
    near_misses,
    phonemes,
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.mark.parametrize(
    ("labels", "unknown", "message"),
    [
        (["yes", " "], [], "labels[1] is empty"),
        (["café"], [], "cannot say ['é']"),
        (["5"], [], "write numbers as words"),
        (["lights_on"], [], "letters, spaces, hyphens and apostrophes only"),
        (["Yes", "yes"], [], "'Yes' and 'yes' are the same word"),
        (["yes"], ["dog", "Dog "], "'dog' and 'Dog ' are the same word"),
        (["on", "lights on"], [], "keyword 'on' is part of keyword 'lights on'"),
        (["yes"], ["yes"], "unknown word 'yes' is keyword 'yes'"),
        (["yes"], ["yes please"], "unknown word 'yes please' contains keyword 'yes'"),
    ],
)
def test_spelling_problems_name_the_word_and_the_fix(
    labels: list[str], unknown: list[str], message: str
) -> None:
    with pytest.raises(WordError) as err:
        check_words(labels, unknown)
    assert message in str(err.value)


@needs_espeak
@pytest.mark.parametrize(
    ("labels", "unknown", "message"),
    [
        (["two", "to"], [], "keywords 'two' and 'to' sound the same"),
        (["two"], ["to"], "unknown word 'to' sounds like keyword 'two'"),
        (["eight"], ["ate lunch"], "unknown word 'ate lunch' contains keyword 'eight'"),
        (["four"], ["for"], "unknown word 'for' sounds like keyword 'four'"),  # espeak-ng: fo@ / fO@
        (["four", "for"], [], "keywords 'four' and 'for' sound the same"),
    ],
)
def test_sound_alike_problems_are_caught_by_phonemes(
    labels: list[str], unknown: list[str], message: str
) -> None:
    with pytest.raises(WordError) as err:
        check_words(labels, unknown)
    assert message in str(err.value) and ("remove" in str(err.value) or "keep one" in str(err.value))


def test_hard_negatives_and_the_recipes_pass() -> None:
    check_words(["light"], ["lighthouse", "lights"])  # near words are what `_unknown_` is for
    check_words(["lights on", "lights off", "play music"], ["light", "music", "offset", "player"])
    for recipe in ("kws12", "digits"):
        cfg = load_config("esp32s3", recipe)
        check_words(cfg.labels, cfg.unknown_words)


@needs_espeak
def test_default_unknown_words_leave_out_what_sounds_like_a_keyword() -> None:
    table = phonemes(["seven", "soup", "tree"])
    assert table["tree"] == "tri" and table["seven"] != "seven"  # espeak-ng phonemes, not spelling
    digits = default_unknown_words(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"])
    for gone in ("seven", "tree", "door", "floor"):  # a keyword itself, or one sound from "three"/"four"
        assert gone not in digits
    assert {"dog", "table", "window"} <= set(digits) and len(digits) > 100
    commands = default_unknown_words(["yes", "no", "off"])
    assert "yesterday" not in commands and "snow" not in commands and "coffee" not in commands
    assert set(commands) < set(COMMON_WORDS)


def test_words_set_the_labels_and_choose_the_unknown_words(tmp_path: Path) -> None:
    cfg = load_config("esp32s3", "kws12", ['words=["lights on", "lights off", "play music"]'])
    assert cfg.labels == ["lights on", "lights off", "play music"]
    assert cfg.classes == [*cfg.labels, "_unknown_", "_silence_"]
    assert cfg.unknown_words == default_unknown_words(cfg.labels)  # not kws12's, chosen for its labels
    mine = load_config("esp32s3", "kws12", ['words=["lights on"]', "unknown_words=[light, music]"])
    assert mine.unknown_words == ["light", "music"]  # a later layer's own list wins
    recipe = tmp_path / "lights.yaml"
    recipe.write_text("words: [lights on, lights off]\nseed: 3\n")
    cfg = load_config("esp32s3", str(recipe))
    assert cfg.labels == ["lights on", "lights off"] and cfg.unknown_words == default_unknown_words(
        cfg.labels
    )
    with pytest.raises(ConfigError, match="give a list of words"):
        load_config("esp32s3", "kws12", ["words=lights"])


def test_a_bad_vocabulary_exits_2_before_any_synthesis(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["build", "--target", "esp32s3", "--words", "on", "lights on", "--cache", str(tmp_path / "c")]
    assert main([*argv, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "keyword 'on' is part of keyword 'lights on'" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()  # nothing synthesised, nothing cached


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="phoneme neighbours need espeak-ng")
def test_near_misses_sound_close_but_never_hold_the_phrase() -> None:
    """Adversarial negatives for a wake word: close in sound, never the phrase itself, and accepted by
    the vocabulary check (a negative that contains the phrase would teach the model to ignore it)."""
    if not DICTIONARY.is_file():
        pytest.skip(f"{DICTIONARY} (Debian wamerican, installed by scripts/setup.sh) is not there")
    misses = near_misses("computer", 12)
    assert len(misses) == 12 and {"commuter", "compute"} <= set(misses)
    check_words(["computer"], misses)  # raises if one contains or sounds like the phrase
    two = near_misses("hey edge", 30)
    assert two[:2] == ["hey", "edge"]  # partial phrases first
    assert any(m.startswith("hey ") and m != "hey" for m in two)  # one word swapped for a neighbour
    check_words(["hey edge"], two)
    assert near_misses("computer", 12) == misses  # deterministic
