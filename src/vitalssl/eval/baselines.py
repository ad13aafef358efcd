"""Non-learned reconstructions of hidden patches: the bars a masked-signal model has to clear.

Dimensions: B windows, C channels, L samples. Every baseline takes ``x [B, C, L]``
(float, z-scored windows) and ``hidden [B, L]`` (bool, True = hidden, the same
samples in every channel, as the model's masks) and returns ``[B, C, L]`` equal
to ``x`` where visible. Hidden values of ``x`` are never read.
"""

from __future__ import annotations

import numpy as np

FS = 125.0                # samples per second of the window file
HR_RANGE = (30.0, 200.0)  # bpm, the gate's range: beat periods searched between 0.3 and 2 s


def zero_fill(x: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Predict 0 (the window mean of a z-scored channel) in every hidden sample."""
    return np.where(hidden[:, None, :], 0.0, x).astype(x.dtype)


def linear_interpolation(x: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """A straight line across each hidden span between the visible samples on either side.

    A span at the start or end of the window has a neighbour on one side only and
    holds that value.
    """
    out = x.copy()
    t = np.arange(x.shape[-1])
    for b in range(x.shape[0]):
        vis = ~hidden[b]
        if vis.all():
            continue
        if not vis.any():
            raise ValueError(f"window {b} has no visible sample to interpolate from")
        for c in range(x.shape[1]):
            out[b, c, ~vis] = np.interp(t[~vis], t[vis], x[b, c, vis])
    return out


def visible_autocorrelation(x: np.ndarray, hidden: np.ndarray, max_lag: int, min_pairs: int = 64) -> np.ndarray:
    """Normalised autocorrelation ``[B, C, max_lag + 1]`` over pairs of samples that are both visible.

    ``r(k) = sum v x_t x_{t+k} / sqrt(sum v x_t^2 * sum v x_{t+k}^2)`` with
    ``v = visible_t * visible_{t+k}``; computed with FFTs. A lag with fewer than ``min_pairs``
    visible pairs (half a second at 125 Hz) gets 0.
    """
    B, C, L = x.shape
    v = (~hidden).astype(np.float64)[:, None, :]
    xv = x.astype(np.float64) * v
    n = 1 << int(np.ceil(np.log2(2 * L)))

    def xcorr(a, b):  # sum_t a_t b_{t+k} for k = 0..max_lag
        return np.fft.irfft(np.conj(np.fft.rfft(a, n)) * np.fft.rfft(b, n), n)[..., :max_lag + 1]

    num = xcorr(xv, xv)
    e_left = xcorr(xv * xv, np.broadcast_to(v, xv.shape))   # sum v_t v_{t+k} x_t^2
    e_right = xcorr(np.broadcast_to(v, xv.shape), xv * xv)  # sum v_t v_{t+k} x_{t+k}^2
    pairs = xcorr(v, v)                                      # visible pairs at each lag
    # a lag with few visible pairs (or FFT round-off in place of an empty sum) says nothing about the period
    energy = np.maximum(e_left * e_right, 0.0)
    ok = (pairs >= min_pairs - 0.5) & (energy > 1e-12 * np.maximum(e_left[..., :1] ** 2, 1e-300))
    r = np.zeros_like(num)
    np.divide(num, np.sqrt(energy), out=r, where=ok)
    return np.clip(r, -1.0, 1.0)


def beat_period(x: np.ndarray, hidden: np.ndarray, fs: float = FS, hr_range=HR_RANGE) -> np.ndarray:
    """Beat period ``[B]`` in samples (fractional) from the visible autocorrelation of all channels.

    The channels share one heart, so their autocorrelations are averaged. The period
    is the first local maximum in the heart-rate range that reaches 80% of the
    range's largest one (so a multiple of the period is not taken for the period),
    refined by a parabola through the peak and its neighbours.
    """
    lo = int(np.floor(60.0 / hr_range[1] * fs))
    hi = int(np.ceil(60.0 / hr_range[0] * fs))
    if hi + 1 >= x.shape[-1]:
        raise ValueError(f"windows of {x.shape[-1]} samples are too short for beat periods up to {hi} samples")
    r = visible_autocorrelation(x, hidden, hi + 1).mean(axis=1)  # [B, hi + 2]
    period = np.empty(x.shape[0])
    for b in range(x.shape[0]):
        rb = r[b]
        k = np.arange(lo, hi + 1)
        peaks = k[(rb[k] >= rb[k - 1]) & (rb[k] >= rb[k + 1])]
        if len(peaks) == 0:
            period[b] = k[np.argmax(rb[k])]
            continue
        best = rb[peaks].max()
        p = int(peaks[rb[peaks] >= 0.8 * best][0])
        y0, y1, y2 = rb[p - 1], rb[p], rb[p + 1]
        denom = y0 - 2 * y1 + y2
        period[b] = p + (0.5 * (y0 - y2) / denom if denom < 0 else 0.0)
    return period


def beat_repeat(x: np.ndarray, hidden: np.ndarray, period: np.ndarray | None = None, fs: float = FS) -> np.ndarray:
    """Fill each hidden sample with the visible signal a whole number of beat periods away.

    For hidden sample t, the nearest k (1, 2, ...) for which ``t - kT`` or ``t + kT``
    falls on visible samples wins; with both sides visible their mean is taken. A
    fractional source position is read by linear interpolation between its two
    neighbouring samples, both of which must be visible. Where no visible source
    exists within the window, the prediction is 0 (the window mean).
    ``period [B]`` in samples; estimated by :func:`beat_period` when not given.
    """
    B, C, L = x.shape
    T = beat_period(x, hidden, fs) if period is None else np.asarray(period, np.float64)
    out = np.where(hidden[:, None, :], 0.0, x).astype(np.float64)
    todo = hidden.copy()                      # [B, L] hidden samples without a prediction yet
    t = np.arange(L)[None, :]
    vis = ~hidden
    k_max = int(np.ceil(L / T.min()))
    for k in range(1, k_max + 1):
        if not todo.any():
            break
        acc = np.zeros((B, C, L))
        cnt = np.zeros((B, L))
        for sign in (-1.0, 1.0):
            s = t + sign * k * T[:, None]                     # [B, L] source positions
            i0 = np.floor(s).astype(np.int64)
            frac = s - i0
            inside = (i0 >= 0) & (i0 + 1 < L) | ((i0 == L - 1) & (frac == 0))
            i0c, i1c = np.clip(i0, 0, L - 1), np.clip(i0 + 1, 0, L - 1)
            ok = inside & np.take_along_axis(vis, i0c, 1) & (np.take_along_axis(vis, i1c, 1) | (frac == 0))
            ok &= todo
            v0 = np.take_along_axis(x, np.broadcast_to(i0c[:, None, :], x.shape), 2)
            v1 = np.take_along_axis(x, np.broadcast_to(i1c[:, None, :], x.shape), 2)
            val = (1 - frac)[:, None, :] * v0 + frac[:, None, :] * v1
            acc += np.where(ok[:, None, :], val, 0.0)
            cnt += ok
        got = cnt > 0
        out = np.where(got[:, None, :], acc / np.maximum(cnt, 1)[:, None, :], out)
        todo &= ~got
    return out.astype(x.dtype)


def fit_channel_scale(pred: np.ndarray, target: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Least-squares scale per channel ``[C]``: argmin_a sum over hidden samples of (a * pred - target)^2."""
    h = hidden[:, None, :]
    num = np.sum(np.where(h, pred * target, 0.0), axis=(0, 2), dtype=np.float64)
    den = np.sum(np.where(h, pred * pred, 0.0), axis=(0, 2), dtype=np.float64)
    if np.any(den <= 0):
        raise ValueError("cannot fit a channel scale: the predictions are zero in every hidden sample")
    return num / den


def scaled(pred: np.ndarray, x: np.ndarray, hidden: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``pred`` times one scale per channel in hidden samples, ``x`` where visible."""
    return np.where(hidden[:, None, :], pred * np.asarray(scale, pred.dtype)[None, :, None], x).astype(x.dtype)
