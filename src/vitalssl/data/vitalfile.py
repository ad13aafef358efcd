"""Read a ``.vital`` file in one decompression pass, checked whole, with ``vitaldb``'s semantics.

``vitaldb.VitalFile`` reads through ``gzip.GzipFile`` and stops quietly at a cut gzip stream or a
cut body (it swallows ``EOFError``), so a damaged file would pass as a case with missing data. Here
the file is inflated once into memory and checked whole (the gzip CRC and length, that the stream
ended, that the packets end exactly at the body's end), then parsed from that buffer.

The gzip stream is inflated with python-isal (Intel ISA-L), not the stdlib ``zlib``: on a 3-h case
(37 MB file, 44 MB body) it takes 0.136 s against 0.214 s, and inflating is most of what reading a
case costs.

What is read reproduces ``vitaldb==1.7.2`` (``VitalFile.load_vital``, ``get_track_samples``) exactly,
quirks included, so :meth:`VitalFile.get_track_samples` is bit-identical to
``vitaldb.VitalFile(path, track_names=names).get_track_samples``:

- a track is selected by ``device/name``, by any suffix of it, or by ``device/*``; only the records
  of selected tracks move ``dtstart`` (down, or from 0) and ``dtend`` (up, to a wave record's end);
- the reading stops at a packet of length 0, at a packet over 1 MB in a file not marked packed, at a
  packet too short for what vitaldb reads from it (where its ``struct``/``numpy`` calls raise), and in
  a packed file after the last selected track's records;
- the records of an unselected track whose ``trkinfo`` gives their total length are skipped by that
  length (vitaldb's ``f.seek``), wherever that lands;
- record values are read in native byte order and size, as vitaldb's format codes are: formats 7
  and 8 (``l``/``L``) are 8 bytes on 64-bit Linux, though vitaldb checks for 4.

Body layout: ``VITA``, a 4-byte version, a 2-byte header length and the header (dgmt int16 at 0,
dtstart double at 10, dtend double at 18, packed flag byte at 26), then packets of a 1-byte type, a
4-byte little-endian payload length and the payload. Times are s since the Unix epoch.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from pathlib import Path

import numpy as np
from isal import isal_zlib
from numpy.lib.stride_tricks import sliding_window_view

from .vitalsamples import NUMBER, TEXT, WAVE, at_times, wave_samples

# vitaldb's FMT_TYPE_LEN: format -> (native struct/numpy code, the length vitaldb checks before reading)
FMT = {1: ("f", 4), 2: ("d", 8), 3: ("b", 1), 4: ("B", 1), 5: ("h", 2), 6: ("H", 2), 7: ("l", 4), 8: ("L", 4)}
DEVINFO, TRKINFO, REC, CMD, RAW = 9, 0, 1, 6, 10   # packet types vitaldb reads
UNPACKED_MAX_PACKET = 1_000_000         # bytes: vitaldb stops at a bigger packet in a file not marked packed
GZIP_MAGIC = b"\x1f\x8b"

_head = struct.Struct("<BI").unpack_from          # packet: type, payload length
_head_rec = struct.Struct("<BIHdH").unpack_from   # the same and, if it is a record, infolen, dt, tid
_u32 = struct.Struct("<I").unpack_from


class VitalFileError(Exception):
    """A file that is not a whole ``.vital`` file; ``reason`` is ``unreadable`` or ``truncated``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class _Stop(Exception):
    """Where vitaldb's parser raises inside its read loop, which ends the reading."""


