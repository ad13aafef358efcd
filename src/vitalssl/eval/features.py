"""Hand-made window features: the non-learned bar for the linear probes.

Per channel of a z-scored window ``[C, L]`` at ``fs`` Hz: shape statistics
(skewness, kurtosis, percentiles), roughness (mean absolute first difference,
zero-crossing rate) and the dominant frequency in the heart-rate band.
"""

from __future__ import annotations

import numpy as np

from .baselines import FS, HR_RANGE

FEATURES = ("skewness", "kurtosis", "p05", "p25", "p50", "p75", "p95", "mean_abs_diff", "zero_cross_rate",
            "dominant_freq_hz")


def dominant_frequency(x: np.ndarray, fs: float = FS, band=HR_RANGE) -> np.ndarray:
    """Frequency (Hz) of the largest power-spectrum bin between ``band`` bpm / 60; ``x [..., L]`` -> ``[...]``.

    The window is zero-padded to 8x its length so the bin spacing (0.0125 Hz for
    10 s at 125 Hz, 0.75 bpm) is finer than the rate changes one wants to see.
    """
    L = x.shape[-1]
    n = 8 * L
    f = np.fft.rfftfreq(n, 1.0 / fs)
    sel = (f >= band[0] / 60.0) & (f <= band[1] / 60.0)
    p = np.abs(np.fft.rfft(x - x.mean(axis=-1, keepdims=True), n))[..., sel]
    return f[sel][np.argmax(p, axis=-1)]


def hand_features(x: np.ndarray, fs: float = FS) -> np.ndarray:
    """``x [N, C, L]`` -> ``[N, C * len(FEATURES)]`` float64, features of channel 0 first."""
    x = np.asarray(x, np.float64)
    mu = x.mean(axis=-1, keepdims=True)
    sd = x.std(axis=-1, keepdims=True)
    z = (x - mu) / np.where(sd > 0, sd, 1.0)
    pct = np.percentile(x, [5, 25, 50, 75, 95], axis=-1)                     # [5, N, C]
    sign = np.signbit(x - mu)
    feats = [
        (z ** 3).mean(axis=-1),
        (z ** 4).mean(axis=-1),
        *pct,
        np.abs(np.diff(x, axis=-1)).mean(axis=-1),
        (sign[..., 1:] != sign[..., :-1]).mean(axis=-1),
        dominant_frequency(x, fs),
    ]
    return np.stack(feats, axis=-1).reshape(x.shape[0], -1)                  # [N, C, F] -> [N, C * F]


def feature_names(channels) -> list[str]:
    return [f"{c.lower()}_{f}" for c in channels for f in FEATURES]
