"""Deterministic synthetic VitalDB-like cases, written as real ``.vital`` files.

Each case carries the waveform tracks ``SNUADC/PLETH`` and ``SNUADC/ECG_II`` at
500 Hz and the numeric tracks ``Solar8000/HR``, ``Solar8000/ART_SBP``,
``Solar8000/ART_DBP``, ``Solar8000/ART_MBP``, ``Primus/RR_CO2``,
``Solar8000/PLETH_SPO2`` and ``BIS/BIS`` every 2 s; ``clinical.csv`` holds
each case's subject, age, sex, ASA class and ICU days.

What the waveforms and labels carry (positive controls: blood pressure through
the pulse arrival time and the pulse shape, respiration, age, and ASA/ICU
through age; negative controls: sex, SpO2, BIS) is stated, with its sources, in
:mod:`vitalssl.data.demophysiology`. The faults are injected by
:mod:`vitalssl.data.demofaults` and recorded in the fault map:

================  =======  ===============================================  ==========
kind              channel  what                                             unusable
================  =======  ===============================================  ==========
nan_gap           both/1   no samples (disconnect)                          yes
flat              1        signal stuck at its last value                   yes
clipping          1        signal clipped at an amplifier rail              yes
clip_filtered     1        clipped, then resampled to 250 Hz and back       yes
                           before storage (the plateau rings)
motion            PPG      large 0.5-4 Hz artefact, 3-12 s                  yes
partial_motion    PPG      motion burst of 2-4 s (20-40% of a window)       yes
electrocautery    ECG      large broadband noise                            yes
ecg_pause         ECG      3-4 s without QRS (pause or lead-off)            yes
foreign_ppg       PPG      20-60 s of another patient's PPG, heart rate     yes
                           within 6 bpm of this one's
baseline_wander   both     slow drift, whole case                           no (band-pass removes it)
mains_hum         ECG      50/60 Hz sine                                    no (band-pass removes it)
inverted_ecg      ECG      lead reversed from some point to the case end    no (the gate reads either
                                                                            polarity)
================  =======  ===============================================  ==========
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import vitaldb

from ..atomic import atomic_write, atomic_write_text
from .config import DemoConfig
from .demofaults import CORRECTABLE, FAULT_S, UNUSABLE, Fault, add_correctable, add_unusable
from .demophysiology import SRATE, clinical_draws, synth_signals

__all__ = ["CORRECTABLE", "FAULT_S", "UNUSABLE", "Fault", "demo_caseids", "synth_case", "write_vital",
           "generate_demo", "load_faults"]

PPG_TRACK = "SNUADC/PLETH"
ECG_TRACK = "SNUADC/ECG_II"
NUMERIC_TRACKS = {
    "hr": "Solar8000/HR",
    "sbp": "Solar8000/ART_SBP",
    "dbp": "Solar8000/ART_DBP",
    "map": "Solar8000/ART_MBP",
    "rr": "Primus/RR_CO2",
    "spo2": "Solar8000/PLETH_SPO2",
    "bis": "BIS/BIS",
}
DTSTART0 = 1_600_000_000.0  # arbitrary fixed epoch so files are reproducible
CLINICAL_HEADER = "caseid,subjectid,age,sex,asa,icu_days,casestart,caseend"


def demo_caseids(cfg: DemoConfig) -> list[int]:
    """The case ids the demo uses: the first ``n_cases`` ids of ``vitaldb.caseids_<case_set>``."""
    ids = sorted(_case_set(cfg.case_set))
    if len(ids) < cfg.n_cases:
        raise ValueError(f"demo.n_cases={cfg.n_cases} exceeds the {len(ids)} ids of case set {cfg.case_set!r}")
    return ids[: cfg.n_cases]


def _case_set(name: str) -> set[int]:
    attr = f"caseids_{name}"
    if not hasattr(vitaldb, attr):
        known = sorted(a[len("caseids_"):] for a in dir(vitaldb) if a.startswith("caseids_"))
        raise ValueError(f"unknown case set {name!r}; known: {', '.join(known)}")
    return set(getattr(vitaldb, attr))


def synth_case(caseid: int, cfg: DemoConfig, kinds: tuple = UNUSABLE, age: float = 50.0):
    """Return ``(ppg, ecg, numerics, faults, duration_s)`` for one case; NaN marks missing samples.

    ``age``: the subject's age, which shapes the arteries (:mod:`.demophysiology`).
    ``kinds``: the unusable fault kinds drawn from (all by default; a test
    narrows it to study one kind).
    """
    rng = np.random.default_rng([cfg.seed, caseid])
    duration = float(np.round(rng.uniform(*cfg.duration_s)))
    sig = synth_signals(rng, duration, age)
    faults = add_correctable(rng, caseid, sig, duration)
    faults += add_unusable(rng, caseid, sig, duration, cfg.fault_rate_per_min, kinds)
    return sig.ppg, sig.ecg, sig.numerics, faults, duration


def _wave_recs(x: np.ndarray, dtstart: float) -> list[dict]:
    """Split a waveform at NaN runs into records, as a monitor that lost its signal would."""
    finite = np.isfinite(x)
    edges = np.flatnonzero(np.diff(np.concatenate([[False], finite, [False]]).astype(np.int8)))
    return [{"dt": dtstart + s / SRATE, "val": x[s:e].astype(np.float32)} for s, e in zip(edges[::2], edges[1::2])]


def write_vital(path: Path, caseid: int, ppg: np.ndarray, ecg: np.ndarray, numerics, duration: float,
                srate: float = SRATE) -> None:
    """Write one case as a ``.vital`` file (atomically)."""
    dtstart = DTSTART0 + caseid * 86400.0
    vf = vitaldb.VitalFile()
    vf.dtstart, vf.dtend, vf.dgmt = dtstart, dtstart + duration, 0
    for name, x in ((PPG_TRACK, ppg), (ECG_TRACK, ecg)):
        if x is None:
            continue
        recs = _wave_recs(x, dtstart)
        if recs:
            vf.add_track(name, recs, srate=srate, unit="mV" if "ECG" in name else "")
    if numerics is not None:
        tn, values = numerics
        for key, v in values.items():   # the keys of NUMERIC_TRACKS that ``values`` has
            vf.add_track(NUMERIC_TRACKS[key], [{"dt": dtstart + float(tt), "val": float(x)} for tt, x in zip(tn, v)])
    def write(tmp: Path) -> None:
        # gzip's header holds the file's name and the write time: written under its own name in a private
        # folder (the temporary names carry the process id), its time zeroed, then moved to ``tmp``
        private = Path(tempfile.mkdtemp(prefix=".demo-", suffix=".tmp", dir=path.parent))
        try:
            staged = private / path.name
            vf.to_vital(str(staged), compresslevel=1)
            with open(staged, "r+b") as f:
                f.seek(4)
                f.write(b"\x00\x00\x00\x00")
            os.replace(staged, tmp)
        finally:
            shutil.rmtree(private, ignore_errors=True)  # the folder made above, and nothing else

    atomic_write(path, write)  # fsyncs and renames into place


def generate_demo(cfg: DemoConfig, out_dir: Path, progress: bool = True, kinds: tuple = UNUSABLE) -> dict:
    """Write ``<caseid>.vital`` for every demo case, ``clinical.csv`` and ``faults.json`` into ``out_dir``.

    ``kinds``: the unusable fault kinds drawn from (see :func:`synth_case`).

    Returns a small summary (cases, subjects, faults per kind).
    """
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    caseids = demo_caseids(cfg)
    rng = np.random.default_rng([cfg.seed, 0])
    subjects = np.arange(cfg.n_subjects) + 10001
    # every subject gets one case; the rest go to random subjects (repeat surgeries)
    subject_of = np.concatenate([subjects, rng.choice(subjects, cfg.n_cases - cfg.n_subjects)])
    rng.shuffle(subject_of)
    faults: list[Fault] = []
    rows = [CLINICAL_HEADER]
    for caseid, subj in tqdm(list(zip(caseids, subject_of)), desc="demo cases", disable=not progress):
        r = np.random.default_rng([cfg.seed, int(subj)])
        age, sex = int(r.integers(20, 85)), "MF"[int(r.integers(2))]   # sex: a negative control
        ppg, ecg, numerics, case_faults, duration = synth_case(caseid, cfg, kinds, float(age))
        write_vital(out_dir / f"{caseid}.vital", caseid, ppg, ecg, numerics, duration)
        faults += case_faults
        clin = clinical_draws(np.random.default_rng([cfg.seed, caseid, 1]), age)
        rows.append(f"{caseid},{subj},{age},{sex},{clin['asa']},{clin['icu_days']},0,{int(duration)}")
    atomic_write_text(out_dir / "clinical.csv", "\n".join(rows) + "\n")
    fault_doc = {"unusable_kinds": list(UNUSABLE), "correctable_kinds": list(CORRECTABLE),
                 "faults": [f.__dict__ for f in faults]}
    atomic_write_text(out_dir / "faults.json", json.dumps(fault_doc, indent=1, sort_keys=True) + "\n")
    counts: dict[str, int] = {}
    for f in faults:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    return {"cases": len(caseids), "subjects": int(len(set(subject_of.tolist()))), "faults": counts}


def load_faults(demo_dir: Path) -> dict[int, list[Fault]]:
    """Fault map written by :func:`generate_demo`, by case id."""
    doc = json.loads((Path(demo_dir) / "faults.json").read_text())
    out: dict[int, list[Fault]] = {}
    for f in doc["faults"]:
        out.setdefault(int(f["caseid"]), []).append(Fault(**f))
    return out
