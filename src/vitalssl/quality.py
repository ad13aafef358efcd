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
from .dsp import detect_beats, longest_run

CRITERIA = ("missing", "flat", "clipping", "amplitude", "heart_rate", "hr_disagreement")
CHANNEL_MEASURES = ("missing", "flat_s", "clip", "amp", "hr", "beats", "ibi_cv")


def _clip_fraction(x: np.ndarray, tol: float) -> float:
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return 1.0
    lo, hi = x.min(), x.max()
    span = hi - lo
    if span <= 0:
        return 1.0
    return float(np.mean(x >= hi - tol * span) + np.mean(x <= lo + tol * span))


def _beat_stats(x: np.ndarray, fs: float, hr_max: float):
    peaks = detect_beats(x, fs, hr_max)
    if len(peaks) < 2:
        return len(peaks), np.nan, np.nan
    ibi = np.diff(peaks) / fs
    return len(peaks), 60.0 / float(np.median(ibi)), float(np.std(ibi) / np.mean(ibi))


def channel_measures(raw: np.ndarray, filt: np.ndarray, native_fs: float, fs: float, cfg: GateConfig) -> dict:
    """Gate measures of one channel of one window.

    ``raw``: native-rate samples (NaN = missing); ``filt``: band-passed samples at ``fs``.
    """
    finite = np.isfinite(raw)
    same = np.abs(np.diff(raw)) <= cfg.flat_eps  # NaN compares False
    lo, hi = np.percentile(filt, [1, 99])
    beats, hr, cv = _beat_stats(filt, fs, cfg.hr_range[1])
    return {
        "missing": float(1.0 - finite.mean()),
        "flat_s": (longest_run(same) + 1) / native_fs if same.any() else 0.0,
        "clip": _clip_fraction(raw, cfg.clip_tol),
        "amp": float(hi - lo),
        "hr": hr,
        "beats": beats,
        "ibi_cv": cv,
    }


def judge(ppg: dict, ecg: dict, cfg: GateConfig) -> dict:
    """Which criteria a window fails, as {criterion: bool}, plus the HR difference."""
    def hr_bad(m):
        return (m["beats"] < cfg.min_beats or not np.isfinite(m["hr"])
                or not (cfg.hr_range[0] <= m["hr"] <= cfg.hr_range[1]) or m["ibi_cv"] > cfg.max_ibi_cv)
    hr_diff = abs(ppg["hr"] - ecg["hr"]) if np.isfinite(ppg["hr"]) and np.isfinite(ecg["hr"]) else np.nan
    fails = {
        "missing": max(ppg["missing"], ecg["missing"]) > cfg.max_missing_frac,
        "flat": max(ppg["flat_s"], ecg["flat_s"]) > cfg.max_flat_s,
        "clipping": max(ppg["clip"], ecg["clip"]) > cfg.max_clip_frac,
        "amplitude": not (cfg.ppg_amp_range[0] <= ppg["amp"] <= cfg.ppg_amp_range[1]
                          and cfg.ecg_amp_range[0] <= ecg["amp"] <= cfg.ecg_amp_range[1]),
        "heart_rate": hr_bad(ppg) or hr_bad(ecg),
        "hr_disagreement": not (hr_diff <= cfg.max_hr_diff),  # NaN (no HR) counts as disagreement
    }
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
