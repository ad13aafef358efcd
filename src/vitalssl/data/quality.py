"""Per-window quality gate.

Every criterion is computed for every window and counted on its own, so the
quality report says how many windows each one rejected (a window can fail
several). Measures on the *raw* native-rate signal: missing samples, flat
line, clipping (filtering would hide them). Measures on the *band-passed*
125 Hz signal: amplitude, beats, heart rate, how evenly the beats cover the
window, PPG-vs-ECG heart-rate agreement, and whether each R peak is followed
by one PPG pulse at a stable delay (the pulse arrival time, PAT).

Beat indices are samples from the window's start at the band-passed rate.
"""

from __future__ import annotations

import numpy as np

from ..signal import detect_beats, detect_beats_batch
from .config import GateConfig

CRITERIA = ("missing", "flat", "clipping", "amplitude", "heart_rate", "beat_coverage", "hr_disagreement",
            "beat_correspondence", "pat_stability")
CHANNEL_MEASURES = ("missing", "flat_s", "clip", "amp", "hr", "beats", "ibi_cv", "gap_ratio")
PAIR_MEASURES = ("ecg_inverted", "hr_diff", "beat_match", "pat_s", "pat_iqr_s")


def _windows(x: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Read-only ``[n, length]`` windows of ``x`` at ``starts``: a view when the starts are evenly
    spaced (a case's windows always are), a copy otherwise."""
    if len(starts) == 0:  # also a case shorter than one window, where no view of that length exists
        return np.zeros((0, length), x.dtype)
    view = np.lib.stride_tricks.sliding_window_view(x, length)
    step = int(starts[1] - starts[0]) if len(starts) > 1 else 1
    if len(starts) and step > 0 and np.array_equal(starts, starts[0] + step * np.arange(len(starts))):
        return view[starts[0]::step][: len(starts)]
    return view[starts]


def _flat_steps(raw: np.ndarray, eps: float) -> np.ndarray:
    """Indices ``j`` where ``|raw[j + 1] - raw[j]| <= eps``, the difference taken exactly (NaN is never flat).

    For float32 samples the differences are taken in float32 first, with a bound a
    little above ``eps`` that no rounding can cross, and the few steps under it are
    checked again in float64, where the difference of two float32 values is exact.
    """
    if raw.dtype == np.float32:
        d = np.subtract(raw[1:], raw[:-1])
        cand = np.flatnonzero(np.abs(d, out=d) <= np.float32(eps * (1 + 2.0 ** -20)))
        exact = np.abs(raw[cand + 1].astype(np.float64) - raw[cand].astype(np.float64)) <= eps
        return cand[exact]
    d = np.diff(raw)
    return np.flatnonzero(np.abs(d, out=d) <= eps)


def _longest_flat_run(raw: np.ndarray, starts: np.ndarray, length: int, eps: float) -> np.ndarray:
    """Longest run of consecutive samples that change by at most ``eps``, per window, in samples.

    Works run by run: a recording holds few such runs, so the cost is a pass
    over the signal, not over every window's samples.
    """
    steps = _flat_steps(raw, eps)
    cut = np.flatnonzero(np.diff(steps) > 1) + 1
    rs = steps[np.concatenate([[0], cut])] if len(steps) else steps
    re = steps[np.concatenate([cut - 1, [len(steps) - 1]])] + 1 if len(steps) else steps
    rs, re = rs.astype(np.int64), re.astype(np.int64)  # steps rs..re-1 are flat: samples rs..re
    # windows whose steps [s, s + length - 1) meet [rs, re): rs - length + 1 < s < re
    lo = np.searchsorted(starts, rs - length + 2, side="left")
    hi = np.searchsorted(starts, re, side="left")
    count = np.maximum(hi - lo, 0)
    run = np.repeat(np.arange(len(rs)), count)
    win = lo[run] + (np.arange(len(run)) - np.repeat(np.cumsum(count) - count, count))
    steps = np.minimum(re[run], starts[win] + length - 1) - np.maximum(rs[run], starts[win])
    longest = np.zeros(len(starts), np.int64)
    np.maximum.at(longest, win, steps)
    return np.where(longest > 0, longest + 1, 0)  # flat steps -> samples


def _threshold_like(t: np.ndarray, dtype, up: bool) -> np.ndarray:
    """``t`` (float64) as a threshold of the samples' ``dtype`` that splits them exactly as ``t`` does:
    for float32 samples, the nearest float32 at or above ``t`` (``up``, for ``>=``) or at or below it
    (for ``<=``). A comparison of like types is several times faster than a mixed one."""
    if dtype != np.float32:
        return t
    t32 = t.astype(np.float32)
    with np.errstate(invalid="ignore"):
        off = t32 < t if up else t32 > t
    t32[off] = np.nextafter(t32[off], np.float32(np.inf if up else -np.inf))
    return t32


CLIP_BAND = 0.1  # a plateau is looked for in the outer 10% of the window's range on each side


def _plateau_fraction(w: np.ndarray, edge: np.ndarray, span: np.ndarray, tol: float, min_run: int,
                      top: bool) -> np.ndarray:
    """Per row of ``w``: fraction of samples on a plateau near the top of the range (``edge`` = row maximum),
    or near its bottom (``top=False``, ``edge`` = row minimum).

    The plateau's level is the most populated ``tol``-wide bin of the range's outer
    ``CLIP_BAND``; samples within one bin of it, and less than half a bin from the
    previous sample (a plateau is smooth; a noisy baseline is not), count when
    they lie in runs whose *core* (:func:`_core_thirds`) lasts ``min_run`` or more, lies
    within :data:`RAIL_DEPTH` bins of the edge on average (a slow trough quantised by a coarse
    ADC makes level runs further in), and is level: a rail
    holds one level from its start to its end, while a rounded peak or trough
    (a real PPG's broad systolic peak, a slow diastolic foot) passes through the
    band as a dome or a slope. The core's thirds are compared: one whose middle is
    more than :data:`PLATEAU_DOME` bins nearer the edge than its ends, or whose
    ends differ by more than :data:`PLATEAU_SLOPE` bins, is not a rail (ringing
    ears, ends nearer the edge than the middle, are a filtered rail's and are
    allowed). Only the band's samples (a few
    percent of a clean window) are looked at after the first comparison; the
    rows' own values reach them by ``np.repeat`` (the band's samples come in row
    order), not by gathers.
    """
    n, length = w.shape
    nb = int(np.ceil(CLIP_BAND / tol))
    unit = tol * span[:, 0]
    with np.errstate(invalid="ignore"):
        if top:
            band = w >= _threshold_like(edge - CLIP_BAND * span, w.dtype, up=True)
        else:
            band = w <= _threshold_like(edge + CLIP_BAND * span, w.dtype, up=False)
    flat = np.flatnonzero(band)
    if len(flat) == 0:
        return np.zeros(n)
    counts = np.count_nonzero(band, axis=1)
    r = np.repeat(np.arange(n), counts)
    c = flat - r * length
    wf = w.reshape(-1)  # a view: a case's windows tile its signal
    v = wf[flat].astype(np.float64, copy=False)
    edge_r, unit_r = np.repeat(edge[:, 0], counts), np.repeat(unit, counts)
    depth = edge_r - v if top else v - edge_r
    k = np.minimum((depth / unit_r).astype(np.int64), nb - 1)  # 0 = the bin at the edge
    mode = np.bincount(r * nb + k, minlength=n * nb).reshape(n, nb).argmax(axis=1)
    prev = wf[flat - 1].astype(np.float64, copy=False)  # the row's previous sample; the first sample of a row is dropped below
    keep = (np.abs(k - np.repeat(mode, counts)) <= 1) & (np.abs(v - prev) <= 0.5 * unit_r) & (c > 0)
    r, c, depth, unit_r = r[keep], c[keep], depth[keep], unit_r[keep]
    if len(r) == 0:
        return np.zeros(n)
    # runs: consecutive columns in one row
    new_run = np.ones(len(r), bool)
    new_run[1:] = (c[1:] != c[:-1] + 1) | (r[1:] != r[:-1])
    first = np.flatnonzero(new_run)
    lengths = np.diff(np.append(first, len(r)))
    core_len, m = _core_thirds(depth / unit_r, new_run, first, lengths)
    dome = (m[:, 0] + m[:, 2]) / 2 - m[:, 1]  # > 0: the middle nearer the edge
    level = (dome <= PLATEAU_DOME) & (np.abs(m[:, 0] - m[:, 2]) <= PLATEAU_SLOPE)
    rail = (core_len >= min_run) & (m.mean(axis=1) <= RAIL_DEPTH) & level
    return np.bincount(r[first[rail]], weights=core_len[rail], minlength=n) / length


CORE_BINS = 2.0      # bins: a run's core, its samples this near its shallowest (see _core_thirds)
RAIL_DEPTH = 5.0     # bins: a rail lies this near the window's extreme (a filtered one overshoots it a little)
PLATEAU_DOME = 0.5   # bins: a run whose middle third is this much nearer the edge than its outer thirds is a dome
PLATEAU_SLOPE = 0.6  # bins: a run whose first and last thirds differ by this much is a slope


def _core_thirds(d: np.ndarray, new_run: np.ndarray, first: np.ndarray, lengths: np.ndarray) -> tuple:
    """Per run of samples at depths ``d`` (in bins from the edge; runs start where ``new_run``, at ``first``,
    and last ``lengths``): the length of its *core*, the samples within :data:`CORE_BINS` of the run's
    shallowest, and the mean depth of the core's first, middle and last thirds.
    Returns ``([runs] core length, [runs, 3] means)``.

    The core, not the whole run, is what a rail is: a hard clip of a broad peak lies flat on the rail,
    and the peak's shoulders on either side, still within the run's band, are not part of it. A rounded
    peak's core stays a dome (its middle about half a bin nearer the edge than its ends), a slow trough's
    a slope. Calibrated on a real finger PPG that clips at its 8-bit ADC's top (``systole``'s ``ppg.npy``,
    see ``tests/test_real_recordings.py``) and on clipped synthetic peaks of every width
    (``tests/test_dsp_quality.py``)."""
    run = np.cumsum(new_run) - 1
    shallowest = np.minimum.reduceat(d, first)
    core = d <= shallowest[run] + CORE_BINS
    core_len = np.bincount(run, weights=core, minlength=len(first))
    seen = np.cumsum(core)
    rank = seen - np.repeat(seen[first] - core[first], lengths)  # 1, 2, ... along each run's core
    pos = (rank - 0.5) / np.maximum(core_len[run], 1)  # (0, 1) along the core
    key = (run * 3 + np.minimum((pos * 3).astype(np.int64), 2))[core]
    m = (np.bincount(key, weights=d[core], minlength=3 * len(first))
         / np.maximum(np.bincount(key, minlength=3 * len(first)), 1)).reshape(-1, 3)
    return core_len, m


def _clip_fraction(w: np.ndarray, tol: float, min_run: int) -> np.ndarray:
    """Fraction of samples on plateaus at the window's extremes (:func:`_plateau_fraction`, top and bottom).

    A plateau, not samples at the extreme: a clipped top that was filtered or
    resampled before storage overshoots at its corners, so the window's
    maximum lies above the plateau, and ripples a little along it; but it keeps
    one level, smoothly, for as long as the clip lasted. A clean peak passes
    its top in a few samples, and a baseline's noise keeps it from being smooth.
    A window with no range (constant, or no sample at all) counts as clipped throughout.
    """
    # the range in float64 whatever the samples' type: the thresholds below are float64 arithmetic
    lo = w.min(axis=1, keepdims=True).astype(np.float64)
    hi = w.max(axis=1, keepdims=True).astype(np.float64)
    gaps = np.flatnonzero(np.isnan(lo[:, 0]))
    if len(gaps):  # the NaN-aware versions copy their rows: only the rows that need them
        some = gaps[~np.isnan(w[gaps]).all(axis=1)]
        lo[some], hi[some] = np.nanmin(w[some], axis=1, keepdims=True), np.nanmax(w[some], axis=1, keepdims=True)
    span = hi - lo
    ok = span[:, 0] > 0  # NaN: no sample
    if not ok.any():
        return np.ones(len(w))
    if not ok.all():  # a NaN edge selects no sample: those rows cost nothing and are set below
        lo, hi = np.where(ok[:, None], lo, np.nan), np.where(ok[:, None], hi, np.nan)
    frac = _plateau_fraction(w, hi, span, tol, min_run, True) + _plateau_fraction(w, lo, span, tol, min_run, False)
    frac[~ok] = 1.0
    return frac


def _offsets(win: np.ndarray, n: int) -> np.ndarray:
    """``[n + 1]`` start of each window's entries in a sorted ragged array with window ids ``win``."""
    return np.concatenate([[0], np.cumsum(np.bincount(win, minlength=n))])


def _segment_quantiles(values: np.ndarray, win: np.ndarray, n: int, qs: tuple) -> list:
    """Per window, the ``np.percentile(..., 100 * q)`` (linear interpolation) of its ``values``; NaN if none.

    ``win`` must be sorted (entries grouped by window)."""
    order = np.lexsort((values, win))
    x = values[order]
    off = _offsets(win, n)
    m = np.diff(off)
    has = m > 0
    out = []
    for q in qs:
        pos = q * (m[has] - 1)
        lo = pos.astype(np.int64)
        hi = np.minimum(lo + 1, m[has] - 1)
        base = off[:-1][has]
        v = np.full(n, np.nan)
        v[has] = x[base + lo] + (pos - lo) * (x[base + hi] - x[base + lo])
        out.append(v)
    return out


def beat_measures_batch(win: np.ndarray, idx: np.ndarray, n: int, length: int,
                        fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(beats, hr, ibi_cv, gap_ratio)`` per window of ragged peaks ``(win, idx)`` (see :func:`beat_measures`)."""
    beats = np.bincount(win, minlength=n)
    same = win[1:] == win[:-1]
    ibi = np.diff(idx)[same].astype(float)
    iw = win[1:][same]
    (med,) = _segment_quantiles(ibi, iw, n, (0.5,))
    count = np.bincount(iw, minlength=n)
    ok = count > 0  # two beats or more
    mean = np.full(n, np.nan)
    mean[ok] = np.bincount(iw, weights=ibi, minlength=n)[ok] / count[ok]
    dev2 = np.bincount(iw, weights=(ibi - mean[iw]) ** 2, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.sqrt(dev2 / count) / mean
        longest = np.full(n, -np.inf)
        np.maximum.at(longest, iw, ibi)
        off = _offsets(win, n)
        first = np.where(ok, idx[np.minimum(off[:-1], len(idx) - 1)] if len(idx) else 0, 0)
        last = np.where(ok, idx[np.maximum(off[1:] - 1, 0)] if len(idx) else 0, 0)
        gaps = np.maximum(longest, np.maximum(first, length - 1 - last).astype(float))
        hr = np.where(ok, 60.0 * fs / med, np.nan)
        return beats, hr, np.where(ok, cv, np.nan), np.where(ok, gaps / med, np.nan)


def beat_measures(peaks: np.ndarray, length: int, fs: float) -> tuple[float, float, float]:
    """``(hr, ibi_cv, gap_ratio)`` of beats at ``peaks`` in a window of ``length`` samples.

    ``gap_ratio``: the longest stretch without a beat, the window's edges
    included, over the median beat interval. Beats spread over the whole
    window give about 1; a missed beat 2; a 4 s pause at 70 bpm about 5.
    NaN for fewer than two beats.
    """
    peaks = np.asarray(peaks, np.int64)
    _, hr, cv, gap = beat_measures_batch(np.zeros(len(peaks), np.int64), peaks, 1, length, fs)
    return float(hr[0]), float(cv[0]), float(gap[0])


def correspondence_batch(rwin: np.ndarray, r: np.ndarray, pwin: np.ndarray, p: np.ndarray, n: int, fs: float,
                         length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`correspondence` of every window at once, from ragged R peaks ``(rwin, r)`` and pulses ``(pwin, p)``."""
    match, pat_med, pat_iqr = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    if len(r) < 2 or len(p) == 0:
        return match, pat_med, pat_iqr
    span = length + 1  # window w's samples live at w * span + [0, length]: no two windows meet
    rg, pg = rwin * span + r, pwin * span + p
    roff = _offsets(rwin, n)
    j = np.searchsorted(rg, pg, side="right") - 1  # R peak each pulse follows
    inside = (j >= roff[pwin]) & (j < roff[pwin + 1] - 1)
    if not inside.any():
        return match, pat_med, pat_iqr
    same = rwin[1:] == rwin[:-1]  # interval k runs from R peak k to k + 1
    rr = np.diff(r).astype(float)
    ji, wi = j[inside], pwin[inside]
    phase = (p[inside] - r[ji]) / rr[ji]
    angle = 2 * np.pi * phase
    cos = np.bincount(wi, weights=np.cos(angle), minlength=n)
    sin = np.bincount(wi, weights=np.sin(angle), minlength=n)
    has = np.bincount(wi, minlength=n) > 0
    mean_phase = (np.arctan2(sin, cos) / (2 * np.pi)) % 1.0
    k = np.flatnonzero(same & has[rwin[:-1]])  # the intervals of windows with a pulse inside one
    kw = rwin[k]
    shift = (mean_phase[kw] - 0.5) * rr[k]
    lo, hi = r[k] + shift, r[k + 1] + shift
    scored = (lo >= 0) & (hi <= length)
    k, kw, lo, hi = k[scored], kw[scored], lo[scored], hi[scored]
    # integer pulses: p >= lo  <=>  p >= ceil(lo), and p < hi  <=>  p < ceil(hi); exact in window coordinates
    first = np.searchsorted(pg, kw * span + np.ceil(lo).astype(np.int64), side="left")
    count = np.searchsorted(pg, kw * span + np.ceil(hi).astype(np.int64), side="left") - first
    one = count == 1
    n_scored = np.bincount(kw, minlength=n)
    match = np.where(n_scored > 0, np.bincount(kw, weights=one, minlength=n) / np.maximum(n_scored, 1), np.nan)
    pat = (p[first[one]] - r[k[one]]) / fs
    q25, q50, q75 = _segment_quantiles(pat, kw[one], n, (0.25, 0.5, 0.75))
    return match, q50, q75 - q25


def correspondence(r: np.ndarray, p: np.ndarray, fs: float, length: int) -> tuple[float, float, float]:
    """``(beat_match, pat_s, pat_iqr_s)`` of R peaks ``r`` and PPG pulse peaks ``p`` (samples).

    Each PPG pulse belongs to the R peak it follows by the pair's pulse arrival
    time. The typical delay is found first, as the circular mean of each
    pulse's phase within its R-R interval (so a delay near a whole interval
    does not wrap); every R-R interval is then shifted by that delay less half
    an interval, and holds exactly one pulse in a true pair. Only shifted
    intervals inside the window of ``length`` samples are scored: one that
    reaches past an edge may have its pulse outside.
    ``beat_match``: the fraction of scored intervals holding exactly one pulse;
    ``pat_s``, ``pat_iqr_s``: median and interquartile range of those pulses'
    delays after their R peak, s (a delay longer than an R-R interval is seen
    modulo the interval). NaN without two R peaks, with no pulse between them,
    or with no scored interval; ``(0, NaN, NaN)`` when no scored interval holds one pulse.
    """
    r, p = np.asarray(r, np.int64), np.asarray(p, np.int64)
    out = correspondence_batch(np.zeros(len(r), np.int64), r, np.zeros(len(p), np.int64), p, 1, fs, length)
    return tuple(float(v[0]) for v in out)


def raw_measures(raw: np.ndarray, starts: np.ndarray, length: int, native_fs: float, cfg: GateConfig) -> dict:
    """Missing, flat and clipping measures of one channel for windows at ``starts`` (native samples).

    ``raw``: native-rate samples, NaN where none was recorded; float32 (as stored) or float64
    give the same measures, all arithmetic on them being float64.
    """
    n = len(starts)
    if n == 0:
        return {k: np.zeros(0) for k in ("missing", "flat_s", "clip")}
    with np.errstate(invalid="ignore"):
        rw = _windows(raw, starts, length)
        nan = np.isnan(rw)
        missing = nan.mean(axis=1)
        flat = _longest_flat_run(raw, starts, length, cfg.flat_eps) / native_fs
        min_run = max(2, int(round(cfg.clip_min_run_s * native_fs)))
        clip = _clip_fraction(rw, cfg.clip_tol, min_run)
    return {"missing": missing, "flat_s": flat, "clip": clip}


def detect_pair(ppg: np.ndarray, ecg: np.ndarray, fs: float, hr_max: float, ppg_amp: float, ecg_amp: float,
                inverted: bool) -> tuple[np.ndarray, np.ndarray]:
    """PPG pulse peaks and R peaks of one band-passed window (an inverted ECG is searched for its troughs).

    The gate runs the same detector on all windows at once (:func:`detect_beats_batch`);
    this one-window form is the signature another detector is compared through
    (``case_measures(..., detect=...)``, ``benchmarks/bench_detectors.py``).
    """
    return (detect_beats(ppg, fs, hr_max, ppg_amp),
            detect_beats(-ecg if inverted else ecg, fs, hr_max, ecg_amp))


def _ragged(per_window: list) -> tuple[np.ndarray, np.ndarray]:
    """``(win, idx)`` of a list of per-window index arrays."""
    counts = [len(a) for a in per_window]
    win = np.repeat(np.arange(len(per_window)), counts)
    idx = np.concatenate(per_window).astype(np.int64) if per_window else np.zeros(0, np.int64)
    return win, idx


def case_measures(raw: tuple, filt: tuple, starts: np.ndarray, length: int, decimation: int, native_fs: float,
                  fs: float, cfg: GateConfig, detect=None) -> tuple[dict, dict, dict, Beats]:
    """Gate measures of every window of a case: ``(ppg, ecg, pair, beats)``.

    ``raw = (ppg, ecg)`` at ``native_fs`` (NaN = missing), ``filt = (ppg, ecg)`` band-passed
    at ``fs = native_fs / decimation``; window ``i`` covers ``filt[c][starts[i]:starts[i] + length]``
    and ``raw[c][starts[i] * decimation:(starts[i] + length) * decimation]``.
    ``ppg`` and ``ecg`` map :data:`CHANNEL_MEASURES` to ``[n]`` arrays, ``pair``
    maps :data:`PAIR_MEASURES`; ``beats[i] = (ppg_peaks, ecg_peaks)`` of window ``i``.
    ``detect``: None for the gate's own detector, run on all windows at once;
    or a one-window detector with :func:`detect_pair`'s signature (another one can
    be measured against the gate's, see ``benchmarks/bench_detectors.py``).
    The ECG's polarity is chosen per window: a lead whose deepest deflections
    point down (an inverted lead, or one where S outweighs R) is searched for
    negative peaks, so its rate comes out right.
    """
    n = len(starts)
    chans = []
    for c in range(2):
        m = raw_measures(raw[c], starts * decimation, length * decimation, native_fs, cfg)
        fw = _windows(filt[c], starts, length)
        lo, med, hi = np.percentile(fw, [1, 50, 99], axis=1) if n else (np.zeros(0),) * 3
        m["amp"] = hi - lo
        chans.append((m, fw, med - lo > hi - med))
    (ppg, ppg_w, _), (ecg, ecg_w, inverted) = chans
    hr_max = cfg.hr_range[1]
    if detect is None:
        pk = detect_beats_batch(ppg_w, fs, hr_max, ppg["amp"])
        rk = detect_beats_batch(ecg_w, fs, hr_max, ecg["amp"], flip=inverted)
    else:
        found = [detect(ppg_w[i], ecg_w[i], fs, hr_max, ppg["amp"][i], ecg["amp"][i], inverted[i]) for i in range(n)]
        pk, rk = _ragged([f[0] for f in found]), _ragged([f[1] for f in found])
    for m, (win, idx) in ((ppg, pk), (ecg, rk)):
        m["beats"], m["hr"], m["ibi_cv"], m["gap_ratio"] = beat_measures_batch(win, idx, n, length, fs)
    pair = {"ecg_inverted": inverted, "hr_diff": np.abs(ppg["hr"] - ecg["hr"])}  # NaN if either has no HR
    pair["beat_match"], pair["pat_s"], pair["pat_iqr_s"] = correspondence_batch(*rk, *pk, n, fs, length)
    return ppg, ecg, pair, Beats(*pk, *rk, n)


class Beats:
    """The detected beats of a case's windows, ragged: ``beats[i] = (ppg_peaks, ecg_peaks)`` of window ``i``."""

    def __init__(self, pwin: np.ndarray, p: np.ndarray, rwin: np.ndarray, r: np.ndarray, n: int):
        self.p, self.r = p, r
        self.poff, self.roff = _offsets(pwin, n), _offsets(rwin, n)

    def __len__(self) -> int:
        return len(self.poff) - 1

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.p[self.poff[i]:self.poff[i + 1]], self.r[self.roff[i]:self.roff[i + 1]]


CHANNEL_CRITERIA = CRITERIA[:6]  # judged on each channel alone: a window fails if either channel does


def channel_fails(m: dict, amp_range: tuple, cfg: GateConfig) -> dict:
    """Which of :data:`CHANNEL_CRITERIA` each window of one channel fails: ``{criterion: [n] bool}``.

    ``m`` maps :data:`CHANNEL_MEASURES` to ``[n]`` arrays; ``amp_range`` is the channel's
    (``cfg.ppg_amp_range`` or ``cfg.ecg_amp_range``). A measure that cannot be taken
    (NaN: too few beats) fails its criterion; a NaN raw measure (no sample) is left to ``missing``.
    """
    def a(x):
        return np.asarray(x, dtype=float)

    with np.errstate(invalid="ignore"):
        return {
            "missing": a(m["missing"]) > cfg.max_missing_frac,
            "flat": a(m["flat_s"]) > cfg.max_flat_s,
            "clipping": a(m["clip"]) > cfg.max_clip_frac,
            "amplitude": ~((amp_range[0] <= a(m["amp"])) & (a(m["amp"]) <= amp_range[1])),
            "heart_rate": (a(m["beats"]) < cfg.min_beats) | ~((cfg.hr_range[0] <= a(m["hr"])) & (a(m["hr"]) <= cfg.hr_range[1]))
            | ~(a(m["ibi_cv"]) <= cfg.max_ibi_cv),
            "beat_coverage": ~(a(m["gap_ratio"]) <= cfg.max_gap_ratio),
        }


def judge(ppg: dict, ecg: dict, pair: dict, cfg: GateConfig) -> dict:
    """Which criteria each window fails: ``{criterion: [n] bool}``.

    The channel criteria (:func:`channel_fails`) fail when either channel does; a pair
    measure that cannot be taken (NaN) fails its criterion.
    """
    p, e = channel_fails(ppg, cfg.ppg_amp_range, cfg), channel_fails(ecg, cfg.ecg_amp_range, cfg)
    fails = {c: p[c] | e[c] for c in CHANNEL_CRITERIA}
    with np.errstate(invalid="ignore"):
        fails["hr_disagreement"] = ~(np.asarray(pair["hr_diff"], float) <= cfg.max_hr_diff)
        fails["beat_correspondence"] = ~(np.asarray(pair["beat_match"], float) >= cfg.min_beat_match)
        fails["pat_stability"] = ~(np.asarray(pair["pat_iqr_s"], float) <= cfg.max_pat_iqr_s)
    return fails


def margins(ppg: dict, ecg: dict, pair: dict, cfg: GateConfig) -> dict:
    """Each criterion's worst measure over its threshold, ``{criterion: [n] float}``: above 1 fails.

    Used to show the kept windows nearest each line. NaN where the measure
    could not be taken.
    """
    def a(x):
        return np.asarray(x, dtype=float)

    def amp_ratio(m, rng):  # how far into the allowed range's edges, on a log scale folded to <= 1 inside
        with np.errstate(divide="ignore"):
            return np.maximum(rng[0] / a(m["amp"]), a(m["amp"]) / rng[1])

    tiny = 1e-12
    with np.errstate(invalid="ignore"):
        return {
            "missing": np.maximum(a(ppg["missing"]), a(ecg["missing"])) / max(cfg.max_missing_frac, tiny),
            "flat": np.maximum(a(ppg["flat_s"]), a(ecg["flat_s"])) / cfg.max_flat_s,
            "clipping": np.maximum(a(ppg["clip"]), a(ecg["clip"])) / cfg.max_clip_frac,
            "amplitude": np.maximum(amp_ratio(ppg, cfg.ppg_amp_range), amp_ratio(ecg, cfg.ecg_amp_range)),
            "heart_rate": np.maximum(a(ppg["ibi_cv"]), a(ecg["ibi_cv"])) / cfg.max_ibi_cv,
            "beat_coverage": np.maximum(a(ppg["gap_ratio"]), a(ecg["gap_ratio"])) / cfg.max_gap_ratio,
            "hr_disagreement": a(pair["hr_diff"]) / cfg.max_hr_diff,
            "beat_correspondence": (1.0 - a(pair["beat_match"])) / max(1.0 - cfg.min_beat_match, tiny),
            "pat_stability": a(pair["pat_iqr_s"]) / cfg.max_pat_iqr_s,
        }


def kept_mask(fails: dict, n: int) -> np.ndarray:
    """``[n]`` bool: windows that fail no criterion."""
    return ~np.any(np.stack([fails[c] for c in CRITERIA]), axis=0) if n else np.zeros(0, bool)


def score_against_faults(starts_s, kept, faults, window_s: float, min_overlap_s: float = 0.5) -> dict:
    """Count gate decisions against a fault map (the demo generator's ground truth).

    A window is *faulted* when an unusable fault covers at least ``min_overlap_s``
    of it, *clean* when no unusable fault touches it, and *borderline* otherwise
    (a fault grazing its edge); borderline windows are counted but not scored.
    Correctable faults (baseline wander, mains hum, an inverted ECG lead) do not
    make a window faulted.
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
