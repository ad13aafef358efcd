"""Lay a track's records out on a time grid, as ``vitaldb==1.7.2``'s ``VitalFile.get_track_samples`` does.

The same arithmetic in the same order (float64 times, float32 samples, gain and offset applied
in float32), so the arrays are bit-identical to vitaldb's, but vectorised: vitaldb loops over
the records in Python. ``trk`` is a :class:`vitalssl.data.vitalfile.Track` that has been read
(``dt`` [R] s, ``n`` [R] samples per record, ``val`` the values concatenated).
"""

from __future__ import annotations

import numpy as np

WAVE, NUMBER, TEXT = 1, 2, 5  # track types of the .vital format


def _first_bad(x: np.ndarray) -> None:
    """Raise as Python's ``int()`` does on the first NaN or infinite value (vitaldb converts each record's index)."""
    bad = ~np.isfinite(x)
    if bad.any():
        v = x[np.argmax(bad)]
        if np.isnan(v):
            raise ValueError("cannot convert float NaN to integer")
        raise OverflowError("cannot convert float infinity to integer")


def at_times(trk, dtstart: float, interval: float, nret: int) -> np.ndarray:
    """Numbers (float32) or text (object) at ``interval`` s: each record in its clamped slot, the last one winning."""
    ret = np.full(nret, np.nan, dtype=np.float32 if trk.type == NUMBER else object)
    if len(trk.dt) == 0:
        return ret
    x = (trk.dt - dtstart) / interval
    _first_bad(x)
    idx = np.clip(np.trunc(x), 0, nret - 1).astype(np.int64)
    slots, first_from_end = np.unique(idx[::-1], return_index=True)
    last = len(idx) - 1 - first_from_end
    if trk.type == NUMBER:  # vitaldb stores a Python float or int: to float32 through float64, as numpy does
        ret[slots] = trk.val[last].astype(np.float64).astype(np.float32)
    else:
        ret[slots] = np.array(trk.val, dtype=object)[last]
    return ret


def wave_samples(trk, dtstart: float, dtend: float, interval: float, nret: int) -> np.ndarray:
    """A wave track's samples, float32, NaN where none was recorded or the value is inf or above 4e9."""
    srate = trk.srate
    nsamp = int(np.ceil((dtend - dtstart) * srate))
    ret = np.full(nsamp, np.nan, dtype=np.float32)
    if len(trk.dt):
        s = np.ceil((trk.dt - dtstart) * srate)  # each record's first sample
        _first_bad(s)
        a = np.concatenate([[0], np.cumsum(trk.n)])  # record r holds val[a[r]:a[r + 1]]
        if s.min() >= 0 and (s + trk.n).max() <= nsamp:
            # every record inside: copy each run of abutting records at once, in file order (later ones win)
            s = s.astype(np.int64)
            cut = np.flatnonzero(s[1:] != s[:-1] + trk.n[:-1]) + 1
            for f, g in zip(np.r_[0, cut].tolist(), np.r_[cut, len(s)].tolist()):
                ret[s[f]:s[f] + a[g] - a[f]] = trk.val[a[f]:a[g]]
        else:  # records before the start or past the end: vitaldb's clipping, record by record
            for sidx, k, a0 in zip([int(v) for v in s], trk.n.tolist(), a[:-1].tolist()):
                eidx, srec, erec = sidx + k, 0, k
                if sidx < 0:
                    srec -= sidx
                    sidx = 0
                if eidx > nsamp:
                    erec -= eidx - nsamp
                    eidx = nsamp
                ret[sidx:eidx] = trk.val[a0:a0 + k][srec:erec]
    if trk.fmt > 2:  # integer formats hold scaled values; in float32, as vitaldb computes
        ret *= trk.gain
        ret += trk.offset
    if srate != int(1 / interval + 0.5):
        ret = np.take(ret, np.linspace(0, nsamp - 1, nret).astype(np.int64))
    ret[np.isinf(ret) | (ret > 4e9)] = np.nan
    return ret
