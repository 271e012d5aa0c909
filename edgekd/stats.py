"""Confidence intervals and paired tests for the figures a report quotes and the gates a build decides.

Real holdouts have tens to hundreds of clips: one clip of 77 moves an accuracy by 1.3 points, and one
clip of 91 is a 1.1-point "drop". Every real-speech figure edgekd prints comes with a 95 % interval from
here, and every parity gate decides on one: a gate fails when the evidence shows the limit is crossed
(the interval lies beyond it), not when a handful of clips happen to land on the wrong side.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054
MEDIAN = 0.5  # the confidence of a median-unbiased bound (`poisson_rate_upper`)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (sane at 0 %, 100 % and small n)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if k == 0 else centre - half, 1.0 if k == n else centre + half)


def mean_class_interval(
    confusion: list[list[int]] | np.ndarray, classes: list[str], keep: list[str], z: float = Z95
) -> tuple[float, float, float] | None:
    """Mean of the per-class accuracies of the classes in `keep` that have clips, with a normal-approx
    95 % interval: each class an independent binomial, so Var(mean) = sum p(1-p)/n_k / K^2.

    Returns (mean, low, high), or None when none of `keep` has a clip.
    """
    cm = np.asarray(confusion)
    stats = [
        (cm[i, i] / cm[i].sum(), cm[i].sum()) for i, c in enumerate(classes) if c in keep and cm[i].sum()
    ]
    if not stats:
        return None
    p = np.array([s[0] for s in stats], dtype=float)
    n = np.array([s[1] for s in stats], dtype=float)
    mean = float(p.mean())
    # a class at 0 % or 100 % still carries uncertainty: floor its variance at that of 0.5 successes
    var = np.maximum(p * (1 - p), 0.5 / n * (1 - 0.5 / n)) / n
    half = z * math.sqrt(var.sum()) / len(p)
    return (mean, max(0.0, mean - half), min(1.0, mean + half))


def poisson_rate_interval(k: int, exposure: float, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval of an event rate from k events in `exposure` units (hours of audio).

    False accepts are rare events: 0 in 20 minutes still allows up to 9 per hour at 95 %, so a false-
    accept figure is only as strong as the hours behind it, and a gate must read the interval.
    """
    from scipy.stats import chi2

    alpha = 1 - confidence
    high = poisson_rate_upper(k, exposure, 1 - alpha / 2)
    low = 0.0 if k == 0 else chi2.ppf(alpha / 2, 2 * k) / 2 / exposure
    return (float(low), high)


def poisson_rate_upper(k: int, exposure: float, confidence: float) -> float:
    """One-sided exact upper bound of an event rate from k events in `exposure` units: the true rate is
    below it with probability `confidence`.

    At 0.5 it is the median-unbiased rate, the one a false-accept budget is calibrated against
    (`within_fa_budget`). Why not k / exposure: calibration picks the loosest point whose count fits the
    budget, and a count is low by chance as often as not, so the raw rate flatters the point it picked.
    In ~2.1 h, 1 false accept is a raw 0.47/h but a median-unbiased 0.79/h; 0 is 0.33/h.
    """
    from scipy.stats import chi2

    if exposure <= 0:
        raise ValueError(f"exposure {exposure}: needs a positive amount of audio")
    return float(chi2.ppf(confidence, 2 * k + 2) / 2 / exposure)


def within_fa_budget(false_accepts: int, hours: float, budget: float, confidence: float) -> bool:
    """Whether an operating point with `false_accepts` in `hours` of negative audio fits `budget` FA/h:
    its rate's upper bound at `confidence` (`poisson_rate_upper`) does."""
    return poisson_rate_upper(false_accepts, hours, confidence) <= budget


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion k/n: never narrower than the truth,
    which is what a gate that may fail a build must read."""
    from scipy.stats import beta

    if not 0 <= k <= n:
        raise ValueError(f"k={k}, n={n}: need 0 <= k <= n")
    if n == 0:
        return (0.0, 1.0)
    alpha = 1 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return (low, high)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of paired outcomes: b pairs changed one way, c the other.

    Under "no difference" each discordant pair goes either way with probability 1/2, so b is
    Binomial(b + c, 1/2); the concordant pairs carry no information about a difference.
    """
    from scipy.stats import binomtest

    return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)


def paired_drop(b: int, c: int, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """Accuracy drop (b - c) / n of a paired comparison on n inputs, with an exact interval.

    b: inputs the reference got right and the other runtime wrong; c: the reverse. Conditional on the
    m = b + c discordant pairs (the exact McNemar setting), b ~ Binomial(m, pi) and the drop is
    m (2 pi - 1) / n, so the Clopper-Pearson interval of pi maps onto one of the drop.
    """
    if n <= 0 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"b={b}, c={c}, n={n}: need b, c >= 0 and b + c <= n > 0")
    m = b + c
    if m == 0:  # identical predictions: no drop and no doubt about it
        return (0.0, 0.0, 0.0)
    low, high = clopper_pearson(b, m, confidence)
    return ((b - c) / n, m * (2 * low - 1) / n, m * (2 * high - 1) / n)


def inputs_to_decide(min_agreement: float, max_drop: float, confidence: float = 0.95) -> int:
    """How many paired inputs the agreement and drop gates need to catch a defect twice their limit.

    A gate that fails only on evidence passes anything when it has too little: 1 disagreement in 91 can
    neither show nor rule out 0.5 %. This is the smallest n at which an observed disagreement of twice
    `1 - min_agreement`, or an all-one-way accuracy drop of twice `max_drop` (a fraction), puts the
    interval beyond the limit. Limits are taken within [0.1 %, 25 %]: a zero limit needs no interval, and
    one past 25 % (a gate switched off, in effect) needs next to no evidence.
    """
    allowed = min(max(1 - min_agreement, 0.001), 0.25)
    drop = min(max(max_drop, 0.001), 0.25)

    def caught(n: int) -> bool:
        agree_k = int(round(n * (1 - 2 * allowed)))
        b = int(round(2 * drop * n))
        return (
            clopper_pearson(agree_k, n, confidence)[1] < 1 - allowed
            and paired_drop(b, 0, n, confidence)[1] > drop
        )

    n = 10
    while not caught(n):
        n = int(n * 1.05) + 1
        if n > 10_000_000:
            raise ValueError(f"limits {min_agreement}, {max_drop}: no sample size decides them")
    return n
