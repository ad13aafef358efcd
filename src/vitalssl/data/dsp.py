"""Signal processing: gap filling, zero-phase band-pass, anti-aliased resampling, beat detection.

Units: sampling rates in Hz, times in s, signals in their recorded units.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def fill_gaps(x: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaN samples (edges take the nearest value) so filters see no steps.

    Windows that contain gaps are rejected by the gate; filling only keeps a
    gap's edges from ringing into neighbouring windows.
    """
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    ok = np.flatnonzero(~bad)
    out = x.copy()
    out[bad] = np.interp(np.flatnonzero(bad), ok, x[ok])
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
    """Downsample by an integer factor with scipy's polyphase anti-aliasing FIR."""
    if decimation == 1:
        return x
    return signal.resample_poly(x, 1, decimation)


def detect_beats(x: np.ndarray, fs: float, hr_max: float, robust_range: float | None = None,
                 rel_prominence: float = 0.35) -> np.ndarray:
    """Indices of beat peaks in a band-passed window.

    A peak must be at least ``60 / hr_max`` s from the previous one and stand out
    by ``rel_prominence`` of the window's robust range (1st-99th percentile,
    computed here unless given).
    """
    if robust_range is None:
        lo, hi = np.percentile(x, [1, 99])
        robust_range = hi - lo
    if robust_range <= 0:
        return np.zeros(0, dtype=np.int64)
    peaks, _ = signal.find_peaks(x, distance=max(1, int(fs * 60.0 / hr_max)),
                                 prominence=rel_prominence * robust_range)
    return peaks
