"""Deterministic synthetic VitalDB-like cases, written as real ``.vital`` files.

Each case carries the waveform tracks ``SNUADC/PLETH`` and ``SNUADC/ECG_II`` at
500 Hz and the numeric tracks ``Solar8000/HR``, ``Solar8000/PLETH_SPO2``,
``Solar8000/ART_MBP`` and ``BIS/BIS`` every 2 s.

Physiology: beat times follow a heart rate with slow drift, respiratory sinus
arrhythmia and jitter; ECG beats are P-QRS-T Gaussian sums; the PPG pulse
(systolic wave + dicrotic wave) follows each R peak by a pulse transit time
that varies per case; respiration modulates the PPG amplitude.

Faults (recorded in the fault map, times in s from case start):

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import vitaldb
from scipy.signal import resample_poly

from ..atomic import atomic_write, atomic_write_text
from .config import DemoConfig

SRATE = 500.0
PPG_TRACK = "SNUADC/PLETH"
ECG_TRACK = "SNUADC/ECG_II"
NUMERIC_TRACKS = {
    "hr": "Solar8000/HR",
    "spo2": "Solar8000/PLETH_SPO2",
    "map": "Solar8000/ART_MBP",
    "bis": "BIS/BIS",
}
UNUSABLE = ("nan_gap", "flat", "clipping", "clip_filtered", "motion", "partial_motion", "electrocautery",
            "ecg_pause", "foreign_ppg")
CORRECTABLE = ("baseline_wander", "mains_hum", "inverted_ecg")
FAULT_S = {"nan_gap": (2, 25), "flat": (3, 20), "clipping": (5, 30), "clip_filtered": (5, 30), "motion": (3, 12),
           "partial_motion": (2, 4), "electrocautery": (3, 15), "ecg_pause": (3, 4), "foreign_ppg": (20, 60)}
DTSTART0 = 1_600_000_000.0  # arbitrary fixed epoch so files are reproducible


@dataclass(frozen=True)
class Fault:
    caseid: int
    kind: str
    channel: str      # PPG | ECG | both
    start_s: float
    end_s: float
    unusable: bool


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


# --------------------------------------------------------------------------- waveforms

def _gauss(t, mu, sigma):
    return np.exp(-0.5 * ((t - mu) / sigma) ** 2)


def _ecg_template(fs: float) -> np.ndarray:
    """One P-QRS-T complex, R peak at index ``int(0.3 * fs)``, amplitude in units of the R wave."""
    t = np.arange(-0.3, 0.55, 1 / fs)
    waves = [(-0.20, 0.025, 0.12), (-0.035, 0.010, -0.12), (0.0, 0.011, 1.0),
             (0.035, 0.012, -0.28), (0.26, 0.045, 0.30)]
    return sum(a * _gauss(t, mu, s) for mu, s, a in waves)


def _ppg_template(fs: float) -> np.ndarray:
    """One pulse from its foot, systolic peak ~0.15 s after the foot, dicrotic wave ~0.4 s."""
    t = np.arange(0.0, 0.9, 1 / fs)
    return _gauss(t, 0.16, 0.065) + 0.42 * _gauss(t, 0.40, 0.09)


def _beat_times(rng, duration: float, hr0: float | None = None) -> np.ndarray:
    hr0 = rng.uniform(55, 95) if hr0 is None else hr0
    drift_amp, drift_period = rng.uniform(2, 8), rng.uniform(120, 600)
    rsa_amp, resp_f = rng.uniform(1, 4), rng.uniform(0.18, 0.3)
    t, beats = rng.uniform(0, 0.5), []
    while t < duration:
        beats.append(t)
        hr = (hr0 + drift_amp * np.sin(2 * np.pi * t / drift_period)
              + rsa_amp * np.sin(2 * np.pi * resp_f * t) + rng.normal(0, 1.0))
        t += 60.0 / max(hr, 35.0)
    return np.asarray(beats)


def _motion(rng, m: int, amp: float) -> np.ndarray:
    """A motion artefact of ``m`` samples: four random 0.5-4 Hz sines under a soft-edged envelope."""
    k = np.arange(m) / SRATE
    art = sum(rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * rng.uniform(0.5, 4.0) * k + rng.uniform(0, 6.28))
              for _ in range(4))
    return amp * art * np.hanning(m) ** 0.3


def _place(signal: np.ndarray, template: np.ndarray, starts: np.ndarray, amps: np.ndarray) -> None:
    n, m = len(signal), len(template)
    for s, a in zip(starts, amps):
        lo, hi = max(s, 0), min(s + m, n)
        if hi > lo:
            signal[lo:hi] += a * template[lo - s: hi - s]


def synth_case(caseid: int, cfg: DemoConfig, kinds: tuple = UNUSABLE):
    """Return ``(ppg, ecg, numerics, faults, duration_s)`` for one case; NaN marks missing samples.

    ``kinds``: the unusable fault kinds drawn from (all by default; a test
    narrows it to study one kind).
    """
    rng = np.random.default_rng([cfg.seed, caseid])
    duration = float(np.round(rng.uniform(*cfg.duration_s)))
    n = int(duration * SRATE)
    t = np.arange(n) / SRATE
    beats = _beat_times(rng, duration)
    resp_f = rng.uniform(0.18, 0.3)

    ecg = np.zeros(n)
    r_amp = rng.uniform(0.7, 1.6)  # mV
    _place(ecg, _ecg_template(SRATE) * r_amp, (beats * SRATE).astype(int) - int(0.3 * SRATE),
           1 + 0.05 * rng.standard_normal(len(beats)))
    ecg += rng.normal(0, 0.012, n)

    ptt = rng.uniform(0.18, 0.30)  # s, R peak to PPG foot
    pulse_amp = rng.uniform(15, 35)

    def pulses(beat_times, ptt):
        x = np.zeros(n)
        amps = pulse_amp * (1 + 0.12 * np.sin(2 * np.pi * resp_f * beat_times)
                            + 0.03 * rng.standard_normal(len(beat_times)))
        _place(x, _ppg_template(SRATE), ((beat_times + ptt) * SRATE).astype(int), amps)
        return x

    own_pulses = pulses(beats, ptt)
    ppg = own_pulses + 40 + rng.normal(0, 0.08, n)

    faults: list[Fault] = []

    def add(kind, channel, start, end):
        faults.append(Fault(caseid, kind, channel, round(float(start), 3), round(float(end), 3), kind in UNUSABLE))

    # an inverted lead in about a fifth of the cases, from a point between two beats to the end; before the
    # baseline wander is added, as the reversal happens at the electrodes
    if rng.random() < 0.2:
        k = rng.integers(len(beats) // 4, len(beats) - 1)
        s = 0.5 * (beats[k] + beats[k + 1]) + 0.2  # after the T wave, before the next P wave
        ecg[int(s * SRATE):] *= -1
        add("inverted_ecg", "ECG", s, duration)

    # baseline wander: always present, removed by the high-pass edge
    f_w = rng.uniform(0.03, 0.2)
    ecg += rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * f_w * t + rng.uniform(0, 6.28))
    ppg += rng.uniform(2, 6) * np.sin(2 * np.pi * f_w * 0.7 * t + rng.uniform(0, 6.28))
    add("baseline_wander", "both", 0, duration)
    # mains hum on ECG in about half the cases
    if rng.random() < 0.5:
        f_m = 60.0 if rng.random() < 0.5 else 50.0
        s = rng.uniform(0, duration / 2)
        e = min(duration, s + rng.uniform(60, duration))
        seg = (t >= s) & (t < e)
        ecg[seg] += rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f_m * t[seg])
        add("mains_hum", "ECG", s, e)

    rails = [(np.min(ppg), np.max(ppg)), (np.min(ecg), np.max(ecg))]
    n_faults = rng.poisson(cfg.fault_rate_per_min * duration / 60)
    for _ in range(n_faults):
        kind = kinds[rng.integers(len(kinds))]
        dur = rng.uniform(*FAULT_S[kind])
        s = rng.uniform(0, max(duration - dur, 1))
        e = min(duration, s + dur)
        seg = slice(int(s * SRATE), int(e * SRATE))
        m = seg.stop - seg.start
        if kind == "nan_gap":
            ch = ("both", "PPG", "ECG")[rng.integers(3)]
            if ch in ("both", "PPG"):
                ppg[seg] = np.nan
            if ch in ("both", "ECG"):
                ecg[seg] = np.nan
        elif kind == "flat":
            ch = ("PPG", "ECG")[rng.integers(2)]
            x = ppg if ch == "PPG" else ecg
            x[seg] = x[max(seg.start - 1, 0)]
        elif kind in ("clipping", "clip_filtered"):
            # a gain or offset jump drives the signal into the amplifier's rails,
            # which sit at the extremes of the clean recording
            ch = ("PPG", "ECG")[rng.integers(2)]
            x, lo, hi = (ppg, *rails[0]) if ch == "PPG" else (ecg, *rails[1])
            win = x[seg]
            mid = np.nanmedian(win)
            gain = rng.uniform(2.5, 4.0) if ch == "PPG" else rng.uniform(4.0, 8.0)
            x[seg] = np.clip(mid + gain * (win - mid), lo, hi)
            if kind == "clip_filtered":
                # stored at 250 Hz and brought back to 500 Hz: the polyphase filters ring at the plateau's corners
                pad = slice(max(seg.start - 500, 0), min(seg.stop + 500, n))
                y = x[pad]
                if np.isfinite(y).all():
                    x[pad] = resample_poly(resample_poly(y, 1, 2), 2, 1)[: len(y)]
        elif kind == "motion":
            ch = "PPG"
            ppg[seg] += _motion(rng, m, pulse_amp * rng.uniform(2.5, 5.0))
        elif kind == "partial_motion":
            ch = "PPG"
            ppg[seg] += _motion(rng, m, pulse_amp * rng.uniform(1.0, 3.0))
        elif kind == "electrocautery":
            ch = "ECG"
            ecg[seg] += rng.uniform(2.0, 6.0) * rng.standard_normal(m)
        elif kind == "ecg_pause":
            # no QRS: the trace keeps its level, noise and a slow drift, so it is neither flat nor missing
            ch = "ECG"
            level = np.nanmedian(ecg[max(seg.start - 500, 0):seg.start + 1])
            drift = rng.uniform(-0.05, 0.05) * np.sin(np.pi * np.arange(m) / max(m, 1))
            ecg[seg] = level + drift + rng.normal(0, 0.012, m)
        else:  # foreign_ppg: another patient's pulses, at a rate close to this one's so heart rates agree
            ch = "PPG"
            inside = (beats >= s) & (beats < e)
            hr_here = 60.0 / np.median(np.diff(beats[inside])) if inside.sum() > 2 else 75.0
            other = s + _beat_times(rng, e - s + 1, hr0=hr_here + rng.uniform(-6, 6))
            x = pulses(other, rng.uniform(0.18, 0.30))
            # swap the pulses only, cross-faded over 0.25 s, so the wander and noise run on without a step
            fade = np.minimum(1.0, np.minimum(np.arange(m), np.arange(m)[::-1]) / (0.25 * SRATE))
            ppg[seg] += fade * (x[seg] - own_pulses[seg])
        add(kind, ch, s, e)

    # numeric tracks every 2 s
    tn = np.arange(0, duration, 2.0)
    ibi = np.diff(beats)
    hr_inst = np.interp(tn, beats[1:], 60.0 / ibi)
    numerics = {
        "hr": np.round(hr_inst),
        "spo2": np.clip(np.round(98 + rng.normal(0, 0.8, len(tn))), 90, 100),
        "map": np.round(rng.uniform(70, 95) + 6 * np.sin(2 * np.pi * tn / rng.uniform(200, 900))),
        "bis": np.clip(np.round(rng.uniform(38, 55) + 4 * np.sin(2 * np.pi * tn / rng.uniform(300, 900))), 0, 100),
    }
    return ppg, ecg, (tn, numerics), faults, duration


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
        for key, track in NUMERIC_TRACKS.items():
            vf.add_track(track, [{"dt": dtstart + float(tt), "val": float(v)} for tt, v in zip(tn, values[key])])
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
    rows = ["caseid,subjectid,age,sex,casestart,caseend"]
    for caseid, subj in tqdm(list(zip(caseids, subject_of)), desc="demo cases", disable=not progress):
        ppg, ecg, numerics, case_faults, duration = synth_case(caseid, cfg, kinds)
        write_vital(out_dir / f"{caseid}.vital", caseid, ppg, ecg, numerics, duration)
        faults += case_faults
        r = np.random.default_rng([cfg.seed, int(subj)])
        rows.append(f"{caseid},{subj},{int(r.integers(20, 85))},{'MF'[int(r.integers(2))]},0,{int(duration)}")
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