class Track:
    """A selected track's ``trkinfo`` and its records, in file order.

    Once read: ``dt`` [R] float64 record times; ``n`` [R] int64 samples per record (1 for numbers);
    ``val`` the values, concatenated, in the file's format (for text tracks a list of str).
    """

    def __init__(self, dtname: str, type: int, fmt: int, srate: float, gain: float, offset: float):
        self.dtname, self.type, self.fmt = dtname, type, fmt
        self.srate, self.gain, self.offset = srate, gain, offset
        self.dt, self.n, self.val = [], [], []  # while reading: times, sample counts, value offsets in the body

    def _finish(self, body: bytes) -> None:
        pos, self.dt = self.val, np.asarray(self.dt, np.float64)
        if self.type == TEXT:
            return
        if self.type not in (WAVE, NUMBER):  # vitaldb keeps no record of other types
            self.val, self.n = np.zeros(0), np.zeros(0, np.int64)
            return
        dtype = np.dtype(FMT[self.fmt][0])
        if self.type == NUMBER:
            self.n = np.ones(len(pos), np.int64)
            u8 = np.frombuffer(body, np.uint8)
            self.val = u8[np.asarray(pos, np.int64)[:, None] + np.arange(dtype.itemsize)].view(dtype)[:, 0]
            return
        self.n = np.asarray(self.n, np.int64)
        if len(pos) == 1:
            self.val = np.frombuffer(body, dtype, int(self.n[0]), pos[0])
        elif len(pos) and self.n.min() == self.n.max() > 0:  # a recorder's 1-s records: one gather of equal rows
            rows = sliding_window_view(np.frombuffer(body, np.uint8), int(self.n[0]) * dtype.itemsize)
            self.val = rows[np.asarray(pos, np.int64)].view(dtype).reshape(-1)
        else:
            mv, size = memoryview(body), dtype.itemsize
            self.val = np.frombuffer(b"".join([mv[p:p + k * size] for p, k in zip(pos, self.n.tolist())]), dtype)

    def recorded(self) -> np.ndarray:
        """All recorded samples (or values) as float64, with gain and offset applied for integer formats."""
        raw = np.asarray(self.val, np.float64)
        return raw * self.gain + self.offset if self.fmt > 2 else raw


class VitalFile:
    """The selected tracks of one file: ``trks`` (dtname -> :class:`Track`), ``dtstart``, ``dtend``, ``dgmt``."""

    def __init__(self):
        self.trks: dict[str, Track] = {}
        self.dtstart = self.dtend = 0.0
        self.dgmt, self.packed = 0, False

    def find_track(self, dtname: str) -> Track | None:
        """The track named ``dtname``, or else the first whose name ends with it (vitaldb's ``find_track``)."""
        if dtname in self.trks:
            return self.trks[dtname]
        return next((t for name, t in self.trks.items() if name.endswith(dtname)), None)

    def get_track_samples(self, dtname: str, interval: float):
        """``[ceil((dtend - dtstart) / interval)]`` samples of a track, as vitaldb's ``get_track_samples``.

        Waves come at their own rate (``[ceil((dtend - dtstart) * srate)]`` float32) unless ``interval``
        is not ``1 / srate`` rounded, when they are picked down to the interval's grid; numbers are
        float32 and text is an object array, each record in the slot ``int((dt - dtstart) / interval)``
        (clamped), a later record winning. NaN where nothing was recorded.
        """
        if self.dtend <= self.dtstart:
            return []
        nret = int(np.ceil((self.dtend - self.dtstart) / interval))
        trk = self.find_track(dtname)
        if trk is None:
            return np.full(nret, np.nan)
        if trk.type in (NUMBER, TEXT):
            return at_times(trk, self.dtstart, interval, nret)
        if trk.type == WAVE:
            return wave_samples(trk, self.dtstart, self.dtend, interval, nret)
        return None


def read_vital(path: Path, track_names: list[str] | None) -> VitalFile:
    """Read the tracks selected by ``track_names`` (None: all); raise :class:`VitalFileError` if the file is not whole."""
    path = Path(path)
    body, first = _checked_body(path)
    vf, resume = _parse(body, track_names)
    end = _walk(body, resume)
    if end != len(body):
        whole = _count_packets(body, first)
        raise _cut(path, f"a packet, after {whole} whole packet(s)")
    for trk in vf.trks.values():
        trk._finish(body)
    return vf


def _checked_body(path: Path) -> tuple[bytes, int]:
    """The inflated body of a file whose gzip stream ended and whose header is whole; the first packet's offset."""
    body, ended = _inflate(path)
    if body[:4] != b"VITA"[:len(body)]:
        raise VitalFileError("unreadable", f"{path.name} is not a .vital file (no VITA signature)")
    if not ended:
        raise VitalFileError("truncated", f"{path.name} ends before its gzip stream does (the file was cut short)")
    first = 10 + struct.unpack_from("<H", body, 8)[0] if len(body) >= 10 else len(body) + 1
    if first > len(body):
        raise _cut(path, "its file header")
    if first - 10 < 2:  # vitaldb's struct read of the time zone raises
        raise VitalFileError("unreadable", f"{path.name} is not a .vital file (its header is {first - 10} byte(s), "
                             f"too short to hold the time zone)")
    return body, first


