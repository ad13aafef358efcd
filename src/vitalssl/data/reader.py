"""Read one case's PPG, ECG and numeric tracks from a ``.vital`` file at the native rate.

``vitaldb``'s own ``to_numpy``/``load_case`` resample by index picking with no
anti-aliasing; here each waveform track is read at its own sampling rate and
resampling is left to :mod:`vitalssl.dsp`.
"""

from __future__ import annotations

import struct
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


class _Framing:
    """Walks the framing of a decompressed ``.vital`` body as it streams past.

    The body is ``VITA``, a 4-byte version, a 2-byte header length and the header,
    then packets of a 1-byte type, a 4-byte payload length and the payload. The body
    is whole when the last packet ends exactly at the end of the stream.
    """

    def __init__(self):
        self.buf = bytearray()   # the start of a packet head split across chunks
        self.skip = 0            # payload bytes still to pass
        self.in_header = True
        self.packets = 0

    def feed(self, data: bytes) -> None:
        mv, i, n = memoryview(data), 0, len(data)
        while True:
            if self.skip:
                take = min(self.skip, n - i)
                self.skip -= take
                i += take
                if self.skip:
                    return
            need = 10 if self.in_header else 5
            if self.buf or n - i < need:
                take = min(need - len(self.buf), n - i)
                self.buf += mv[i:i + take]
                i += take
                if len(self.buf) < need:
                    return
                head, self.buf = bytes(self.buf), bytearray()
            else:
                head = mv[i:i + need]
                i += need
            if self.in_header:
                if bytes(head[:4]) != b"VITA":
                    raise ValueError("no VITA signature")
                self.skip, self.in_header = struct.unpack_from("<H", head, 8)[0], False
            else:
                self.skip = struct.unpack_from("<I", head, 1)[0]
                self.packets += 1

    @property
    def whole(self) -> bool:
        return not self.in_header and self.skip == 0 and not self.buf


def _check_stream(path: Path, caseid: int) -> None:
    """Decompress the whole file once and walk its packets: a corrupt, cut or unreadable file raises here.

    ``vitaldb``'s parser stops quietly at a truncated gzip stream or body and returns
    tracks with fewer (or no) records, which would pass as a case with missing data.
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip container
    body = _Framing()
    try:
        with open(path, "rb") as f:
            while not d.eof:
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                body.feed(d.decompress(chunk, 1 << 20))
                while d.unconsumed_tail:  # bounded output: memory stays flat
                    body.feed(d.decompress(d.unconsumed_tail, 1 << 20))
    except OSError as e:  # a directory, no permission, an I/O error: this case fails, not the split
        raise CaseError(caseid, "unreadable", f"{path}: {type(e).__name__}: {e.strerror or e}") from e
    except zlib.error as e:
        raise CaseError(caseid, "unreadable", f"{path.name} is not a valid gzip stream (corrupt .vital file): "
                        f"{e}") from e
    except ValueError as e:
        raise CaseError(caseid, "unreadable", f"{path.name} is not a .vital file ({e})") from e
    if not d.eof:
        raise CaseError(caseid, "truncated", f"{path.name} ends before its gzip stream does (the file was cut "
                        f"short)")
    if not body.whole:
        where = "its file header" if body.in_header else f"a packet, after {body.packets} whole packet(s)"
        raise CaseError(caseid, "truncated", f"{path.name}: the .vital body ends inside {where} (the file was "
                        f"cut short before it was compressed)")


def _no_finite_sample(caseid: int, trk, name: str) -> CaseError:
    """Why a waveform track gave no finite sample: values out of ``vitaldb``'s range, or none recorded."""
    vals = [np.asarray(r["val"], np.float64).ravel() for r in trk.recs if "val" in r]
    raw = np.concatenate(vals) if vals else np.zeros(0)
    if trk.fmt > 2:  # integer formats are stored scaled; 1 and 2 are float and double
        raw = raw * trk.gain + trk.offset
    big = np.isinf(raw) | (raw > 4e9)
    if big.any():
        return CaseError(caseid, "out_of_range", f"track {name!r}: {int(big.sum())} of {raw.size} recorded samples "
                         f"are infinite or above 4e9 (largest {np.max(np.abs(raw[big])):.3g}), which vitaldb reads "
                         f"as missing; no finite sample is left")
    if raw.size == 0:
        return CaseError(caseid, "all_nan", f"track {name!r} has no recorded sample")
    return CaseError(caseid, "all_nan", f"track {name!r}: all {raw.size} recorded samples are NaN")


def read_case(path: Path, caseid: int, ppg_track: str, ecg_track: str, label_tracks: dict,
              native_srate: float) -> CaseSignals:
    """Read a case; raise :class:`CaseError` naming the case for every way it can be unusable."""
    path = Path(path)
    if not path.exists():
        raise CaseError(caseid, "unknown_case", f"no file {path}")
    _check_stream(path, caseid)
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
            raise _no_finite_sample(caseid, trk, name)
        waves.append(x)
    n = min(len(waves[0]), len(waves[1]))
    labels = {}
    for key, name in label_tracks.items():
        if name in vf.trks:
            labels[key] = np.asarray(vf.get_track_samples(name, 1.0), dtype=np.float64)
        else:
            labels[key] = np.full(int(np.ceil(vf.dtend - vf.dtstart)), np.nan)
    return CaseSignals(caseid, float(native_srate), waves[0][:n], waves[1][:n], labels)
