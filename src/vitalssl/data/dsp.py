"""Signal processing: gap filling, zero-phase band-pass, anti-aliased resampling.

Units: sampling rates in Hz, times in s, signals in their recorded units.
"""

from __future__ import annotations

from functools import lru_cache

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


ANTIALIAS_HALF_TAPS = 10  # per unit of decimation, as scipy.signal.resample_poly's default filter
BLOCK = 32                # outputs per row of the matrix product in :func:`resample`
CHUNK_ROWS = 1024         # rows multiplied at a time (1.7 MB of input for decimation 4)


@lru_cache(maxsize=8)
def _decimator(decimation: int) -> np.ndarray:
    """``[decimation * BLOCK + 2 * half + 1, BLOCK]``: column ``r`` holds the anti-aliasing FIR (reversed) at rows
    ``decimation * r ...``; a row of ``decimation * BLOCK + 2 * half + 1`` input samples times it gives ``BLOCK``
    outputs. The FIR is resample_poly's own: ``firwin(2 * half + 1, 1 / decimation, window=('kaiser', 5.0))``."""
    half = ANTIALIAS_HALF_TAPS * decimation
    h = signal.firwin(2 * half + 1, 1.0 / decimation, window=("kaiser", 5.0))[::-1]
    t = np.zeros((decimation * BLOCK + 2 * half + 1, BLOCK))
    for r in range(BLOCK):
        t[decimation * r:decimation * r + 2 * half + 1, r] = h
    return t


def resample(x: np.ndarray, decimation: int) -> np.ndarray:
    """Downsample by an integer factor with an anti-aliasing FIR: ``scipy.signal.resample_poly(x, 1, decimation,
    padtype="line")``, computed as one matrix product.

    The signal is extended by a fitted line, not zeros: a PPG sits on a large
    offset, which zero padding would turn into a step at each end. For finite
    input (the stage fills gaps first) the result equals scipy's to rounding
    (1e-15 relative; a NaN would spoil the 32 outputs of its row, where scipy
    spoils the filter's length of them); scipy filters output by output
    in a scalar loop, while the product runs on BLAS, in chunks of rows that
    stay in cache: 25-30 ms against 65-70 ms for a 3-h waveform, and no copy
    larger than a chunk (``benchmarks/bench_windows.py --steps``).
    """
    if decimation == 1:
        return x
    half = ANTIALIAS_HALF_TAPS * decimation
    n = len(x)
    if n < 2:
        return signal.resample_poly(x, 1, decimation, padtype="line")
    n_out = -(-n // decimation)
    rows = -(-n_out // BLOCK)
    width = decimation * BLOCK + 2 * half + 1
    total = decimation * BLOCK * (rows - 1) + width  # input samples the last row reaches
    # y[m] = sum_i h[i] * x[decimation * m + half - i], x extended beyond its ends by the line through them
    slope = (x[-1] - x[0]) / (n - 1)
    ext = np.empty(total)
    ext[:half] = x[0] - np.arange(half, 0, -1) * slope
    ext[half:half + n] = x
    ext[half + n:] = x[-1] + np.arange(1, total - half - n + 1) * slope
    z = np.lib.stride_tricks.as_strided(ext, shape=(rows, width), strides=(decimation * BLOCK * ext.itemsize,
                                                                          ext.itemsize), writeable=False)
    t, out = _decimator(decimation), np.empty((rows, BLOCK))
    for i in range(0, rows, CHUNK_ROWS):  # rows overlap in ext: copied a chunk at a time, which stays in cache
        np.matmul(np.ascontiguousarray(z[i:i + CHUNK_ROWS]), t, out=out[i:i + CHUNK_ROWS])
    return out.reshape(-1)[:n_out]
