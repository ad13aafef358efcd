"""Case sources. All of them end in a ``.vital`` file read by :func:`vitalssl.reader.read_case`.

``demo``
    the cases written by the ``demo`` stage (``data.demo_dir``), with their clinical table.
``local``
    a directory of ``<caseid>.vital`` files (the PhysioNet mirror of VitalDB is laid out
    this way) and, optionally, a clinical-table CSV with ``caseid`` and ``subjectid``.
``vitaldb``
    the open VitalDB API (``data.api_url``). Each case is downloaded once into ``data.cache_dir``
    as ``<caseid>.vital`` and checked whole before it takes that name (:mod:`vitalssl.data.download`);
    the clinical table
    (``{data.api_url}/cases``) and the track table (``{data.api_url}/trks``) are cached there
    as ``clinical.csv`` and ``trks.csv`` (:mod:`vitalssl.data.clinical`).

Every source gives each case's track list (``track_lists``) and the clinical columns (``clinical``).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Optional

import vitaldb

from .clinical import case_id, check_cases_table, fetch_table, parse_track_table, read_clinical_columns
from .config import DataConfig
from .download import CaseCache
from .vitalfile import VitalFileError, list_tracks


def case_set_ids(name: str) -> Optional[set[int]]:
    """``vitaldb.caseids_<name>``, or None for ``all``."""
    if name == "all":
        return None
    attr = f"caseids_{name}"
    if not hasattr(vitaldb, attr):
        known = sorted(a[len("caseids_"):] for a in dir(vitaldb) if a.startswith("caseids_"))
        raise ValueError(f"invalid param `splits.case_set`: {name!r}; allowed: all, {', '.join(known)}")
    return set(getattr(vitaldb, attr))


def _subject_label(text: str) -> str:
    """Subject ids are opaque labels, kept as written (``S-501``, ``0012``), except that an integer with a zero
    fraction (``12.0``, as pandas writes an integer column with gaps) reads as the integer (``12``)."""
    m = re.fullmatch(r"([+-]?[0-9]+)\.0*", text)
    return m.group(1) if m else text


def read_clinical(path: Path, notes: Optional[list] = None) -> dict[int, str]:
    """caseid -> subjectid from a clinical table CSV (VitalDB's ``cases`` table layout).

    Subject ids are opaque labels (``S-501`` is fine); a case id must be an integer, and a
    row that breaks that is an error naming the file, row and column. A case listed twice
    with the same subject is kept once (with a line in ``notes``); with different subjects
    it is an error naming the rows. Rows with an empty case or subject id are skipped (noted).
    """
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"caseid", "subjectid"} <= set(reader.fieldnames):
                raise ValueError(f"clinical table {path} needs columns caseid and subjectid, has "
                                 f"{sorted(reader.fieldnames or [])}")
            rows = [(reader.line_num, r) for r in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"clinical table {path} is not a readable CSV file: {e}") from e
    out: dict[int, str] = {}
    row_of: dict[int, list[int]] = {}
    skipped = []
    for line, r in rows:
        case_text, subj_text = (r["caseid"] or "").strip(), (r["subjectid"] or "").strip()
        if not case_text or not subj_text:
            skipped.append(line)
            continue
        caseid = case_id(case_text)
        if caseid is None:
            raise ValueError(f"clinical table {path}, line {line}, column caseid: {case_text!r} is not a case id "
                             f"(a non-negative integer)")
        subject = _subject_label(subj_text)
        if caseid in out and out[caseid] != subject:
            first = row_of[caseid][0]
            raise ValueError(f"clinical table {path}: case {caseid} is listed with different subjects: line "
                             f"{first} subjectid {out[caseid]!r}, line {line} subjectid {subject!r}; fix the table")
        out[caseid] = subject
        row_of.setdefault(caseid, []).append(line)
    if notes is not None:
        repeated = {c: lines for c, lines in row_of.items() if len(lines) > 1}
        if repeated:
            listed = "; ".join(f"case {c} (lines {', '.join(map(str, ls))})" for c, ls in sorted(repeated.items()))
            notes.append(f"clinical table {path}: {len(repeated)} case(s) listed more than once with the same "
                         f"subject, kept once: {listed}")
        if skipped:
            notes.append(f"clinical table {path}: {len(skipped)} row(s) without a caseid or subjectid skipped "
                         f"(lines {_short_list(skipped)})")
    return out


def _short_list(items: list, n: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


class LocalSource:
    """A directory of ``<caseid>.vital`` files (``local`` and ``demo``).

    The directory is listed once: ``0003.vital`` is case 3 (the PhysioNet mirror's
    layout); two files for one case id (``3.vital`` and ``0003.vital``) are refused;
    ``.vital`` files whose names are not case ids are kept in ``ignored``.
    """

    def __init__(self, name: str, directory: Path, clinical_csv: Optional[Path]):
        self.name, self.dir = name, Path(directory)
        self.clinical_csv = Path(clinical_csv) if clinical_csv else None
        self.notes: list[str] = []
        param = "data.demo_dir" if name == "demo" else "data.local_dir"
        if not self.dir.is_dir():
            hint = " (run `dvc repro demo` first)" if name == "demo" else ""
            raise FileNotFoundError(f"case directory {self.dir} (param {param}) does not exist{hint}")
        if self.clinical_csv is not None and not self.clinical_csv.is_file():
            raise FileNotFoundError(f"clinical table {self.clinical_csv} (param data.clinical_csv) not found")
        files: dict[int, list[Path]] = {}
        self.ignored: list[str] = []
        for p in sorted(self.dir.glob("*.vital")):
            if re.fullmatch(r"[0-9]+", p.stem):
                files.setdefault(int(p.stem), []).append(p)
            else:
                self.ignored.append(p.name)
        clash = {c: ps for c, ps in files.items() if len(ps) > 1}
        if clash:
            listed = "; ".join(f"case {c}: {', '.join(p.name for p in ps)}" for c, ps in sorted(clash.items()))
            raise ValueError(f"case directory {self.dir} (param {param}) holds several files for one case id "
                             f"({listed}); keep one file per case")
        self.paths = {c: ps[0] for c, ps in files.items()}
        if self.ignored:
            self.notes.append(f"{len(self.ignored)} file(s) in {self.dir} ignored: their names are not "
                              f"<caseid>.vital: {_short_list(self.ignored)}")

    def available(self) -> list[int]:
        return sorted(self.paths)

    def subjects(self) -> Optional[dict[int, str]]:
        return read_clinical(self.clinical_csv, self.notes) if self.clinical_csv else None

    def clinical(self) -> tuple[list[str], dict[int, dict]]:
        """The clinical columns of the table (none without one) and their typed values by case."""
        return read_clinical_columns(self.clinical_csv) if self.clinical_csv else ([], {})

    def track_lists(self, caseids: list[int]) -> dict[int, Optional[set]]:
        """Each case's track names from its file's track packets (no sample is read); None where unreadable."""
        out = {}
        for c in caseids:
            try:
                out[c] = set(list_tracks(self.case_path(c)))
            except VitalFileError:
                out[c] = None
        return out

    def case_path(self, caseid: int) -> Path:
        return self.paths.get(caseid, self.dir / f"{caseid}.vital")


class VitalDBSource:
    """The open VitalDB API (``data.api_url``), through a local download cache (:mod:`vitalssl.data.download`).

    A case not yet in the cache is fetched when it is asked for (``ttm-vitaldb fetch`` fills the cache
    beforehand, with threads of its own).
    """

    name = "vitaldb"

    def __init__(self, cfg: DataConfig, case_set: Optional[set[int]]):
        self.dir, self.retries, self.case_set = Path(cfg.cache_dir), cfg.download_retries, case_set
        self.api_url = cfg.api_url.rstrip("/")
        self.notes: list[str] = []
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cache = CaseCache(self.dir, cfg.api_url, cfg.download_retries, cfg.connect_timeout_s,
                               cfg.read_timeout_s, cfg.retry_backoff_s)

    def _clinical_path(self) -> Path:
        path = self.dir / "clinical.csv"
        return fetch_table(f"{self.api_url}/cases", path, lambda text: check_cases_table(path, text), self.retries)

    def clinical(self) -> tuple[list[str], dict[int, dict]]:
        return read_clinical_columns(self._clinical_path())

    def track_lists(self, caseids: list[int]) -> dict[int, Optional[set]]:
        """Each case's track names from the API's track table (cached as ``trks.csv``); a case it lacks has none."""
        path = self.dir / "trks.csv"
        fetch_table(f"{self.api_url}/trks", path, lambda text: parse_track_table(path, text), self.retries)
        table = parse_track_table(path, path.read_text())
        return {c: table.get(c, set()) for c in caseids}

    def available(self) -> list[int]:
        if self.case_set is not None:
            return sorted(self.case_set)
        return sorted(read_clinical(self._clinical_path()))

    def subjects(self) -> dict[int, str]:
        return read_clinical(self._clinical_path(), self.notes)

    def case_path(self, caseid: int) -> Path:
        return self.cache.fetch(int(caseid)).path


def make_source(cfg: DataConfig, case_set: Optional[set[int]] = None):
    if cfg.source == "demo":
        return LocalSource("demo", Path(cfg.demo_dir), Path(cfg.demo_dir) / "clinical.csv")
    if cfg.source == "local":
        return LocalSource("local", Path(cfg.local_dir), Path(cfg.clinical_csv) if cfg.clinical_csv else None)
    return VitalDBSource(cfg, case_set)
