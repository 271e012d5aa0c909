"""Confidence intervals quoted beside every real-speech figure."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.stats import (
    clopper_pearson,
    inputs_to_decide,
    mcnemar_exact,
    mean_class_interval,
    paired_drop,
    poisson_rate_interval,
    poisson_rate_upper,
    wilson,
    within_fa_budget,
)


def test_wilson_matches_reference_values() -> None:
    # reference values (Wilson 1927; e.g. R's prop.test without continuity correction)
    lo, hi = wilson(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and 0.25 < wilson(0, 10)[1] < 0.3  # never a zero-width interval
    assert wilson(10, 10)[1] == 1.0 and 0.7 < wilson(10, 10)[0] < 0.75
    assert wilson(0, 0) == (0.0, 1.0)


def test_wilson_covers_the_true_rate_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    p, n = 0.7, 77
    hits = [lo <= p <= hi for lo, hi in (wilson(int(rng.binomial(n, p)), n) for _ in range(4000))]
    assert 0.93 < np.mean(hits) < 0.97


def test_mean_class_interval_ignores_other_classes_and_empty_ones() -> None:
    classes = ["yes", "no", "_unknown_", "_silence_"]
    cm = np.array([[8, 2, 0, 0], [0, 5, 5, 0], [0, 0, 100, 0], [0, 0, 0, 0]])
    mean, lo, hi = mean_class_interval(cm, classes, ["yes", "no", "_silence_"])
    assert mean == pytest.approx((0.8 + 0.5) / 2)  # _unknown_ is not a keyword, _silence_ has no clip
    assert lo < mean < hi and hi - lo > 0.2  # 20 clips: a wide interval
    assert mean_class_interval(cm, classes, ["_silence_"]) is None
    wide = mean_class_interval(cm, classes, ["yes"])
    big = mean_class_interval(cm * 100, classes, ["yes"])
    assert wide is not None and big is not None and big[2] - big[1] < wide[2] - wide[1]


def test_poisson_rate_interval_matches_reference_values() -> None:
    # Garwood's exact interval (e.g. R's poisson.test): 0 events -> [0, 3.689], 10 -> [4.795, 18.390]
    assert poisson_rate_interval(0, 1.0) == (0.0, pytest.approx(3.6889, abs=1e-4))
    low, high = poisson_rate_interval(10, 2.0)  # per unit of exposure: halved
    assert low == pytest.approx(4.7954 / 2, abs=1e-4) and high == pytest.approx(18.3904 / 2, abs=1e-4)
    with pytest.raises(ValueError, match="positive amount of audio"):
        poisson_rate_interval(1, 0.0)


def test_poisson_rate_interval_covers_the_true_rate_at_least_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    rate, hours = 2.0, 0.75
    hits = [
        lo <= rate <= hi
        for lo, hi in (poisson_rate_interval(int(k), hours) for k in rng.poisson(rate * hours, 4000))
    ]
    assert 0.95 <= np.mean(hits) < 0.995  # exact intervals are conservative


def test_poisson_rate_upper_is_the_median_unbiased_rate_at_half_and_the_interval_end_at_975() -> None:
    assert poisson_rate_upper(0, 1.0, 0.5) == pytest.approx(np.log(2))  # P(0 events | ln 2) = 1/2
    assert poisson_rate_upper(1, 2.0, 0.5) == pytest.approx(1.6783 / 2, abs=1e-4)
    assert poisson_rate_upper(3, 1.5, 0.975) == pytest.approx(poisson_rate_interval(3, 1.5)[1])
    with pytest.raises(ValueError, match="positive amount of audio"):
        poisson_rate_upper(0, 0.0, 0.5)


def test_one_false_accept_in_two_hours_is_no_evidence_of_half_a_false_accept_per_hour() -> None:
    hours = 2.11  # a wake-word build's calibration speech
    assert 1 / hours <= 0.5 and not within_fa_budget(1, hours, 0.5, 0.5)
    assert within_fa_budget(0, hours, 0.5, 0.5) and not within_fa_budget(0, hours, 0.5, 0.95)
    assert within_fa_budget(2, 6.0, 0.5, 0.5)  # more hours: more false accepts can be seen within it


def test_a_point_at_the_budget_passes_the_median_rule_at_most_half_the_time() -> None:
    """Why 0.5: at a true rate equal to the budget, the raw rate k/h lets most draws through; the
    median-unbiased bound lets through at most half, and a point beyond the budget fewer still."""
    rng = np.random.default_rng(0)
    hours, budget = 2.11, 0.5
    counts = rng.poisson(budget * hours, 4000)
    raw = np.mean(counts / hours <= budget)
    median = np.mean([within_fa_budget(int(k), hours, budget, 0.5) for k in counts])
    assert raw > 0.65 and median <= 0.5
    over = rng.poisson(3 * budget * hours, 4000)  # 1.5/h, what alexa's first point turned out to run at
    assert np.mean([within_fa_budget(int(k), hours, budget, 0.5) for k in over]) < 0.1


def test_clopper_pearson_matches_reference_values() -> None:
    # reference values: R's binom.test(k, n)$conf.int
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.187086, abs=1e-6) and hi == pytest.approx(0.812914, abs=1e-6)
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(0.3085, abs=1e-4))
    assert clopper_pearson(10, 10) == (pytest.approx(0.6915, abs=1e-4), 1.0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson(5, 4)


def test_mcnemar_exact_on_known_tables() -> None:
    assert mcnemar_exact(4, 0) == pytest.approx(0.125)  # 2 * 0.5^4
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == pytest.approx(1.0)
    # R: mcnemar.exact / binom.test(10, 12): p = 0.03857
    assert mcnemar_exact(10, 2) == pytest.approx(0.03857, abs=1e-5)


def test_paired_drop_interval_covers_noise_and_excludes_a_real_drop() -> None:
    drop, lo, hi = paired_drop(1, 0, 91)  # one clip of 91: a 1.1-point "drop" that may be nothing
    assert drop == pytest.approx(1 / 91) and lo < 0 < hi
    drop, lo, hi = paired_drop(40, 2, 1000)  # 38 more clips wrong than right on 1,000: a real drop
    assert drop == pytest.approx(0.038) and lo > 0.02
    assert paired_drop(0, 0, 50) == (0.0, 0.0, 0.0)  # identical predictions: no drop, no doubt


def test_inputs_to_decide_is_where_a_defect_twice_the_limit_is_caught() -> None:
    n = inputs_to_decide(0.99, 0.005)
    b = int(round(0.01 * n))  # a one-way 1-point drop on n inputs is caught, on fewer it is not
    assert paired_drop(b, 0, n)[1] > 0.005
    smaller = n // 2
    assert paired_drop(int(round(0.01 * smaller)), 0, smaller)[1] <= 0.005
    assert inputs_to_decide(0.98, 0.01) < n  # looser limits need less evidence
