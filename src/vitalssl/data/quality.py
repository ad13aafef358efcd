"""Per-window quality gate.

Every criterion is computed for every window and counted on its own, so the
quality report says how many windows each one rejected (a window can fail
several). Measures on the *raw* native-rate signal: missing samples, flat
line, clipping (filtering would hide them). Measures on the *band-passed*
125 Hz signal: amplitude, beats and heart rate, PPG-vs-ECG heart-rate
agreement.
"""

from __future__ import annotations

import numpy as np

from .config import GateConfig
from .dsp import detect_beats

CRITERIA = ("missing", "flat", "clipping", "amplitude", "heart_rate", "hr_disagreement")
CHANNEL_MEASURES = ("missing", "flat_s", "clip", "amp", "hr", "beats", "ibi_cv")


def _windows(x: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Read-only ``[n, length]`` view of ``x`` at ``starts`` (no copy)."""
    view = np.lib.stride_tricks.sliding_window_view(x, length)
    return view[starts]


def _longest_flat_run(raw: np.ndarray, starts: np.ndarray, length: int, eps: float) -> np.ndarray:
    """Longest run of consecutive samples that change by at most ``eps``, per window, in samples."""
    same = np.abs(np.diff(raw)) <= eps  # NaN compares False
    # run length of `same` ending at each position
    idx = np.arange(1, len(same) + 1, dtype=np.int32)
    last_break = np.maximum.accumulate(np.where(same, np.int32(0), idx))
    run_end = idx - last_break  # 0 where not `same`
    ends = _windows(run_end, starts, length - 1)
    within = np.arange(1, length, dtype=np.int32)  # a run inside the window is at most its offset + 1 long
    longest = np.minimum(ends, within).max(axis=1)
    return np.where(longest > 0, longest + 1, 0)  # runs of equal steps -> samples


def _clip_fraction(w: np.ndarray, tol: float) -> np.ndarray:
    lo, hi = np.nanmin(w, axis=1, keepdims=True), np.nanmax(w, axis=1, keepdims=True)
    span = hi - lo
    near = (w >= hi - tol * span) | (w <= lo + tol * span)
    frac = near.sum(axis=1) / np.maximum(np.isfinite(w).sum(axis=1), 1)
    return np.where(span[:, 0] > 0, frac, 1.0)


def case_measures(raw: np.ndarray, filt: np.ndarray, starts: np.ndarray, length: int, decimation: int,
                  native_fs: float, fs: float, cfg: GateConfig) -> dict:
    """Gate measures of one channel for every window of a case, as arrays ``[n]``.

    ``raw``: native-rate samples (NaN = missing); ``filt``: band-passed samples at
    ``fs = native_fs / decimation``; window ``i`` covers ``filt[starts[i]:starts[i] + length]``
    and ``raw[starts[i] * decimation:(starts[i] + length) * decimation]``.
    """
    n = len(starts)
    if n == 0:
        return {k: np.zeros(0) for k in CHANNEL_MEASURES}
    with np.errstate(invalid="ignore"):
        rw = _windows(raw, starts * decimation, length * decimation)
        fw = _windows(filt, starts, length)
        missing = np.isnan(rw).mean(axis=1)
        all_nan = missing >= 1.0
        flat = _longest_flat_run(raw, starts * decimation, length * decimation, cfg.flat_eps) / native_fs
        clip = np.ones(n)
        if (~all_nan).any():
            clip[~all_nan] = _clip_fraction(rw[~all_nan], cfg.clip_tol)
        lo, hi = np.percentile(fw, [1, 99], axis=1)
    amp = hi - lo
    beats, hr, cv = np.zeros(n, np.int64), np.full(n, np.nan), np.full(n, np.nan)
    for i in range(n):
        peaks = detect_beats(fw[i], fs, cfg.hr_range[1], robust_range=amp[i])
        beats[i] = len(peaks)
        if len(peaks) >= 2:
            ibi = np.diff(peaks) / fs
            hr[i] = 60.0 / float(np.median(ibi))
            cv[i] = float(np.std(ibi) / np.mean(ibi))
    return {"missing": missing, "flat_s": flat, "clip": clip, "amp": amp, "hr": hr, "beats": beats, "ibi_cv": cv}


def channel_measures(raw: np.ndarray, filt: np.ndarray, native_fs: float, fs: float, cfg: GateConfig) -> dict:
    """Gate measures of one channel of a single window (``raw`` native-rate, ``filt`` band-passed at ``fs``)."""
    dec = int(round(native_fs / fs))
    m = case_measures(raw, filt, np.array([0]), len(filt), dec, native_fs, fs, cfg)
    return {k: v[0].item() for k, v in m.items()}


def judge(ppg: dict, ecg: dict, cfg: GateConfig) -> dict:
    """Which criteria windows fail, as ``{criterion: bool or [n] bool}``, plus the HR difference.

    ``ppg`` and ``ecg`` hold one window's measures (scalars) or a case's (arrays).
    """
    def hr_bad(m):
        hr = np.asarray(m["hr"], float)
        with np.errstate(invalid="ignore"):
            return ((np.asarray(m["beats"]) < cfg.min_beats) | ~np.isfinite(hr)
                    | ~((cfg.hr_range[0] <= hr) & (hr <= cfg.hr_range[1])) | (np.asarray(m["ibi_cv"]) > cfg.max_ibi_cv))

    with np.errstate(invalid="ignore"):
        hr_diff = np.abs(np.asarray(ppg["hr"], float) - np.asarray(ecg["hr"], float))  # NaN if either has no HR
        fails = {
            "missing": np.maximum(ppg["missing"], ecg["missing"]) > cfg.max_missing_frac,
            "flat": np.maximum(ppg["flat_s"], ecg["flat_s"]) > cfg.max_flat_s,
            "clipping": np.maximum(ppg["clip"], ecg["clip"]) > cfg.max_clip_frac,
            "amplitude": ~((cfg.ppg_amp_range[0] <= np.asarray(ppg["amp"])) & (np.asarray(ppg["amp"]) <= cfg.ppg_amp_range[1])
                           & (cfg.ecg_amp_range[0] <= np.asarray(ecg["amp"])) & (np.asarray(ecg["amp"]) <= cfg.ecg_amp_range[1])),
            "heart_rate": hr_bad(ppg) | hr_bad(ecg),
            "hr_disagreement": ~(hr_diff <= cfg.max_hr_diff),  # NaN (no HR) counts as disagreement
        }
    if np.ndim(hr_diff) == 0:
        fails = {k: bool(v) for k, v in fails.items()}
        hr_diff = float(hr_diff)
    return {"fails": fails, "hr_diff": hr_diff}


def score_against_faults(starts_s, kept, faults, window_s: float, min_overlap_s: float = 0.5) -> dict:
    """Count gate decisions against a fault map (the demo generator's ground truth).

    A window is *faulted* when an unusable fault covers at least ``min_overlap_s``
    of it, *clean* when no unusable fault touches it, and *borderline* otherwise
    (a fault grazing its edge); borderline windows are counted but not scored.
    Correctable faults (baseline wander, mains hum) do not make a window faulted.
    """
    out = {"faulted": 0, "faulted_rejected": 0, "clean": 0, "clean_kept": 0, "borderline": 0}
    for s, k in zip(starts_s, kept):
        e = s + window_s
        overlaps = [min(e, f.end_s) - max(s, f.start_s) for f in faults if f.unusable]
        worst = max(overlaps, default=0.0)
        if worst >= min_overlap_s:
            out["faulted"] += 1
            out["faulted_rejected"] += int(not k)
        elif worst > 0:
            out["borderline"] += 1
        else:
            out["clean"] += 1
            out["clean_kept"] += int(bool(k))
    return out
