"""Case sources. All of them end in a ``.vital`` file read by :func:`vitalssl.reader.read_case`.

``demo``
    the cases written by the ``demo`` stage (``data.demo_dir``), with their clinical table.
``local``
    a directory of ``<caseid>.vital`` files (the PhysioNet mirror of VitalDB is laid out
    this way) and, optionally, a clinical-table CSV with ``caseid`` and ``subjectid``.
``vitaldb``
    the open VitalDB API through the ``vitaldb`` package. Each case is downloaded once
    into ``data.cache_dir`` as ``<caseid>.vital`` (with retries); the clinical table is
    cached there as ``clinical.csv``.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Optional

import vitaldb

from ..atomic import atomic_write
from .config import DataConfig
from .reader import CaseError


def case_set_ids(name: str) -> Optional[set[int]]:
    """``vitaldb.caseids_<name>``, or None for ``all``."""
    if name == "all":
        return None
    attr = f"caseids_{name}"
    if not hasattr(vitaldb, attr):
        known = sorted(a[len("caseids_"):] for a in dir(vitaldb) if a.startswith("caseids_"))
        raise ValueError(f"invalid param `splits.case_set`: {name!r}; allowed: all, {', '.join(known)}")
    return set(getattr(vitaldb, attr))


def read_clinical(path: Path) -> dict[int, str]:
    """caseid -> subjectid from a clinical table CSV (VitalDB's ``cases`` table layout)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"caseid", "subjectid"} <= set(rows[0]):
        raise ValueError(f"clinical table {path} needs columns caseid and subjectid, has {sorted(rows[0])}")
    out = {}
    for r in rows:
        if r["caseid"] and r["subjectid"]:
            out[int(float(r["caseid"]))] = str(int(float(r["subjectid"])))
    return out


class LocalSource:
    """A directory of ``<caseid>.vital`` files (``local`` and ``demo``)."""

    def __init__(self, name: str, directory: Path, clinical_csv: Optional[Path]):
        self.name, self.dir = name, Path(directory)
        self.clinical_csv = Path(clinical_csv) if clinical_csv else None
        if not self.dir.is_dir():
            hint = " (run `dvc repro demo` first)" if name == "demo" else " (param data.local_dir)"
            raise FileNotFoundError(f"case directory {self.dir} does not exist{hint}")
        if self.clinical_csv is not None and not self.clinical_csv.exists():
            raise FileNotFoundError(f"clinical table {self.clinical_csv} (param data.clinical_csv) not found")

    def available(self) -> list[int]:
        ids = []
        for p in self.dir.glob("*.vital"):
            if p.stem.isdigit():
                ids.append(int(p.stem))
        return sorted(ids)

    def subjects(self) -> Optional[dict[int, str]]:
        return read_clinical(self.clinical_csv) if self.clinical_csv else None

    def case_path(self, caseid: int) -> Path:
        return self.dir / f"{caseid}.vital"


class VitalDBSource:
    """The open VitalDB API, through a local download cache."""

    name = "vitaldb"

    def __init__(self, cache_dir: Path, retries: int, case_set: Optional[set[int]]):
        self.dir, self.retries, self.case_set = Path(cache_dir), retries, case_set
        self.dir.mkdir(parents=True, exist_ok=True)

    def _retry(self, what: str, fn):
        last = None
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as e:  # network errors come in many types (URLError, OSError, HTTP errors)
                last = e
                if attempt < self.retries:
                    time.sleep(min(2 ** attempt, 30))
        raise RuntimeError(f"{what} failed after {self.retries + 1} attempt(s): {type(last).__name__}: {last}")

    def _clinical_path(self) -> Path:
        path = self.dir / "clinical.csv"
        if not path.exists():
            def fetch():
                import pandas as pd
                df = pd.read_csv(f"{vitaldb.dataset.api_url}/cases")
                atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
            self._retry("downloading the VitalDB clinical table", fetch)
        return path

    def available(self) -> list[int]:
        if self.case_set is not None:
            return sorted(self.case_set)
        return sorted(read_clinical(self._clinical_path()))

    def subjects(self) -> dict[int, str]:
        return read_clinical(self._clinical_path())

    def case_path(self, caseid: int) -> Path:
        path = self.dir / f"{caseid}.vital"
        if path.exists():
            return path

        def fetch():
            vf = vitaldb.VitalFile(int(caseid))
            if not vf.trks:
                raise RuntimeError("the API returned no tracks")
            atomic_write(path, lambda tmp: vf.to_vital(str(tmp)))

        try:
            self._retry(f"downloading case {caseid}", fetch)
        except RuntimeError as e:
            raise CaseError(caseid, "download_failed", str(e)) from e
        return path


def make_source(cfg: DataConfig, case_set: Optional[set[int]] = None):
    if cfg.source == "demo":
        return LocalSource("demo", Path(cfg.demo_dir), Path(cfg.demo_dir) / "clinical.csv")
    if cfg.source == "local":
        return LocalSource("local", Path(cfg.local_dir), Path(cfg.clinical_csv) if cfg.clinical_csv else None)
    return VitalDBSource(Path(cfg.cache_dir), cfg.download_retries, case_set)
