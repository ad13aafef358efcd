"""Signal processing: gap filling, zero-phase band-pass, anti-aliased resampling.

Units: sampling rates in Hz, times in s, signals in their recorded units.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def fill_gaps(x: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaN samples (edges take the nearest value) so filters see no steps.

    Windows that contain gaps are rejected by the gate; filling only keeps a
    gap's edges from ringing into neighbouring windows. Works gap by gap, so
    the cost follows the gaps, not the recording's length.
    """
    bad = np.isnan(x)
    if not bad.any():
        return x
    if bad.all():
        raise ValueError("no finite sample to fill gaps from")
    out = x.copy()
    edges = np.flatnonzero(np.diff(bad.astype(np.int8), prepend=0, append=0))
    for s, e in zip(edges[::2], edges[1::2]):  # gap = out[s:e]
        left = out[s - 1] if s > 0 else out[e]
        right = out[e] if e < len(out) else left
        out[s:e] = left + (right - left) * np.arange(1, e - s + 1) / (e - s + 1)
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
