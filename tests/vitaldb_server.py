"""A real HTTP server on 127.0.0.1 in VitalDB's API layout, with faults injected per case.

``/<version>/<caseid>.vital`` serves ``files[caseid]`` (bytes), honouring ``Range: bytes=N-`` with 206;
``/cases`` and ``/trks`` serve the tables given. ``faults[caseid]`` is a list of fault names, one
taken per request (then the case is served whole):

- ``cut``: half the body, with the full Content-Length, then the connection closes;
- ``short_length``: a Content-Length of half the body, and that half;
- ``500`` / ``404``: that status;
- ``stall``: a quarter of the body, then a pause of ``stall_s`` (longer than the client's read timeout);
- ``corrupt``: the body with bytes in its middle flipped (a bad gzip stream);
- ``no_range``: a Range request answered 200 with the whole body.

Every request is logged as ``(path, range start, bytes sent, status)``.
"""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from vitalssl.data.download import DATASET_VERSION


class VitalServer:
    def __init__(self, files: dict, tables: dict | None = None, stall_s: float = 2.0):
        self.files, self.tables, self.stall_s = files, tables or {}, stall_s
        self.faults: dict[int, list] = {}
        self.log: list[tuple] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                server._serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _fault(self, caseid: int):
        with self.lock:
            todo = self.faults.get(caseid)
            return todo.pop(0) if todo else None

    def _serve(self, h):
        m = re.fullmatch(rf"/{re.escape(DATASET_VERSION)}/(\d+)\.vital", h.path)
        if h.path.lstrip("/") in self.tables:
            return self._send(h, 200, self.tables[h.path.lstrip("/")], 0)
        if m is None or int(m.group(1)) not in self.files:
            return self._send(h, 404, b"not found", 0)
        caseid = int(m.group(1))
        body, fault = self.files[caseid], self._fault(caseid)
        rng = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range", ""))
        start = int(rng.group(1)) if rng and fault != "no_range" else 0
        if fault in ("500", "404"):
            return self._send(h, int(fault), b"error", start)
        if fault == "corrupt":
            mid = len(body) // 2
            body = body[:mid] + bytes(b ^ 0xFF for b in body[mid:mid + 64]) + body[mid + 64:]
        part = body[start:]
        status = 206 if start else 200
        h.send_response(status)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        sent = part
        if fault == "short_length":
            sent = part[:len(part) // 2]
        h.send_header("Content-Length", str(len(sent)))
        h.end_headers()
        if fault == "cut":
            sent = part[:len(part) // 2]
        with self.lock:  # logged before the body, so a stalled request is in the log while it stalls
            self.log.append((h.path, start, len(sent) if fault != "stall" else len(part), status))
        if fault == "stall":
            h.wfile.write(part[:len(part) // 4])
            h.wfile.flush()
            time.sleep(self.stall_s)
            sent = part[len(part) // 4:]
        try:
            h.wfile.write(sent)
            h.wfile.flush()
        except OSError:  # the client gave up (a stall past its read timeout)
            pass
        if fault in ("cut", "stall"):
            h.close_connection = True

    def _send(self, h, status: int, body: bytes, start: int):
        h.send_response(status)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        with self.lock:
            self.log.append((h.path, start, len(body), status))
