"""Classical beat-derived features of a PPG+ECG window: what an engineer in the field computes by hand.

Per window (band-passed, z-scored, ``fs`` Hz; so amplitudes are in units of the
window's standard deviation), from the ECG's R peaks ``r_k`` and, per beat, the
PPG's maximum-slope point ``u_k`` (the first upstroke within 0.6 s after ``r_k``):

- ``hr_bpm`` = 60 / median(RR); ``sdnn_ms`` = sample SD of the RR intervals;
  ``rmssd_ms`` = sqrt(mean((RR_{k+1} - RR_k)^2)).
- ``pat_ms``: median of ``foot_k - r_k``, the pulse arrival time. The foot is
  the intersecting tangent (Chiu et al. 1991): the tangent at ``u_k`` meets the
  horizontal through the pulse's minimum before ``u_k`` at
  ``u_k - (x[u_k] - x_min) / x'[u_k]`` (sub-sample).
- ``pulse_amp``: median of ``x[s_k] - x_min``, ``s_k`` the systolic peak (the
  maximum within 0.3 s after ``u_k``); ``rise_ms``: median of ``s_k - foot_k``;
  ``width_ms``: median time the pulse stays above ``x_min + amp / 2``
  (linearly interpolated crossings).
- ``reflection_ratio``: median of ``(x[d_k] - x_min) / amp``, the reflection
  index (Chowienczyk et al. 1999): ``d_k`` is the diastolic peak (the first
  local maximum of the descending limb, from 0.05 s after ``s_k`` to the next
  pulse's minimum) or, without one, the limb's least steep point (its
  inflection).
- ``ibi_resp_hz``, ``ibi_resp_depth``, ``amp_resp_hz``, ``amp_resp_depth``:
  respiratory modulation of the RR series (at each interval's end) and of the
  pulse-amplitude series (at each systolic peak). A sinusoid plus a linear
  trend is fitted by least squares at every frequency of :data:`RESP_GRID_HZ`
  (6-30 breaths/min); the best fit gives the frequency, and its peak-to-peak
  amplitude over the series' mean gives the depth. Needs six beats.

A measure with too few beats is NaN; :func:`fill_missing` puts the train median
in its place before a linear model sees it.
"""

from __future__ import annotations

import numpy as np

from ..signal import detect_beats
from .baselines import FS, HR_RANGE

BEAT_FEATURES = ("hr_bpm", "sdnn_ms", "rmssd_ms", "pat_ms", "pulse_amp", "rise_ms", "width_ms", "reflection_ratio",
                 "ibi_resp_hz", "ibi_resp_depth", "amp_resp_hz", "amp_resp_depth")
RESP_GRID_HZ = np.round(np.arange(0.1, 0.5 + 1e-9, 0.005), 6)
MAX_PAT_S = 0.6        # an upstroke later than this after an R peak is not that beat's pulse
SYSTOLE_S = 0.3        # the systolic peak lies within this of the upstroke
MIN_RESP_BEATS = 6


def r_peaks(ecg: np.ndarray, fs: float = FS) -> np.ndarray:
    """R peaks of a band-passed ECG window, searched in the lead's dominant polarity (as the quality gate does)."""
    lo, med, hi = np.percentile(ecg, [1, 50, 99])
    return detect_beats(-ecg if med - lo > hi - med else ecg, fs, HR_RANGE[1], hi - lo)


def upstrokes(ppg: np.ndarray, fs: float = FS) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-slope points of each PPG pulse, and the slope ``x'`` per sample ``[L]``."""
    d = np.gradient(ppg)
    lo, hi = np.percentile(d, [1, 99])
    return detect_beats(d, fs, HR_RANGE[1], hi - lo), d


def _crossing(x: np.ndarray, i: int, j: int, level: float) -> float:
    """First sub-sample position in ``x[i..j]`` where ``x`` crosses ``level`` (linear interpolation); NaN if none."""
    seg = x[i:j + 1] - level
    k = np.flatnonzero((seg[:-1] * seg[1:] <= 0) & (seg[:-1] != seg[1:]))
    return i + k[0] + seg[k[0]] / (seg[k[0]] - seg[k[0] + 1]) if len(k) else np.nan


def pulse_measures(ppg: np.ndarray, r: np.ndarray, fs: float = FS) -> dict:
    """Per beat with a pulse: R peak, foot, systolic peak (samples), amplitude, width and reflection ratio."""
    u_all, d = upstrokes(ppg, fs)
    L = len(ppg)
    out = {k: [] for k in ("r", "foot", "sys", "amp", "width", "refl", "xmin_at")}
    for k, rk in enumerate(r):
        nxt = r[k + 1] if k + 1 < len(r) else L
        cand = u_all[(u_all > rk) & (u_all <= min(rk + MAX_PAT_S * fs, nxt + MAX_PAT_S * fs))]
        if len(cand) == 0 or d[cand[0]] <= 0:
            continue
        u = int(cand[0])
        a = max(int(rk), u - int(MAX_PAT_S * fs))
        m = a + int(np.argmin(ppg[a:u + 1]))
        foot = u - (ppg[u] - ppg[m]) / d[u]
        e = min(L, u + int(SYSTOLE_S * fs) + 1)
        s = u + int(np.argmax(ppg[u:e]))
        if s == e - 1 and e < L:                  # still rising at the search's end: not a systolic peak
            continue
        amp = ppg[s] - ppg[m]
        out["r"].append(rk), out["foot"].append(foot), out["sys"].append(s), out["amp"].append(amp)
        out["xmin_at"].append(m)
        half = ppg[m] + amp / 2
        later = u_all[u_all > u]
        limb_end = min(L - 1, int(later[0]) if len(later) else L - 1)
        if len(later):                            # the next pulse's minimum ends the descending limb
            limb_end = s + int(np.argmin(ppg[s:limb_end + 1]))
        up, down = _crossing(ppg, m, s, half), _crossing(ppg, s, limb_end, half)
        out["width"].append(down - up if np.isfinite(up) and np.isfinite(down) else np.nan)
        out["refl"].append(_reflection(ppg, d, s, limb_end, ppg[m], amp, fs))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def _reflection(ppg, d, s: int, limb_end: int, base: float, amp: float, fs: float) -> float:
    """The diastolic wave's height over the systolic one, both above the foot (see the module docstring)."""
    i = s + int(0.05 * fs)
    if limb_end - i < 3 or amp <= 0:
        return np.nan
    seg = d[i:limb_end]
    down = np.flatnonzero((seg[:-1] > 0) & (seg[1:] <= 0))
    j = i + (int(down[0]) + 1 if len(down) else int(np.argmax(seg)))
    return float((ppg[j] - base) / amp)


