"""Read one case's PPG, ECG and numeric tracks from a ``.vital`` file at the native rate.

``vitaldb``'s own ``to_numpy``/``load_case`` resample by index picking with no
anti-aliasing; here each waveform track is read at its own sampling rate and
resampling is left to :mod:`vitalssl.dsp`. The file is read by
:mod:`vitalssl.data.vitalfile`: one decompression pass that also checks the file
is whole, with the same samples as ``vitaldb``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .vitalfile import Track, VitalFileError, read_vital


class CaseError(Exception):
    """A case that cannot be used; ``reason`` is a short code counted in the quality report."""

    def __init__(self, caseid: int, reason: str, detail: str):
        super().__init__(f"case {caseid}: {reason}: {detail}")
        self.caseid, self.reason, self.detail = caseid, reason, detail

    def __reduce__(self):
        # the default pickles ``self.args`` (the one message string) and calls ``__init__`` with it,
        # which fails in the parent when the error comes back from a worker process
        return (type(self), (self.caseid, self.reason, self.detail))


@dataclass
class CaseSignals:
    caseid: int
    srate: float                # Hz, the native rate of both waveforms
    ppg: np.ndarray             # [L] float32 as stored (vitaldb's samples), NaN where no sample was recorded
    ecg: np.ndarray             # [L] float32
    labels: dict                # label name -> [seconds] float64 at 1 Hz (NaN where absent)
    missing_labels: tuple = ()  # label names whose track is not in the file (their values are all NaN)


def _no_finite_sample(caseid: int, trk: Track, name: str) -> CaseError:
    """Why a waveform track gave no finite sample: values out of ``vitaldb``'s range, or none recorded."""
    raw = trk.recorded()
    big = np.isinf(raw) | (raw > 4e9)
    if big.any():
        return CaseError(caseid, "out_of_range", f"track {name!r}: {int(big.sum())} of {raw.size} recorded samples "
                         f"are infinite or above 4e9 (largest {np.max(np.abs(raw[big])):.3g}), which vitaldb reads "
                         f"as missing; no finite sample is left")
    if raw.size == 0:
        return CaseError(caseid, "all_nan", f"track {name!r} has no recorded sample")
    return CaseError(caseid, "all_nan", f"track {name!r}: all {raw.size} recorded samples are NaN")


def _samples(vf, caseid: int, path: Path, name: str, interval: float) -> np.ndarray:
    try:
        return vf.get_track_samples(name, interval)
    except (ValueError, OverflowError) as e:  # a record time that is not finite, or one vitaldb cannot place
        raise CaseError(caseid, "unreadable", f"{path.name}: the records of track {name!r} cannot be laid out "
                        f"in time ({type(e).__name__}: {e})") from e


TRACK_TYPES = {1: "a waveform", 2: "a numeric", 5: "a text"}
# a case with a stretch this long between two of its records (or its header's start or end) has a time that is
# off (a clock jump, a corrupt stamp): laying its samples out would allocate for the whole span
MAX_GAP_H = 24.0


def _all_tracks(path: Path) -> str:
    """Every track name in the file, for a message about a track that was not found."""
    try:
        return ", ".join(sorted(read_vital(path, None).trks)) or "no tracks"
    except VitalFileError:
        return "?"


def _track(vf, caseid: int, path: Path, name: str, kind: int, param: str) -> Track | None:
    """The track ``name``, checked to be of ``kind``; None if absent.

    ``name`` is a full ``device/track`` name, or a track name without its device
    (``PLETH``), or the end of one, as ``vitaldb`` matches them; a short name that
    fits several tracks (``HR``: ``Solar8000/HR`` and ``Solar8000/PLETH_HR``) takes the
    one named exactly so, and is refused when that leaves more than one.
    """
    trk = vf.trks.get(name)
    if trk is None:
        for fits in (lambda t: t.split("/")[-1] == name, lambda t: t.endswith(name)):
            found = [t for t in vf.trks if fits(t)]
            if len(found) > 1:
                raise CaseError(caseid, "ambiguous_track", f"{name!r} fits tracks {', '.join(found)} in {path.name}; "
                                f"give the device too (param {param})")
            if found:
                trk = vf.trks[found[0]]
                break
    if trk is not None and trk.type != kind:
        raise CaseError(caseid, "wrong_track_type", f"track {trk.dtname!r} in {path.name} is "
                        f"{TRACK_TYPES.get(trk.type, f'a type-{trk.type}')} track, not {TRACK_TYPES[kind]} one "
                        f"(param {param})")
    return trk


