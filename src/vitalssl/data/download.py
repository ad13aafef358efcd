"""VitalDB's ``.vital`` files as the server sends them: streamed, resumed, checked whole, then renamed into the cache.

A case is streamed from ``{api_url}/{version}/{caseid}.vital`` (the layout and dataset version of
``vitaldb==1.7.2``) into ``<cache>/.partial/<caseid>.vital.part``. A partial file left by an earlier
try is resumed with an HTTP Range request; a server that answers 200 instead of 206 sends the whole
file again, which replaces it. The finished file is checked with the reader's own checks (gzip stream
ended, CRC, packet framing: :func:`vitalssl.data.vitalfile.file_tracks`) before it is renamed to
``<cache>/<caseid>.vital``, so a cut or corrupt download never sits in the cache under its final name.

Each cached file has a manifest entry ``<cache>/manifest/<caseid>.json`` (bytes, sha256, tracks,
fetched_at, url_path), written atomically once the file is in place. One small file per case, not one
shared file: thousands of cases are written by several threads or processes at once, and each entry
is then one atomic rename with no lock. A cached file whose size, mtime or (checked on request)
sha256 does not match its entry is fetched again.

Only the URL's path is ever printed, never its host part (which could hold credentials).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

import vitaldb

from ..atomic import write_json
from .reader import CaseError
from .vitalfile import VitalFileError, file_tracks

DATASET_VERSION = vitaldb.dataset.DATASET_VERSION  # the versioned open-dataset path vitaldb itself reads
CHUNK = 1 << 20
MAX_BACKOFF_S = 60.0
MAX_REDIRECTS = 5
# refused before any download: less free space than this in the cache (a long VitalDB case is ~150 MB)
MIN_FREE_BYTES = 1 << 30


class DownloadError(Exception):
    """One try that failed; ``retry`` says whether another try can help (a network error, a 5xx)."""

    def __init__(self, detail: str, retry: bool):
        super().__init__(detail)
        self.retry = retry


@dataclass(frozen=True)
class Fetched:
    caseid: int
    path: Path
    status: str          # cached | fetched
    received: int        # bytes received from the server by this call


def check_cache_dir(cache_dir: Path) -> None:
    """One-line errors, before any download, for a cache dir that is a file, not writable, or on a full disk."""
    d = Path(cache_dir)
    if d.exists() and not d.is_dir():
        raise NotADirectoryError(f"cache dir {d} (param data.cache_dir) is a file, not a directory")
    d.mkdir(parents=True, exist_ok=True)
    probe = d / f".write-probe-{os.getpid()}"
    try:  # as root, permission bits say nothing: only a write tells
        probe.write_bytes(b"")
    except OSError as e:
        raise PermissionError(f"cache dir {d} (param data.cache_dir) is not writable: {e.strerror or e}") from e
    probe.unlink()
    free = shutil.disk_usage(d).free
    if free < MIN_FREE_BYTES:
        raise OSError(errno.ENOSPC, f"cache dir {d} (param data.cache_dir) has {free / 2**20:.1f} MiB free, "
                      f"less than the {MIN_FREE_BYTES / 2**30:g} GiB a download needs; free space or move the cache")


class CaseCache:
    """The download cache of the ``vitaldb`` source: :meth:`fetch` puts a checked case file in it."""

    def __init__(self, cache_dir: Path, api_url: str, retries: int, connect_timeout_s: float,
                 read_timeout_s: float, retry_backoff_s: float):
        self.dir = Path(cache_dir)
        self.parts, self.manifest = self.dir / ".partial", self.dir / "manifest"
        u = urlsplit(api_url)
        self.scheme, self.host, self.port = u.scheme, u.hostname, u.port
        self.base = u.path.rstrip("/")
        self.retries, self.backoff = retries, retry_backoff_s
        self.connect_timeout, self.read_timeout = connect_timeout_s, read_timeout_s

    def path(self, caseid: int) -> Path:
        return self.dir / f"{caseid}.vital"

    def url_path(self, caseid: int) -> str:
        return f"{self.base}/{DATASET_VERSION}/{caseid}.vital"

    def entry(self, caseid: int) -> Optional[dict]:
        try:
            return json.loads((self.manifest / f"{caseid}.json").read_text())
        except (OSError, ValueError):
            return None

    def is_cached(self, caseid: int, deep: bool = False) -> bool:
        """The file is in place and matches its manifest entry (size and mtime; with ``deep``, its sha256 too)."""
        e, p = self.entry(caseid), self.path(caseid)
        try:
            st = p.stat()
        except OSError:
            return False
        if e is None or e.get("bytes") != st.st_size or e.get("mtime_ns") != st.st_mtime_ns:
            return False
        return not deep or _sha256(p) == e.get("sha256")

    def fetch(self, caseid: int, deep: bool = False, on_bytes: Callable[[int], None] | None = None) -> Fetched:
        """The case in the cache, downloading it if it is not there whole; :class:`CaseError` ``download_failed``
        naming the URL path and the last error otherwise. A full disk raises ``OSError`` (every case would fail)."""
        if self.is_cached(caseid, deep):
            return Fetched(caseid, self.path(caseid), "cached", 0)
        self.parts.mkdir(parents=True, exist_ok=True)
        self.manifest.mkdir(exist_ok=True)
        with open(self.parts / f"{caseid}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process fetching the same case finishes first
            if self.is_cached(caseid, deep):
                return Fetched(caseid, self.path(caseid), "cached", 0)
            return self._download(caseid, on_bytes or (lambda n: None))

    def _download(self, caseid: int, on_bytes) -> Fetched:
        part, url = self.parts / f"{caseid}.vital.part", self.url_path(caseid)
        received, last = [0], None

        def count(n: int) -> None:
            received[0] += n
            on_bytes(n)

        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(random.uniform(0, min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF_S)))
            try:
                self._get(url, part, count)
                tracks = _checked(part)
            except DownloadError as e:
                last = e
                if not e.retry:
                    break
                continue
            self._publish(caseid, part, url, tracks)
            return Fetched(caseid, self.path(caseid), "fetched", received[0])
        tries = f"after {attempt + 1} attempt(s)"
        raise CaseError(caseid, "download_failed", f"GET {url}: {last} ({tries})")

    def _publish(self, caseid: int, part: Path, url: str, tracks: list) -> None:
        final = self.path(caseid)
        digest = _sha256(part)
        os.replace(part, final)
        st = final.stat()
        write_json(self.manifest / f"{caseid}.json", {
            "caseid": caseid, "url_path": url, "bytes": st.st_size, "sha256": digest, "tracks": tracks,
            "mtime_ns": st.st_mtime_ns, "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=self.connect_timeout)
        conn.connect()
        conn.sock.settimeout(self.read_timeout)  # from here the timeout bounds each wait for bytes
        return conn

    def _response(self, url: str, offset: int):
        """The response to a GET of ``url`` (redirects followed), asking for bytes from ``offset`` on."""
        headers = {"Accept-Encoding": "identity", "User-Agent": "vitalssl"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            conn = self._connect()
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
            if resp.status not in (301, 302, 303, 307, 308) or not resp.getheader("Location"):
                return conn, resp
            loc = urlsplit(resp.getheader("Location"))
            conn.close()
            if loc.hostname:
                self.scheme, self.host, self.port = loc.scheme or self.scheme, loc.hostname, loc.port
            target = loc.path + (f"?{loc.query}" if loc.query else "")
        raise DownloadError(f"more than {MAX_REDIRECTS} redirects", retry=False)

    def _get(self, url: str, part: Path, on_bytes) -> int:
        """One try: append to (or replace) the partial file; the bytes received."""
        offset = part.stat().st_size if part.exists() else 0
        got = 0
        try:
            conn, resp = self._response(url, offset)
            try:
                mode = _mode(resp, offset, part)
                expected = resp.getheader("Content-Length")
                with open(part, mode) as f:
                    # read1: what has arrived, so a try cut by a timeout keeps its bytes for the resume
                    while chunk := resp.read1(CHUNK):
                        f.write(chunk)
                        got += len(chunk)
                        on_bytes(len(chunk))
            finally:
                conn.close()
        except DownloadError:
            raise
        except (socket.timeout, TimeoutError) as e:
            raise DownloadError(f"timed out after {got} byte(s) of this try ({e or 'no data'}; "
                                f"param data.read_timeout_s / data.connect_timeout_s)", retry=True) from e
        except http.client.IncompleteRead as e:
            raise DownloadError(f"body cut short: {offset + len(e.partial) + got} of {offset + got + (e.expected or 0)}"
                                f" bytes (connection closed)", retry=True) from e
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise OSError(errno.ENOSPC, f"cache dir {self.dir} (param data.cache_dir): disk full while writing "
                              f"{part.name}") from e
            raise DownloadError(f"{type(e).__name__}: {e.strerror or e}", retry=True) from e
        except http.client.HTTPException as e:
            raise DownloadError(f"{type(e).__name__}: {e}", retry=True) from e
        if expected is not None and got != int(expected):
            raise DownloadError(f"body cut short: {got} of {expected} bytes", retry=True)
        return got


def _mode(resp, offset: int, part: Path) -> str:
    """How the body is written: appended to a partial file (206 from ``offset``) or replacing it (200)."""
    if resp.status == 206 and offset:
        start = (resp.getheader("Content-Range") or "").removeprefix("bytes ").split("-")[0]
        if start != str(offset):
            part.unlink(missing_ok=True)
            raise DownloadError(f"HTTP 206 from byte {start or '?'} where {offset} was asked for", retry=True)
        return "ab"
    if resp.status == 200:
        return "wb"
    if resp.status == 416:  # the partial file is not a prefix the server can continue
        part.unlink(missing_ok=True)
        return _refused(resp, retry=True)
    return _refused(resp, retry=resp.status >= 500 or resp.status in (408, 429))


def _refused(resp, retry: bool):
    raise DownloadError(f"HTTP {resp.status} {resp.reason}".strip(), retry=retry)


def _checked(part: Path) -> list:
    """The tracks of a whole downloaded file; a cut or corrupt one is deleted (the next try starts over)."""
    try:
        return file_tracks(part)
    except VitalFileError as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{e.reason}: {e.detail}", retry=True) from e


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch_cases(cfg, caseids: list, progress: bool = True, on_failure=None) -> dict:
    """Fetch ``caseids`` into ``cfg.cache_dir`` in ``cfg.download_workers`` threads (a :class:`DataConfig`).

    Cached files are checked against their manifest entry, sha256 included. A failed case is passed to
    ``on_failure`` (a :class:`CaseError`) and the others go on; a full disk ends the run.
    Returns counts: cached, fetched, failed, failed_by_reason, failed_cases, received (bytes), seconds.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed
    from threading import Lock

    from tqdm import tqdm

    check_cache_dir(Path(cfg.cache_dir))
    cache = CaseCache(Path(cfg.cache_dir), cfg.api_url, cfg.download_retries, cfg.connect_timeout_s,
                      cfg.read_timeout_s, cfg.retry_backoff_s)
    out = {"cases": len(caseids), "cached": 0, "fetched": 0, "failed": 0, "failed_by_reason": {},
           "failed_cases": [], "received": 0}
    t0, lock = time.monotonic(), Lock()
    bar = tqdm(total=len(caseids), desc="fetch", unit="case", disable=not progress)

    def count(n: int) -> None:
        with lock:
            out["received"] += n
            mb = out["received"] / 1e6
            bar.set_postfix_str(f"{mb:.1f} MB, {mb / max(time.monotonic() - t0, 1e-9):.1f} MB/s", refresh=False)

    with ThreadPoolExecutor(cfg.download_workers) as pool:
        futures = {pool.submit(cache.fetch, c, True, count): c for c in caseids}
        try:
            for f in as_completed(futures):
                bar.update(1)
                try:
                    out[f.result().status] += 1
                except CaseError as e:
                    out["failed"] += 1
                    out["failed_by_reason"][e.reason] = out["failed_by_reason"].get(e.reason, 0) + 1
                    out["failed_cases"].append({"caseid": e.caseid, "reason": e.reason, "detail": e.detail})
                    if on_failure is not None:
                        on_failure(e)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            bar.close()
    out["seconds"] = time.monotonic() - t0
    out["failed_cases"].sort(key=lambda d: d["caseid"])
    return out
