"""Voice realism (`edgekd.train.realism`): the domain classifier, the per-voice weights and the draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.config import CONFIGS_DIR, ConfigError, load_config
from edgekd.train.realism import WEIGHT_RANGE, domain_log_odds, engine_weights, voice_weights, weighted_draw


def test_rows_nearer_the_real_audio_get_higher_log_odds() -> None:
    rng = np.random.default_rng(0)
    synthetic = rng.normal(size=(400, 8))
    synthetic[:200, 0] += 0.8  # half the synthetic rows lie towards the real rows
    real = rng.normal(size=(300, 8)) + np.r_[1.5, np.zeros(7)]
    odds = domain_log_odds(synthetic, real)
    assert odds.shape == (400,)
    assert odds[:200].mean() > odds[200:].mean() + 0.5
    np.testing.assert_array_equal(odds, domain_log_odds(synthetic, real))  # deterministic


def test_voice_weights_follow_the_voices_mean_log_odds_and_leave_silence_alone() -> None:
    groups = np.array(["espeak:a"] * 4 + ["espeak:b"] * 4 + ["human:c"] * 4 + ["noise:0"] * 3)
    odds = np.r_[np.full(4, 1.0), np.full(4, -1.0), np.linspace(-0.5, 0.5, 4), np.full(3, 9.0)]
    speech = np.r_[np.ones(12, bool), np.zeros(3, bool)]
    w = voice_weights(odds, groups, speech, temperature=1.0)
    assert w[0] > w[8] > w[4]  # the voice that sounds more real is drawn more
    assert len(set(w[:4])) == 1 and w[8:12] == pytest.approx(np.full(4, w[8]))  # per voice, not per row
    assert w[12:] == pytest.approx(np.ones(3))  # silence keeps its share, whatever its log-odds
    assert w[:12].mean() == pytest.approx(1.0)
    assert w[0] / w[4] == pytest.approx(np.exp(2.0))
    np.testing.assert_array_equal(voice_weights(odds, groups, speech, temperature=0.0), np.ones(15))
    steep = voice_weights(odds, groups, speech, temperature=10.0)
    assert steep[:12].min() >= WEIGHT_RANGE[0] / 1.5 and steep[:12].max() <= WEIGHT_RANGE[1] * 1.5
    assert engine_weights(w, groups) == {
        "espeak": pytest.approx((w[0] + w[4]) / 2, abs=1e-3),
        "human": pytest.approx(w[8], abs=1e-3),
        "noise": 1.0,
    }


def test_the_draw_is_seeded_and_never_takes_a_row_of_weight_zero() -> None:
    weights = np.r_[np.zeros(50), np.ones(50)]
    a, b = weighted_draw(1000, weights, seed=3), weighted_draw(1000, weights, seed=3)
    np.testing.assert_array_equal(a, b)
    assert (a >= 50).all()
    assert not np.array_equal(a, weighted_draw(1000, weights, seed=4))


def test_voice_realism_needs_a_real_pool_and_the_embedding_teacher() -> None:
    assert load_config("esp32s3").teacher.voice_realism == 0.0  # opt-in: twelve kws12 seeds did not adopt it
    no_pool = ["data.unlabeled=null", "distill.domain_weight=0"]
    hf = ["teacher.kind=hf", "teacher.source=some/model"]
    # typed on the command line, before or after the pool's removal or the switch of teacher: refused
    for sets in ([*no_pool, "teacher.voice_realism=1"], ["teacher.voice_realism=1", *no_pool]):
        with pytest.raises(ConfigError, match="teacher.voice_realism.*data.unlabeled"):
            load_config("esp32s3", overrides=sets)
    for sets in ([*hf, "teacher.voice_realism=1"], ["teacher.voice_realism=2", *hf]):
        with pytest.raises(ConfigError, match="teacher.voice_realism.*speech_embedding"):
            load_config("esp32s3", overrides=sets)


def test_a_recipes_voice_realism_goes_with_its_pool_and_teacher(tmp_path: Path) -> None:
    """A recipe file's value belongs to its pool and teacher: a later `--set` that removes either drops it."""
    recipe = tmp_path / "real.yaml"
    recipe.write_text(
        (CONFIGS_DIR / "kws12.yaml").read_text().replace("teacher:\n", "teacher:\n  voice_realism: 1.5\n", 1)
    )
    assert load_config("esp32s3", recipe=str(recipe)).teacher.voice_realism == 1.5
    no_pool = ["data.unlabeled=null", "distill.domain_weight=0"]
    assert load_config("esp32s3", recipe=str(recipe), overrides=no_pool).teacher.voice_realism == 0
    hf = ["teacher.kind=hf", "teacher.source=some/model"]
    assert load_config("esp32s3", recipe=str(recipe), overrides=hf).teacher.voice_realism == 0
