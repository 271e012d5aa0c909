"""How real each synthetic voice sounds to the teacher's backbone, as weights for the rows a head learns from.

Why: the synthetic corpus is mostly espeak-ng formant voices, and a head fitted on it learns those voices as
much as the words. The speech embedding was trained on real speech, so a linear domain classifier on its clip
embeddings — real pool windows against the synthetic training views — says which voices lie nearer real
speech. Drawing a head's rows in proportion to `exp(t · mean log-odds of the voice's views)` is importance
weighting for the shift from synthetic to real voices (the voice, not the clip, is weighted: every voice says
the same words, so its mean log-odds is about the voice, not what it says). Teacher heads alone, kws12, five
seeds: real-commands-dev keywords 86.0 -> 89.2 % at t = 1; their float students over twelve seeds: keywords
+0.2, other words +0.8 points — so it is opt-in (docs/DESIGN.md, stop 62).
"""

from __future__ import annotations

import numpy as np

# weights relative to the mean voice's, clipped so that no voice dominates a head's rows or vanishes
WEIGHT_RANGE = (0.2, 5.0)


def domain_log_odds(synthetic: np.ndarray, real: np.ndarray, l2: float = 10.0, steps: int = 50) -> np.ndarray:
    """Log-odds that each `synthetic` row [N, D] is real speech, from an L2-penalised logistic regression of
    `real` [M, D] against `synthetic` on standardised features.

    Newton's method on 97 parameters: exact, deterministic, and no solver dependency.
    """
    x = np.concatenate([synthetic, real]).astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    y = np.r_[np.zeros(len(synthetic)), np.ones(len(real))]
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0  # the intercept is not shrunk
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + penalty * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        delta = np.linalg.solve(hess, grad)
        w -= delta
        if np.max(np.abs(delta)) < 1e-8:
            break
    return x[: len(synthetic)] @ w


def voice_weights(
    log_odds: np.ndarray, groups: np.ndarray, speech: np.ndarray, temperature: float
) -> np.ndarray:
    """Per-row sampling weights, mean 1: each speech row gets its voice's (`groups`) weight
    `exp(temperature · voice mean log-odds)`, scaled to mean 1 over the speech rows and clipped to
    WEIGHT_RANGE; rows that are not speech (`speech` False: silence) keep weight 1, so the classes' shares
    stay as the corpus has them."""
    weights = np.ones(len(groups))
    _, inverse = np.unique(groups[speech], return_inverse=True)
    per_voice = np.bincount(inverse, weights=log_odds[speech]) / np.bincount(inverse)
    w = np.exp(temperature * (per_voice - per_voice.max()))[inverse]
    weights[speech] = np.clip(w / w.mean(), *WEIGHT_RANGE)
    weights[speech] /= weights[speech].mean()
    return weights


def engine_weights(weights: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Mean row weight per engine (the part of a group before `:`), for the build's record."""
    engines = np.array([g.split(":", 1)[0] for g in groups])
    return {e: round(float(weights[engines == e].mean()), 3) for e in sorted(set(engines))}


def weighted_draw(n: int, weights: np.ndarray, seed: int) -> np.ndarray:
    """`n` row indices drawn with replacement in proportion to `weights` (seeded: each head its own draw)."""
    return np.random.default_rng(seed).choice(len(weights), size=n, p=weights / weights.sum())