def file_tracks(path: Path) -> list[str]:
    """Check that a file is whole as :func:`read_vital` does (gzip stream ended, header, packets ending exactly at
    the body's end) and list its tracks' ``device/name``, in file order, without reading a record.

    Raise :class:`VitalFileError` otherwise. A track whose ``trkinfo`` vitaldb would not read is left out.
    """
    path = Path(path)
    body, pos = _checked_body(path)
    n, devices, names = len(body), {}, []
    while pos + 5 <= n:
        ptype, plen = _head(body, pos)
        start, pos = pos + 5, pos + 5 + plen
        if pos > n or ptype not in (DEVINFO, TRKINFO):
            continue
        try:
            if ptype == DEVINFO:
                did, name = _devinfo(body[start:pos])
                devices[did] = name
            elif (info := _trkinfo(body[start:pos], plen, None, devices)) is not None:
                names.append(info[2].dtname)
        except struct.error:
            continue
    if pos != n:
        raise _cut(path, f"a packet, after {_count_packets(body, 10 + struct.unpack_from('<H', body, 8)[0])} whole "
                   f"packet(s)")
    return names


def list_tracks(path: Path) -> list[str]:
    """The ``device/name`` of every track a ``.vital`` file declares, in file order, as
    ``read_vital(path, None).trks`` names them, without reading any sample.

    Only the device and track-info packets are parsed; records are stepped over by their length.
    The walk stops where vitaldb's does (a packet of length 0, a packet over 1 MB in a file not
    marked packed, a device or track packet too short to read).
    """
    path = Path(path)
    body, pos = _checked_body(path)
    n, headerlen = len(body), pos - 10
    packed = headerlen >= 27 and body[10 + 26] == 1
    names, did_dname = {}, {}
    while pos + 5 <= n:
        ptype, plen = _head(body, pos)
        start, pos = pos + 5, pos + 5 + plen
        if (plen > UNPACKED_MAX_PACKET and not packed) or min(pos, n) == start:
            break
        try:
            if ptype == DEVINFO:
                did, name = _devinfo(body[start:pos])
                did_dname[did] = name
            elif ptype == TRKINFO and (info := _trkinfo(body[start:pos], plen, None, did_dname)) is not None:
                names[info[2].dtname] = None
        except struct.error:
            break
    return list(names)


def _cut(path: Path, where: str) -> VitalFileError:
    return VitalFileError("truncated", f"{path.name}: the .vital body ends inside {where} (the file was cut short "
                          f"before it was compressed)")