def respiratory_fit(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """``(frequency Hz, peak-to-peak depth / mean)`` of the best sinusoid-plus-trend fit over :data:`RESP_GRID_HZ`."""
    t, v = np.asarray(t, np.float64), np.asarray(v, np.float64)
    if len(v) < MIN_RESP_BEATS or not np.mean(v) > 0:
        return np.nan, np.nan
    tc = t - t.mean()
    w = 2 * np.pi * RESP_GRID_HZ[:, None] * tc[None, :]                              # [F, n]
    A = np.stack([np.ones_like(w), np.broadcast_to(tc, w.shape), np.cos(w), np.sin(w)], axis=-1)  # [F, n, 4]
    AtA = A.transpose(0, 2, 1) @ A
    coef = np.linalg.solve(AtA + 1e-9 * np.eye(4), (A.transpose(0, 2, 1) @ v)[..., None])[..., 0]  # [F, 4]
    sse = ((A @ coef[..., None])[..., 0] - v) ** 2
    best = int(np.argmin(sse.sum(axis=1)))
    return float(RESP_GRID_HZ[best]), float(2 * np.hypot(*coef[best, 2:]) / np.mean(v))


def window_beat_features(ppg: np.ndarray, ecg: np.ndarray, fs: float = FS) -> np.ndarray:
    """:data:`BEAT_FEATURES` of one window ``[len(BEAT_FEATURES)]``, NaN where not measurable."""
    out = np.full(len(BEAT_FEATURES), np.nan)
    r = r_peaks(ecg, fs)
    if len(r) >= 2:
        rr = np.diff(r) / fs
        out[0] = 60.0 / np.median(rr)
        out[1] = 1000 * np.std(rr, ddof=1) if len(rr) > 1 else np.nan
        out[2] = 1000 * np.sqrt(np.mean(np.diff(rr) ** 2)) if len(rr) > 1 else np.nan
        out[8:10] = respiratory_fit(r[1:] / fs, rr)
    p = pulse_measures(ppg, r, fs)
    if len(p["r"]):
        out[3] = 1000 * np.median(p["foot"] - p["r"]) / fs
        out[4] = np.median(p["amp"])
        out[5] = 1000 * np.median(p["sys"] - p["foot"]) / fs
        with np.errstate(all="ignore"):
            out[6] = 1000 * np.nanmedian(p["width"]) / fs if np.isfinite(p["width"]).any() else np.nan
            out[7] = np.nanmedian(p["refl"]) if np.isfinite(p["refl"]).any() else np.nan
        out[10:12] = respiratory_fit(p["sys"] / fs, p["amp"])
    return out


def beat_features(x: np.ndarray, ppg_channel: int, ecg_channel: int, fs: float = FS) -> np.ndarray:
    """``x [N, C, L]`` -> ``[N, len(BEAT_FEATURES)]`` float64."""
    x = np.asarray(x, np.float64)
    return np.stack([window_beat_features(w[ppg_channel], w[ecg_channel], fs) for w in x]) if len(x) else \
        np.zeros((0, len(BEAT_FEATURES)))


def fill_missing(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """NaN replaced by the column's train median (0 where train has none), in ``train`` and each of ``others``."""
    with np.errstate(all="ignore"):
        med = np.array([np.nanmedian(c) if np.isfinite(c).any() else 0.0 for c in np.asarray(train).T])
    return [np.where(np.isfinite(a), a, med) for a in (train, *others)]


def split_beat_features(splits: list, channels, batch_size: int) -> dict:
    """``{split name: [n, d]}``: :func:`beat_features` of every window of each split (SplitData), read
    ``batch_size`` windows at a time, a missing measure filled with the first split's median (:func:`fill_missing`:
    the first split is train)."""
    channels = list(channels)
    if not ("PPG" in channels and "ECG" in channels):
        raise ValueError(f"the beat features need a PPG and an ECG channel; the checkpoint has {', '.join(channels)}")
    ppg, ecg = channels.index("PPG"), channels.index("ECG")
    raw = [sp.map_batches(lambda x: beat_features(x, ppg, ecg), batch_size) for sp in splits]
    return dict(zip([sp.name for sp in splits], fill_missing(*raw)))
