"""Case-level tables: the clinical columns of VitalDB's ``cases`` table and the track lists of its ``trks`` table.

Clinical columns keep VitalDB's names (``age``, ``sex``, ``asa``, ...): none of them clashes with a
window-metadata column. Numbers read as float (an empty cell is NaN), ``sex``, ``department``,
``optype`` and ``ane_type`` as text (an empty cell is missing). A column the table lacks is missing
for every case.

Both tables are downloaded from ``{data.api_url}/cases`` and ``{data.api_url}/trks`` (CSV, gzip or
plain) with retries, checked whole (the server's length, the columns, every row), and cached in
``data.cache_dir`` by an atomic rename, so a cut download never sits in the cache.
"""

from __future__ import annotations

import csv
import gzip
import http.client
import io
import math
import random
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from ..atomic import atomic_write_text

# name -> type, in the order they follow the other columns of the window metadata
CLINICAL_COLUMNS = {"age": float, "sex": str, "height": float, "weight": float, "bmi": float, "asa": float,
                    "emop": float, "department": str, "optype": str, "ane_type": str, "icu_days": float,
                    "death_inhosp": float}
TRACK_TABLE_COLUMNS = ("caseid", "tname")


def case_id(text: str) -> Optional[int]:
    """A case id written as an integer (``3``, ``0003``, or ``3.0`` as pandas writes a column with gaps)."""
    try:
        v = float(text)
    except ValueError:
        return None
    return int(v) if v.is_integer() and v >= 0 else None


def _rows(path: Path, text: str, required: tuple) -> list:
    try:
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or not set(required) <= set(reader.fieldnames):
            raise ValueError(f"table {path} needs columns {', '.join(required)}, has {sorted(reader.fieldnames or [])}")
        return [(reader.line_num, r) for r in reader]
    except csv.Error as e:
        raise ValueError(f"table {path} is not a readable CSV file: {e}") from e


def _value(path, line: int, col: str, text: str):
    text = (text or "").strip()
    if CLINICAL_COLUMNS[col] is str:
        return text or None
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"clinical table {path}, line {line}, column {col}: {text!r} is not a number") from None


def parse_clinical_columns(path, text: str) -> tuple[list[str], dict[int, dict]]:
    """(the clinical columns the table has, caseid -> {column: value}) from a ``cases`` table's CSV text.

    A row without a case id is skipped (:func:`vitalssl.data.sources.read_clinical` notes it);
    a case listed twice with different values is an error naming both lines.
    """
    rows = _rows(path, text, ("caseid",))
    present = [c for c in CLINICAL_COLUMNS if rows and c in rows[0][1]] if rows else []
    out, line_of = {}, {}
    for line, r in rows:
        caseid = case_id((r["caseid"] or "").strip())
        if caseid is None:
            continue
        values = {c: _value(path, line, c, r[c]) for c in present}
        if caseid in out and not _same(out[caseid], values):
            raise ValueError(f"clinical table {path}: case {caseid} is listed with different clinical values on "
                             f"lines {line_of[caseid]} and {line}; fix the table")
        out.setdefault(caseid, values)
        line_of.setdefault(caseid, line)
    return present, out


def _same(a: dict, b: dict) -> bool:
    return all(x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
               for x, y in zip(a.values(), b.values()))


def check_cases_table(path, text: str) -> None:
    """Refuse a ``cases`` table without caseid and subjectid or with a value that does not read."""
    _rows(path, text, ("caseid", "subjectid"))
    parse_clinical_columns(path, text)


def read_clinical_columns(path: Path) -> tuple[list[str], dict[int, dict]]:
    path = Path(path)
    try:
        return parse_clinical_columns(path, path.read_text())
    except UnicodeDecodeError as e:
        raise ValueError(f"clinical table {path} is not a readable CSV file: {e}") from e


def parse_track_table(path, text: str) -> dict[int, set[str]]:
    """caseid -> track names (``device/name``) from a ``trks`` table's CSV text (columns caseid, tname, tid)."""
    out: dict[int, set[str]] = {}
    for line, r in _rows(path, text, TRACK_TABLE_COLUMNS):
        caseid = case_id((r["caseid"] or "").strip())
        if caseid is None:
            raise ValueError(f"track table {path}, line {line}, column caseid: {r['caseid']!r} is not a case id")
        out.setdefault(caseid, set()).add((r["tname"] or "").strip())
    return out


def has_track(names, track: str) -> bool:
    """Whether a case's track list holds ``track``, matched as the reader selects it (the name or a suffix)."""
    return any(n == track or n.endswith(track) for n in names)


def filter_by_tracks(caseids: list[int], tracks_of: dict[int, Optional[set]], wanted: tuple[str, ...]) -> tuple[list[int], dict]:
    """The cases whose track list holds every ``wanted`` track, and a report of the others.

    ``tracks_of[c]`` None (its list could not be read) keeps the case: reading it names the failure.
    A case missing from ``tracks_of`` has no track. A case lacking several tracks counts under each.
    """
    kept, dropped, unknown = [], [], []
    missing = {t: 0 for t in wanted}
    for c in caseids:
        names = tracks_of.get(c, set())
        if names is None:
            kept.append(c)
            unknown.append(c)
            continue
        lacks = [t for t in wanted if not has_track(names, t)]
        for t in lacks:
            missing[t] += 1
        (dropped if lacks else kept).append(c)
    report = {"cases_checked": len(caseids), "cases_kept": len(kept), "cases_dropped": len(dropped),
              "dropped_missing_track": missing, "dropped_cases": dropped, "track_list_unreadable": unknown}
    return kept, report


def fetch_table(url: str, path: Path, check: Callable[[str], object], retries: int, timeout_s: float = 60.0,
                backoff_s: float = 1.0) -> Path:
    """Download ``url`` (CSV, gzip or plain) into ``path`` unless a cached copy passes ``check``.

    A body shorter than the server's Content-Length, a gzip stream cut short, an HTTP error or a
    table that ``check`` refuses is retried (exponential backoff with jitter); the cache file appears
    only once its text passed ``check``.
    """
    path = Path(path)
    if path.exists():
        try:
            check(path.read_text())
            return path
        except (ValueError, UnicodeDecodeError):
            pass  # a cached table that no longer reads is fetched again, never trusted
    last = None
    for attempt in range(retries + 1):
        try:
            text = _download_text(url, timeout_s)
            check(text)
            atomic_write_text(path, text)
            return path
        except (OSError, http.client.HTTPException, EOFError, ValueError, UnicodeDecodeError) as e:
            last = e
            if attempt < retries:
                time.sleep(backoff_s * 2 ** attempt * (1 + random.random()))
    why = f"HTTP {last.code}" if isinstance(last, urllib.error.HTTPError) else f"{type(last).__name__}: {last}"
    raise RuntimeError(f"downloading {url} failed after {retries + 1} attempt(s): {why}")


def _download_text(url: str, timeout_s: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        body = r.read()  # http.client raises IncompleteRead on a body shorter than its Content-Length
        expected = r.headers.get("Content-Length")
    if expected is not None and len(body) != int(expected):
        raise EOFError(f"got {len(body)} of {expected} bytes")
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)  # raises EOFError on a cut stream
    return body.decode("utf-8")