def _inflate(path: Path) -> tuple[bytes, bool]:
    """The whole decompressed body, and whether the gzip stream ended (CRC and length checked).

    Members follow one another and zero padding after the last is allowed, as ``gzip.GzipFile`` reads them.
    """
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise VitalFileError("unreadable", f"{path.name} is empty (0 bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:  # no copy of the compressed file
                if m[:2] != GZIP_MAGIC[:len(m)]:  # isal only judges a header once it has all 10 bytes
                    raise VitalFileError("unreadable", f"{path.name} is not a valid gzip stream (corrupt .vital "
                                         f"file): it does not start with the gzip magic bytes 1f 8b")
                d = isal_zlib.decompressobj(wbits=16 + isal_zlib.MAX_WBITS)
                parts = [d.decompress(m)]
            while d.eof and (rest := d.unused_data.lstrip(b"\0")):
                if not rest.startswith(GZIP_MAGIC):
                    raise VitalFileError("unreadable", f"{path.name} has {len(rest)} byte(s) after its gzip stream "
                                         f"that are not a gzip member (corrupt .vital file)")
                d = isal_zlib.decompressobj(wbits=16 + isal_zlib.MAX_WBITS)
                parts.append(d.decompress(rest))
    except OSError as e:  # a directory, no permission, an I/O error: this case fails, not the split
        raise VitalFileError("unreadable", f"{path}: {type(e).__name__}: {e.strerror or e}") from e
    except isal_zlib.error as e:
        raise VitalFileError("unreadable", f"{path.name} is not a valid gzip stream (corrupt .vital file): {e}") from e
    return (parts[0] if len(parts) == 1 else b"".join(parts)), d.eof


def _walk(body: bytes, pos: int) -> int:
    """From a packet boundary, step over whole packets; the boundary reached (the body's end if it is whole)."""
    n = len(body)
    while pos + 5 <= n:
        pos += 5 + _u32(body, pos + 1)[0]
    return pos


def _count_packets(body: bytes, pos: int) -> int:
    """How many whole packets a cut body holds (only for the error message)."""
    count, n = 0, len(body)
    while pos + 5 <= n and (pos := pos + 5 + _u32(body, pos + 1)[0]) <= n:
        count += 1
    return count


def _parse(body: bytes, names: list[str] | None) -> tuple[VitalFile, int]:
    """Walk the packets as vitaldb's ``load_vital`` does.

    Returns the file and the packet boundary from which the body's framing is still to be checked:
    while vitaldb's walk steps packet by packet it checks the framing too; a break leaves the rest
    to :func:`_walk`, and a record-length skip is followed packet by packet (``_walk_to``).
    """
    vf, n = VitalFile(), len(body)
    headerlen = struct.unpack_from("<H", body, 8)[0]
    header = body[10:10 + headerlen]
    vf.dgmt = struct.unpack_from("<h", header, 0)[0]
    if headerlen >= 26:
        vf.dtstart, vf.dtend = struct.unpack_from("<dd", header, 10)
    vf.packed = packed = headerlen >= 27 and header[26] == 1
    dtstart, dtend = vf.dtstart, vf.dtend
    tid_dtname, did_dname, reclens, order, raw_seen = {}, {}, {}, [], {}
    sinks = {}               # tid -> (type, checked length, read size, srate, dt list, n list, value list)
    # vitaldb's early stop in packed files: set at the first record, the bytes of records after which it
    # stops (inf: it reads to the end), and the bytes of records read so far
    stop, consumed = None, 0
    checked = None           # set when a skip lands off the framing: where the framing check resumes
    pos = 10 + headerlen
    while True:
        head = pos
        if pos + 17 <= n:
            ptype, plen, infolen, dt, tid = _head_rec(body, pos)
        elif pos + 5 <= n:  # too short to be a whole record
            ptype, plen = _head(body, pos)
        else:  # vitaldb reads b'' (the end) or a short head (struct raises)
            break
        if plen > UNPACKED_MAX_PACKET and not packed:
            break
        start, pos = pos + 5, pos + 5 + plen
        end = pos if pos <= n else n  # a read past the end returns what is there
        if end == start:
            break
        if ptype == REC:
            if stop is None:
                stop = _stop_offset(packed, names, order, tid_dtname, reclens)
            consumed += 5 + plen
            if end - start < 12:
                continue
            sink = sinks.get(tid)
            if sink is None:  # not selected: vitaldb seeks over the rest of the track's records
                reclen = reclens.get(tid, 0)
                if reclen > 5 + plen:
                    target = min(pos, n) + reclen - 5 - plen
                    if checked is None and (q := _walk_to(body, pos, target)) != target:
                        checked = q
                    pos = target
                    consumed += reclen - 5 - plen
                if consumed >= stop:
                    break
                continue
            if dtstart == 0 or (dt > 0 and dt < dtstart):
                dtstart = dt
            if dt > dtend:
                dtend = dt
            kind, fmtlen, size, srate, dts, ns, vals = sink
            p = start + 2 + infolen
            if kind == WAVE:
                if p + 4 > end:
                    continue
                k = _u32(body, p)[0]
                p += 4
                if p + k * fmtlen > end:
                    continue
                if p + k * size > end:
                    break
                dts.append(dt)
                ns.append(k)
                vals.append(p)
                if srate > 0 and dt + k / srate > dtend:
                    dtend = dt + k / srate
            elif kind == NUMBER:
                if p + fmtlen > end:
                    continue
                if p + size > end:
                    break
                dts.append(dt)
                vals.append(p)
            elif kind == TEXT:
                p += 4
                if p + 4 > end:
                    continue
                k = _u32(body, p)[0]
                dts.append(dt)
                vals.append(body[p + 4:min(p + 4 + k, end)].decode("utf-8", "ignore"))
        elif ptype in (DEVINFO, TRKINFO, CMD, RAW):
            buf = body[start:end]
            try:
                if ptype == DEVINFO:
                    did, name = _devinfo(buf)
                    did_dname[did] = name
                elif ptype == TRKINFO:
                    info = _trkinfo(buf, plen, names, did_dname)
                    if info is None:
                        continue
                    tid, reclen, trk = info
                    reclens[tid] = reclen
                    order.append(tid)
                    if trk is None:
                        continue
                    tid_dtname[tid] = trk.dtname
                    vf.trks[trk.dtname] = trk
                    sinks = {t: _sink(vf.trks[d]) for t, d in tid_dtname.items()}
                elif ptype == CMD:
                    _cmd(buf, vf.trks)
                else:
                    _raw(buf, plen, raw_seen)
            except (struct.error, _Stop):
                break
        if stop is not None and consumed >= stop:
            break
    vf.dtstart, vf.dtend = dtstart, dtend
    return vf, head if checked is None else checked


def _walk_to(body: bytes, pos: int, target: int) -> int:
    """Step over whole packets from ``pos`` until ``target`` or the body's end; the boundary reached."""
    n = len(body)
    while pos < target and pos + 5 <= n:
        pos += 5 + _u32(body, pos + 1)[0]
    return pos


def _sink(trk: Track) -> tuple:
    fmtlen, size = (FMT[trk.fmt][1], np.dtype(FMT[trk.fmt][0]).itemsize) if trk.type in (WAVE, NUMBER) else (0, 0)
    return trk.type, fmtlen, size, trk.srate, trk.dt, trk.n, trk.val


def _stop_offset(packed: bool, names, order: list, tid_dtname: dict, reclens: dict) -> float:
    """Bytes of records after which vitaldb stops reading a packed file (inf: it reads to the end)."""
    if packed and names:
        wanted = [i for i, t in enumerate(order) if t in tid_dtname]
        if wanted and all(reclens.get(t, 0) > 0 for t in order):
            return sum(reclens[t] for t in order[:wanted[-1] + 1])
    return math.inf


def _str(buf: bytes, pos: int) -> tuple[str, int]:
    k = _u32(buf, pos)[0]
    return buf[pos + 4:pos + 4 + k].decode("utf-8", "ignore"), pos + 4 + k


def _devinfo(buf: bytes) -> tuple[int, str]:
    """A device's id and name (its type where the name is empty)."""
    did = _u32(buf, 0)[0]
    devtype, pos = _str(buf, 4)
    name, pos = _str(buf, pos)
    if len(buf) > pos + 4:
        _str(buf, pos)  # port
    return did, name or devtype


# trkinfo fields after the name, each read while the packet has bytes left: (name, struct code or "str")
_TRK_FIELDS = (("unit", "str"), ("mindisp", "<f"), ("maxdisp", "<f"), ("col", "<I"), ("srate", "<f"),
               ("gain", "<d"), ("offset", "<d"), ("montype", "<B"), ("did", "<I"), ("reclen", "<I"),
               ("dtstart", "<d"), ("dtend", "<d"))


def _trkinfo(buf: bytes, plen: int, names, did_dname: dict):
    """``(tid, reclen, Track or None if not selected)``, or None where vitaldb skips the packet (unknown format)."""
    tid, trktype, fmt = struct.unpack_from("<HBB", buf, 0)
    if trktype in (WAVE, NUMBER) and fmt not in FMT:
        return None
    tname, pos = _str(buf, 4)
    f = {"did": 0, "reclen": 0, "srate": 0.0, "gain": 0.0, "offset": 0.0}
    for key, code in _TRK_FIELDS:
        if plen > pos:
            if code == "str":
                f[key], pos = _str(buf, pos)
            else:
                f[key] = struct.unpack_from(code, buf, pos)[0]
                pos += struct.calcsize(code)
    known = f["did"] and f["did"] in did_dname
    dname = did_dname[f["did"]] if known else ""
    dtname = f"{dname}/{tname}" if known else tname  # "/name" for a device with no name nor type, as vitaldb
    selected = (not names or dtname in names
                or any(dtname.endswith(s) or dname + "/*" == s for s in names))
    trk = Track(dtname, trktype, fmt, f["srate"], f["gain"], f["offset"]) if selected else None
    return tid, f["reclen"], trk


def _cmd(buf: bytes, trks: dict) -> None:
    """Command 6 clears the EVENT track's records; command 5 (display order) only has to fit."""
    cmd = struct.unpack_from("<B", buf, 0)[0]
    if cmd == 6 and "EVENT" in trks:
        for records in (trks["EVENT"].dt, trks["EVENT"].n, trks["EVENT"].val):
            records.clear()
    elif cmd == 5:
        cnt = struct.unpack_from("<H", buf, 1)[0]
        if len(buf) < 3 + 2 * cnt:  # numpy raises: buffer too small
            raise _Stop


def _raw(buf: bytes, plen: int, seen: dict) -> None:
    """A raw device packet: nothing is kept, but vitaldb raises on some, and its locals persist across packets."""
    struct.unpack_from("<d", buf, 0)
    pos = 8
    if plen > pos:
        seen["sport"], pos = _str(buf, pos)
    if plen > pos:
        seen["bsent"] = struct.unpack_from("<B", buf, pos)[0]
        pos += 1
    if plen > pos:
        seen["buflen"] = _u32(buf, pos)[0]
        pos += 4
    if "buflen" not in seen or (plen >= pos + seen["buflen"] and not {"sport", "bsent"} <= seen.keys()):
        raise _Stop  # a NameError in vitaldb
