"""Subject-level bootstrap: 95% intervals that respect the fact that windows of one subject are not independent.

Every statistic here is a ratio of weighted sums over windows, so one bootstrap
replicate is a vector of window weights: the number of times the window's
subject was drawn. ``W [R, n]`` holds R replicates over n windows.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def group_index(groups) -> tuple[np.ndarray, int]:
    """``groups [n]`` (any hashable ids) -> integer codes ``[n]`` in ``0..G-1`` and G."""
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    return codes.ravel(), int(codes.max()) + 1 if len(codes) else 0


def subject_weights(groups, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n]`` window weights: draw G subjects with replacement, weight = times the window's subject was drawn."""
    codes, G = group_index(groups)
    if G < 2:
        raise ValueError(f"a subject-level bootstrap needs at least 2 subjects, got {G}")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(G, np.full(G, 1.0 / G), size=n_boot).astype(np.float64)  # [R, G]
    return counts[:, codes]


def interval(replicates: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite bootstrap ``replicates [R]``; NaN when none is finite.

    A replicate can be undefined (R² of a draw whose labels are all equal, e.g. one subject drawn
    every time with a per-subject label): it is left out rather than failing the whole report.
    """
    a = (1.0 - ci) / 2.0
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [a, 1.0 - a])
    return float(lo), float(hi)


def weighted_mean(v: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Statistic: mean of ``v [n]`` under weights ``W [R, n]`` -> ``[R]`` (``W`` of ones gives the plain mean)."""
    v = np.asarray(v, np.float64)
    return lambda W: (W @ v) / W.sum(axis=1)


def ratio_of_means(a: np.ndarray, b: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Statistic: ``mean(a) / mean(b)`` under weights."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return lambda W: (W @ a) / (W @ b)


def mae(y: np.ndarray, pred: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return weighted_mean(np.abs(np.asarray(pred, np.float64) - np.asarray(y, np.float64)))


def r2(y: np.ndarray, pred: np.ndarray, train_mean: float | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Statistic: ``1 - SS_res / SS_tot`` under weights.

    With ``train_mean``, SS_tot is about that fixed value: the out-of-sample R² (Hawinkel, Waegeman
    and Maere 2023, *The American Statistician* 78(1)), 0 for a predictor that says the train mean and
    positive only where it beats it. Without it, SS_tot is about each replicate's own weighted mean
    (``sklearn.metrics.r2_score``), which a constant prediction scores below 0 whenever the evaluated
    subjects' mean differs from the train mean, whatever the features carry.
    """
    y = np.asarray(y, np.float64)
    e2 = (np.asarray(pred, np.float64) - y) ** 2
    d2 = None if train_mean is None else (y - float(train_mean)) ** 2

    def stat(W):
        if d2 is None:
            ss_tot = W @ (y * y) - (W @ y) ** 2 / W.sum(axis=1)
        else:
            ss_tot = W @ d2
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1.0 - (W @ e2) / ss_tot
    return stat


def estimate(stat: Callable[[np.ndarray], np.ndarray], groups, n_boot: int, seed: int, ci: float = 0.95) -> dict:
    """``{"value", "ci_low", "ci_high"}``: the statistic on the data and its subject-bootstrap percentile interval."""
    n = len(np.asarray(groups))
    value = float(stat(np.ones((1, n)))[0])
    lo, hi = interval(stat(subject_weights(groups, n_boot, seed)), ci)
    return {"value": value, "ci_low": lo, "ci_high": hi}
