"""Beat detection on band-passed PPG and ECG windows, shared by the quality gate and the evaluation's features.

Beat indices are samples from the window's start.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

REL_PROMINENCE = 0.3  # a beat stands out by this fraction of the window's robust range
REL_TO_BEATS = 0.5     # a wave nearer the beat before it and less than this fraction of its height is not a beat


def _typical(prominence: np.ndarray, win: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per candidate peak: False for a secondary wave (a PPG's dicrotic wave, an ECG's T wave).

    Such a wave can pass the range threshold on its own: a real PPG's dicrotic wave
    reaches a third of the pulse and more. It follows a beat, nearer to it than to the
    next beat, and stands less than ``REL_TO_BEATS`` as high as that beat; a beat that is
    weaker than the one before it lies about midway between its neighbours.
    ``(win, idx)`` are sorted (candidates grouped by window, then by sample)."""
    if len(win) < 2:
        return np.ones(len(win), bool)
    same = win[1:] == win[:-1]
    gap = np.where(same, np.diff(idx).astype(np.float64), np.inf)  # to the next candidate of the same window
    before, after = np.r_[np.inf, gap], np.r_[gap, np.inf]
    lower = np.r_[False, same & (prominence[1:] < REL_TO_BEATS * prominence[:-1])]
    return ~(lower & (before < after))


def detect_beats(x: np.ndarray, fs: float, hr_max: float, robust_range: float) -> np.ndarray:
    """Indices of beat peaks in a band-passed window.

    A peak must be at least ``60 / hr_max`` s from the previous one and stand out
    by ``REL_PROMINENCE`` of the window's robust range (1st-99th percentile), and
    must not be a secondary wave of the beat before it (:func:`_typical`).
    :func:`detect_beats_batch` finds the same peaks in every window of a case at once.
    """
    if not robust_range > 0:
        return np.zeros(0, dtype=np.int64)
    peaks, props = signal.find_peaks(x, distance=max(1, int(fs * 60.0 / hr_max)),
                                     prominence=REL_PROMINENCE * robust_range)
    return peaks[_typical(props["prominences"], np.zeros(len(peaks), np.int64), peaks)]


def detect_beats_batch(w: np.ndarray, fs: float, hr_max: float, robust_range: np.ndarray,
                       flip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`detect_beats` on every row of ``w`` [n, L] (negated where ``flip``), in two scipy calls.

    Returns ``(win, idx)``: the window and the sample (from the window's start) of
    each peak, ordered by window, then sample. The rows are laid end to end with
    a run of ``+inf`` between them. ``find_peaks`` then sees each row as it would
    alone: no row sample is a peak at a row's edge (its neighbour beyond is
    higher), the runs are peaks of their own far enough from every row sample
    not to suppress one (they are dropped), no two rows' peaks are within the
    minimum distance of each other, and the search for a peak's prominence bases
    stops at the row's edges. Prominences are taken only for the rows' peaks, and
    compared with each row's own threshold, so the result equals row-by-row calls,
    except where two peaks closer than the minimum distance have exactly equal
    heights: scipy keeps one of them in an order it leaves unspecified (a
    band-passed float64 signal practically never ties).
    """
    n, length = w.shape
    distance = max(1, int(fs * 60.0 / hr_max))
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    stride = length + 2 * distance + 4  # an inf run's middle lies over ``distance`` samples from any row sample
    rows = np.full((n, stride), np.inf)
    if flip is None:
        rows[:, :length] = w
    else:
        np.multiply(w, np.where(flip, -1.0, 1.0)[:, None], out=rows[:, :length])
    flat = rows.ravel()
    peaks, _ = signal.find_peaks(flat, distance=distance)
    win, idx = np.divmod(peaks, stride)
    with np.errstate(invalid="ignore"):
        real = (idx < length) & (robust_range[win] > 0)
    peaks, win, idx = peaks[real], win[real], idx[real]
    prominence = signal.peak_prominences(flat, peaks)[0]
    keep = prominence >= REL_PROMINENCE * robust_range[win]
    win, idx, prominence = win[keep], idx[keep], prominence[keep]
    keep = _typical(prominence, win, idx)
    return win[keep], idx[keep]