def _check_time_gaps(vf, caseid: int, path: Path) -> None:
    """Refuse a case with more than ``MAX_GAP_H`` between consecutive records of its tracks (or its start or end),
    before its samples are laid out over the whole span."""
    times = [np.array([vf.dtstart, vf.dtend])]
    for t in vf.trks.values():
        if len(t.dt):
            times.append(t.dt)
            if t.type == 1 and t.srate > 0:
                times.append(t.dt + np.asarray(t.n) / t.srate)
    times = np.sort(np.concatenate(times))
    gaps = np.diff(times)
    if len(gaps) and gaps.max() > MAX_GAP_H * 3600:
        k = int(np.argmax(gaps))
        raise CaseError(caseid, "bad_time_span", f"{path.name}: nothing is recorded for {gaps[k] / 3600:.1f} h, "
                        f"from time {times[k]:.0f} to {times[k + 1]:.0f} (the records span "
                        f"{(times[-1] - times[0]) / 3600:.1f} h); a record time or the file's start or end is likely "
                        f"wrong (over {MAX_GAP_H:g} h without a record)")


def read_case(path: Path, caseid: int, ppg_track: str, ecg_track: str, label_tracks: dict,
              native_srate: float) -> CaseSignals:
    """Read a case; raise :class:`CaseError` naming the case for every way it can be unusable.

    Tracks are found as ``vitaldb`` finds them: by their full ``device/name``, or else by
    the end of it (``PLETH`` finds ``SNUADC/PLETH``).
    """
    path = Path(path)
    if not path.exists():
        raise CaseError(caseid, "unknown_case", f"no file {path}")
    names = [ppg_track, ecg_track, *label_tracks.values()]
    try:
        vf = read_vital(path, names)
    except VitalFileError as e:
        raise CaseError(caseid, e.reason, e.detail) from e
    if not vf.trks or vf.dtend <= vf.dtstart:
        raise CaseError(caseid, "unreadable", f"{path.name} is not a .vital file or holds no records")
    _check_time_gaps(vf, caseid, path)
    waves = []
    for name, param in ((ppg_track, "windows.ppg_track"), (ecg_track, "windows.ecg_track")):
        trk = _track(vf, caseid, path, name, 1, param)
        if trk is None:
            raise CaseError(caseid, "missing_track", f"track {name!r} not in {path.name} "
                            f"(the file has: {_all_tracks(path)}; param {param})")
        if abs(trk.srate - native_srate) > 1e-6:
            raise CaseError(caseid, "wrong_srate", f"track {trk.dtname!r} is at {trk.srate:g} Hz, "
                            f"expected {native_srate:g} Hz (param windows.native_srate)")
        x = _samples(vf, caseid, path, trk.dtname, 1.0 / trk.srate)
        if not np.isfinite(x).any():
            raise _no_finite_sample(caseid, trk, trk.dtname)
        waves.append(x)
    n = min(len(waves[0]), len(waves[1]))
    labels, missing = {}, []
    for key, name in label_tracks.items():
        trk = _track(vf, caseid, path, name, 2, f"windows.label_tracks.{key}")
        if trk is not None:
            labels[key] = np.asarray(_samples(vf, caseid, path, trk.dtname, 1.0), dtype=np.float64)
        else:
            labels[key] = np.full(int(np.ceil(vf.dtend - vf.dtstart)), np.nan)
            missing.append(key)
    return CaseSignals(caseid, float(native_srate), waves[0][:n], waves[1][:n], labels, tuple(missing))
