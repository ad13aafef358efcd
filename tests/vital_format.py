"""Write ``.vital`` files packet by packet, as VitalRecorder does: not packed, records interleaved in time.

``vitaldb``'s ``to_vital`` writes packed files (one record per wave track, tracks one after
another); real VitalDB files hold one record per track per second or so. The layout follows
``vitaldb``'s parser (``VitalFile.load_vital``): a header, then packets of a 1-byte type, a
4-byte little-endian payload length and the payload.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

DEVINFO, TRKINFO, REC, CMD, RAW = 9, 0, 1, 6, 10
CODE = {1: "f", 2: "d", 3: "b", 4: "B", 5: "h", 6: "H", 7: "l", 8: "L"}  # native, as vitaldb reads them


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<I", len(b)) + b


class VitalBuilder:
    """Append packets in file order; ``body()`` is the uncompressed file, ``write()`` gzips it."""

    def __init__(self, dtstart: float, dtend: float, dgmt: int = -540, packed: bool = False):
        header = struct.pack("<hIIddB", dgmt, 0, 0, dtstart, dtend, int(packed))
        self.parts = [b"VITA", struct.pack("<IH", 3, len(header)), header]

    def packet(self, ptype: int, payload: bytes) -> "VitalBuilder":
        self.parts.append(struct.pack("<BI", ptype, len(payload)) + payload)
        return self

    def device(self, did: int, name: str, devtype: str = "", port: str | None = None) -> "VitalBuilder":
        port_b = b"" if port is None else _str(port)
        return self.packet(DEVINFO, struct.pack("<I", did) + _str(devtype or name) + _str(name) + port_b)

    def track(self, tid: int, name: str, ttype: int = 1, fmt: int = 1, srate: float = 0.0, gain: float = 1.0,
              offset: float = 0.0, did: int = 0, unit: str = "", reclen: int | None = None,
              cut: int | None = None) -> "VitalBuilder":
        """A trkinfo packet, VitalRecorder's fields; ``reclen`` appends vitaldb's record length (and track span),
        ``cut`` keeps only that many bytes of the payload (older writers stop after fewer fields)."""
        p = (struct.pack("<HBB", tid, ttype, fmt) + _str(name) + _str(unit)
             + struct.pack("<ffIfddBI", 0.0, 100.0, 0xFFFFFF, srate, gain, offset, 0, did))
        if reclen is not None:
            p += struct.pack("<Idd", reclen, 0.0, 0.0)
        return self.packet(TRKINFO, p if cut is None else p[:cut])

    def rec(self, tid: int, dt: float, payload: bytes, infolen: int = 10) -> "VitalBuilder":
        return self.packet(REC, struct.pack("<HdH", infolen, dt, tid) + b"\0" * (infolen - 10) + payload)

    def wave(self, tid: int, dt: float, values: np.ndarray) -> "VitalBuilder":
        return self.rec(tid, dt, struct.pack("<I", len(values)) + np.ascontiguousarray(values).tobytes())

    def number(self, tid: int, dt: float, value, fmt: int = 1) -> "VitalBuilder":
        return self.rec(tid, dt, struct.pack(CODE[fmt], value))

    def text(self, tid: int, dt: float, s: str) -> "VitalBuilder":
        return self.rec(tid, dt, struct.pack("<I", 0) + _str(s))

    def body(self) -> bytes:
        return b"".join(self.parts)

    def write(self, path: Path, body: bytes | None = None) -> Path:
        path.write_bytes(gzip.compress(self.body() if body is None else body, compresslevel=1, mtime=0))
        return path
