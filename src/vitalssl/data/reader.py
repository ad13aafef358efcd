"""Read one case's PPG, ECG and numeric tracks from a ``.vital`` file at the native rate.

``vitaldb``'s own ``to_numpy``/``load_case`` resample by index picking with no
anti-aliasing; here each waveform track is read at its own sampling rate and
resampling is left to :mod:`vitalssl.dsp`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import vitaldb


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
    ppg: np.ndarray             # [L] float64, NaN where no sample was recorded
    ecg: np.ndarray             # [L] float64
    labels: dict                # label name -> [seconds] float64 at 1 Hz (NaN where absent)


def _check_gzip_stream(path: Path, caseid: int) -> None:
    """Decompress the whole file once: a truncated or corrupt stream raises here.

    ``vitaldb``'s parser stops quietly at a truncated stream and returns tracks
    with no records, which would pass as a case with no data.
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip container
    try:
        with open(path, "rb") as f:
            while not d.eof:
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                d.decompress(chunk, 1 << 20)
                while d.unconsumed_tail:  # bounded output: memory stays flat
                    d.decompress(d.unconsumed_tail, 1 << 20)
    except zlib.error as e:
        raise CaseError(caseid, "unreadable", f"{path.name} is not a valid gzip stream (corrupt .vital file): "
                        f"{e}") from e
    if not d.eof:
        raise CaseError(caseid, "unreadable", f"{path.name} ends before its gzip stream does (truncated .vital file)")


def read_case(path: Path, caseid: int, ppg_track: str, ecg_track: str, label_tracks: dict,
              native_srate: float) -> CaseSignals:
    """Read a case; raise :class:`CaseError` naming the case for every way it can be unusable."""
    path = Path(path)
    if not path.exists():
        raise CaseError(caseid, "unknown_case", f"no file {path}")
    _check_gzip_stream(path, caseid)
    names = [ppg_track, ecg_track, *label_tracks.values()]
    try:
        vf = vitaldb.VitalFile(str(path), track_names=names)
    except Exception as e:  # the vitaldb parser raises many types (EOFError, OSError, struct.error, ...)
        raise CaseError(caseid, "unreadable", f"{path.name}: {type(e).__name__}: {e}") from e
    if not vf.trks or vf.dtend <= vf.dtstart:
        raise CaseError(caseid, "unreadable", f"{path.name} is not a .vital file or holds no records")
    waves = []
    for name in (ppg_track, ecg_track):
        trk = vf.trks.get(name)
        if trk is None:
            raise CaseError(caseid, "missing_track", f"track {name!r} not in {path.name} "
                            f"(has: {', '.join(sorted(vf.trks))})")
        if trk.type != 1 or abs(trk.srate - native_srate) > 1e-6:
            raise CaseError(caseid, "wrong_srate", f"track {name!r} is at {trk.srate:g} Hz, "
                            f"expected {native_srate:g} Hz (param windows.native_srate)")
        x = np.asarray(vf.get_track_samples(name, 1.0 / trk.srate), dtype=np.float64)
        if not np.isfinite(x).any():
            raise CaseError(caseid, "all_nan", f"track {name!r} has no finite sample")
        waves.append(x)
    n = min(len(waves[0]), len(waves[1]))
    labels = {}
    for key, name in label_tracks.items():
        if name in vf.trks:
            labels[key] = np.asarray(vf.get_track_samples(name, 1.0), dtype=np.float64)
        else:
            labels[key] = np.full(int(np.ceil(vf.dtend - vf.dtstart)), np.nan)
    return CaseSignals(caseid, float(native_srate), waves[0][:n], waves[1][:n], labels)
