"""The demo's recording faults: what is injected into a clean case, and the fault map that records it.

Times in the fault map are in s from case start. The kinds and what makes each
unusable are listed in :mod:`vitalssl.data.demo`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from .demophysiology import SRATE, CaseSignals, beat_times

UNUSABLE = ("nan_gap", "flat", "clipping", "clip_filtered", "motion", "partial_motion", "electrocautery",
            "ecg_pause", "foreign_ppg")
CORRECTABLE = ("baseline_wander", "mains_hum", "inverted_ecg")
FAULT_S = {"nan_gap": (2, 25), "flat": (3, 20), "clipping": (5, 30), "clip_filtered": (5, 30), "motion": (3, 12),
           "partial_motion": (2, 4), "electrocautery": (3, 15), "ecg_pause": (3, 4), "foreign_ppg": (20, 60)}


@dataclass(frozen=True)
class Fault:
    caseid: int
    kind: str
    channel: str      # PPG | ECG | both
    start_s: float
    end_s: float
    unusable: bool


def fault(caseid: int, kind: str, channel: str, start: float, end: float) -> Fault:
    return Fault(caseid, kind, channel, round(float(start), 3), round(float(end), 3), kind in UNUSABLE)


def motion(rng, m: int, amp: float) -> np.ndarray:
    """A motion artefact of ``m`` samples: four random 0.5-4 Hz sines under a soft-edged envelope."""
    k = np.arange(m) / SRATE
    art = sum(rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * rng.uniform(0.5, 4.0) * k + rng.uniform(0, 6.28))
              for _ in range(4))
    return amp * art * np.hanning(m) ** 0.3


def add_correctable(rng, caseid: int, sig: CaseSignals, duration: float) -> list[Fault]:
    """An inverted ECG lead (a fifth of the cases), baseline wander (always) and mains hum (half): in place."""
    out, n = [], len(sig.ecg)
    t = np.arange(n) / SRATE
    beats = sig.beats
    # from a point between two beats to the end; before the wander, as the reversal happens at the electrodes
    if rng.random() < 0.2:
        k = rng.integers(len(beats) // 4, len(beats) - 1)
        s = 0.5 * (beats[k] + beats[k + 1]) + 0.2  # after the T wave, before the next P wave
        sig.ecg[int(s * SRATE):] *= -1
        out.append(fault(caseid, "inverted_ecg", "ECG", s, duration))
    f_w = rng.uniform(0.03, 0.2)
    sig.ecg += rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * f_w * t + rng.uniform(0, 6.28))
    sig.ppg += rng.uniform(2, 6) * np.sin(2 * np.pi * f_w * 0.7 * t + rng.uniform(0, 6.28))
    out.append(fault(caseid, "baseline_wander", "both", 0, duration))
    if rng.random() < 0.5:
        f_m = 60.0 if rng.random() < 0.5 else 50.0
        s = rng.uniform(0, duration / 2)
        e = min(duration, s + rng.uniform(60, duration))
        seg = (t >= s) & (t < e)
        sig.ecg[seg] += rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f_m * t[seg])
        out.append(fault(caseid, "mains_hum", "ECG", s, e))
    return out


def add_unusable(rng, caseid: int, sig: CaseSignals, duration: float, rate_per_min: float,
                 kinds: tuple = UNUSABLE) -> list[Fault]:
    """A Poisson number of faults drawn from ``kinds``, injected in place; their fault-map entries."""
    rails = {"PPG": (np.min(sig.ppg), np.max(sig.ppg)), "ECG": (np.min(sig.ecg), np.max(sig.ecg))}
    out = []
    for _ in range(rng.poisson(rate_per_min * duration / 60)):
        kind = kinds[rng.integers(len(kinds))]
        dur = rng.uniform(*FAULT_S[kind])
        s = rng.uniform(0, max(duration - dur, 1))
        e = min(duration, s + dur)
        seg = slice(int(s * SRATE), int(e * SRATE))
        ch = INJECT[kind](rng, sig, seg, rails, s, e)
        out.append(fault(caseid, kind, ch, s, e))
    return out


def _nan_gap(rng, sig, seg, rails, s, e):
    ch = ("both", "PPG", "ECG")[rng.integers(3)]
    if ch in ("both", "PPG"):
        sig.ppg[seg] = np.nan
    if ch in ("both", "ECG"):
        sig.ecg[seg] = np.nan
    return ch


def _flat(rng, sig, seg, rails, s, e):
    ch = ("PPG", "ECG")[rng.integers(2)]
    x = sig.ppg if ch == "PPG" else sig.ecg
    x[seg] = x[max(seg.start - 1, 0)]
    return ch


def _clipping(rng, sig, seg, rails, s, e, filtered=False):
    # a gain or offset jump drives the signal into the amplifier's rails, at the extremes of the clean recording
    ch = ("PPG", "ECG")[rng.integers(2)]
    x = sig.ppg if ch == "PPG" else sig.ecg
    lo, hi = rails[ch]
    win = x[seg]
    mid = np.nanmedian(win)
    gain = rng.uniform(2.5, 4.0) if ch == "PPG" else rng.uniform(4.0, 8.0)
    x[seg] = np.clip(mid + gain * (win - mid), lo, hi)
    if filtered:
        # stored at 250 Hz and brought back to 500 Hz: the polyphase filters ring at the plateau's corners
        pad = slice(max(seg.start - 500, 0), min(seg.stop + 500, len(x)))
        y = x[pad]
        if np.isfinite(y).all():
            x[pad] = resample_poly(resample_poly(y, 1, 2), 2, 1)[: len(y)]
    return ch


def _motion(rng, sig, seg, rails, s, e, scale=(2.5, 5.0)):
    sig.ppg[seg] += motion(rng, seg.stop - seg.start, sig.pulse_amp * rng.uniform(*scale))
    return "PPG"


def _electrocautery(rng, sig, seg, rails, s, e):
    sig.ecg[seg] += rng.uniform(2.0, 6.0) * rng.standard_normal(seg.stop - seg.start)
    return "ECG"


def _ecg_pause(rng, sig, seg, rails, s, e):
    # no QRS: the trace keeps its level, noise and a slow drift, so it is neither flat nor missing
    m = seg.stop - seg.start
    level = np.nanmedian(sig.ecg[max(seg.start - 500, 0):seg.start + 1])
    drift = rng.uniform(-0.05, 0.05) * np.sin(np.pi * np.arange(m) / max(m, 1))
    sig.ecg[seg] = level + drift + rng.normal(0, 0.012, m)
    return "ECG"


def _foreign_ppg(rng, sig, seg, rails, s, e):
    # another patient's pulses, at a rate close to this one's so the heart rates agree
    inside = (sig.beats >= s) & (sig.beats < e)
    hr_here = 60.0 / np.median(np.diff(sig.beats[inside])) if inside.sum() > 2 else 75.0
    other = s + beat_times(rng, e - s + 1, hr0=hr_here + rng.uniform(-6, 6))
    x = sig.pulses(other, rng.uniform(0.18, 0.30))
    # the pulses swapped only, cross-faded over 0.25 s, so the wander and noise run on without a step
    m = seg.stop - seg.start
    fade = np.minimum(1.0, np.minimum(np.arange(m), np.arange(m)[::-1]) / (0.25 * SRATE))
    sig.ppg[seg] += fade * (x[seg] - sig.own_pulses[seg])
    return "PPG"


INJECT = {"nan_gap": _nan_gap, "flat": _flat, "clipping": _clipping,
          "clip_filtered": lambda *a: _clipping(*a, filtered=True), "motion": _motion,
          "partial_motion": lambda *a: _motion(*a, scale=(1.0, 3.0)), "electrocautery": _electrocautery,
          "ecg_pause": _ecg_pause, "foreign_ppg": _foreign_ppg}
