"""Confidence intervals for the figures a report quotes, so small real sets are read as small.

Real holdouts have tens to hundreds of clips: one clip of 77 moves an accuracy by 1.3 points. Every
real-speech figure edgekd prints comes with a 95 % interval from here.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


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

    if exposure <= 0:
        raise ValueError(f"exposure {exposure}: needs a positive amount of audio")
    alpha = 1 - confidence
    low = 0.0 if k == 0 else chi2.ppf(alpha / 2, 2 * k) / 2
    high = chi2.ppf(1 - alpha / 2, 2 * k + 2) / 2
    return (float(low / exposure), float(high / exposure))
