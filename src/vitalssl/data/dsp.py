"""Signal processing: gap filling, zero-phase band-pass, anti-aliased resampling.

Units: sampling rates in Hz, times in s, signals in their recorded units.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def fill_gaps(x: np.ndarray) -> np.ndarray:
    """``x`` as float64 with NaN samples linearly interpolated (edges take the nearest value), so filters see
    no steps. ``x`` itself is never changed.

    Windows that contain gaps are rejected by the gate; filling only keeps a
    gap's edges from ringing into neighbouring windows. The cost follows the
    gaps, not the recording's length: one pass finds them.
    """
    nan = np.flatnonzero(np.isnan(x))
    if len(nan) == 0:
        return np.asarray(x, dtype=np.float64)
    if len(nan) == len(x):
        raise ValueError("no finite sample to fill gaps from")
    out = np.array(x, dtype=np.float64)  # a new array, filled in place
    cut = np.flatnonzero(np.diff(nan) > 1) + 1
    s = nan[np.concatenate([[0], cut])]                  # gap k = out[s[k]:e[k]]
    e = nan[np.concatenate([cut - 1, [len(nan) - 1]])] + 1
    left = np.where(s > 0, out[np.maximum(s - 1, 0)], out[np.minimum(e, len(out) - 1)])
    right = np.where(e < len(out), out[np.minimum(e, len(out) - 1)], left)
    size = e - s
    k = np.repeat(np.arange(len(s)), size)
    j = nan - s[k] + 1  # 1 .. size within each gap
    out[nan] = left[k] + (right[k] - left[k]) * j / (size[k] + 1)
    return out


def bandpass_sos(kind: str, order: int, band: tuple, fs: float) -> np.ndarray:
    """Second-order sections of a band-pass filter (``kind``: butter, cheby2, bessel)."""
    if kind == "butter":
        return signal.butter(order, band, btype="bandpass", fs=fs, output="sos")
    if kind == "cheby2":
        return signal.cheby2(order, 40, band, btype="bandpass", fs=fs, output="sos")
    if kind == "bessel":
        return signal.bessel(order, band, btype="bandpass", fs=fs, output="sos", norm="phase")
    raise ValueError(f"unknown filter type {kind!r}")


def bandpass(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """Zero-phase (forward-backward) filtering with stable second-order sections."""
    return signal.sosfiltfilt(sos, x)


def resample(x: np.ndarray, decimation: int) -> np.ndarray:
    """Downsample by an integer factor with scipy's polyphase anti-aliasing FIR.

    The signal is extended by a fitted line, not zeros: a PPG sits on a large
    offset, which zero padding would turn into a step at each end.
    """
    if decimation == 1:
        return x
    return signal.resample_poly(x, 1, decimation, padtype="line")
