"""The gate's beat detector against neurokit2's, on the demo's fault kinds: accuracy and speed.

Generates demo cases with every fault kind, then for each detector runs the
whole gate on every window and reports
  * precision and recall of rejection against the generator's fault map, overall
    and the share rejected per fault kind;
  * on clean windows (and those after an inverted-lead point): the share kept and
    the share whose ECG heart rate is within 2 bpm of the monitor's numeric HR;
  * detection time per window (both channels).

Detectors:
  gate      : scipy find_peaks with a prominence of 0.35 x the window's robust range,
              ECG polarity chosen per window (vitalssl.data.quality.detect_pair)
  neurokit2 : nk.ecg_invert + nk.ecg_peaks (method "neurokit") for R peaks,
              nk.ppg_findpeaks (method "elgendi") for pulse peaks

neurokit2 is not a dependency of the project (0.2.13 declares pandas<3, the project
pins pandas 3): install it beside it to run this, `pip install --no-deps neurokit2==0.2.13`.

    python benchmarks/bench_detectors.py [--cases 24] [--seed 11]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def nk_pair(ppg, ecg, fs, hr_max, ppg_amp, ecg_amp, inverted):
    import neurokit2 as nk
    fs = int(fs)
    try:
        ecg_fixed, _ = nk.ecg_invert(ecg, sampling_rate=fs)
        _, info = nk.ecg_peaks(ecg_fixed, sampling_rate=fs, method="neurokit")
        r = np.asarray(info["ECG_R_Peaks"], dtype=np.int64)
    except Exception:  # neurokit raises on windows it cannot handle (flat, all-NaN); no beats, as the gate reads it
        r = np.zeros(0, np.int64)
    try:
        p = np.asarray(nk.ppg_findpeaks(ppg, sampling_rate=fs, method="elgendi")["PPG_Peaks"], dtype=np.int64)
    except Exception:
        p = np.zeros(0, np.int64)
    return p, r


class Timed:
    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *a):
        t = time.perf_counter()
        out = self.fn(*a)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out


def gate_case(path, caseid, cfg, detect):
    """The gate of :func:`vitalssl.data.windows.process_case`, with another beat detector."""
    from vitalssl.data.dsp import bandpass, bandpass_sos, fill_gaps, resample
    from vitalssl.data.quality import case_measures, judge, kept_mask
    from vitalssl.data.reader import read_case
    from vitalssl.data.windows import window_starts

    sig = read_case(path, caseid, cfg.ppg_track, cfg.ecg_track, dict(cfg.label_tracks), cfg.native_srate)
    fs, dec, L = cfg.target_srate, cfg.decimation, cfg.window_len
    raw = (sig.ppg, sig.ecg)
    filt = [bandpass(resample(fill_gaps(x), dec), bandpass_sos(cfg.filter.type, cfg.filter.order, b, fs))
            for x, b in zip(raw, (cfg.filter.ppg_band, cfg.filter.ecg_band))]
    n = min(len(filt[0]), len(filt[1]), len(raw[0]) // dec)
    starts = window_starts(n, L, cfg.stride_len)
    ppg, ecg, pair, _ = case_measures(tuple(r[: n * dec] for r in raw), tuple(f[:n] for f in filt), starts, L, dec,
                                      cfg.native_srate, fs, cfg.gate, detect=detect)
    kept = kept_mask(judge(ppg, ecg, pair, cfg.gate), len(starts))
    hr_label = np.array([np.nanmean(sig.labels["hr"][int(s / fs):int((s + L) / fs)]) for s in starts])
    return starts / fs, kept, ecg["hr"], hr_label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    from vitalssl.config import from_dict
    from vitalssl.data.config import DemoConfig, WindowConfig
    from vitalssl.data.demo import demo_caseids, generate_demo, load_faults
    from vitalssl.data.quality import detect_pair

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = from_dict(WindowConfig, params["windows"], "windows")
    dcfg = replace(from_dict(DemoConfig, params["demo"], "demo"), n_cases=args.cases, n_subjects=args.cases,
                   duration_s=(240, 360), seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        generate_demo(dcfg, d, progress=False)
        faults = load_faults(d)
        print(f"{args.cases} demo cases (seed {args.seed}), all fault kinds")
        print(f"{'detector':>10} {'precision':>9} {'recall':>7} {'clean kept':>10} {'ECG HR ok':>9} "
              f"{'inverted kept':>13} {'inv. HR ok':>10} {'ms/window':>9}")
        per_kind_all = {}
        for name, fn in (("gate", detect_pair), ("neurokit2", nk_pair)):
            det = Timed(fn)
            c = Counter()
            per_kind = defaultdict(lambda: [0, 0])
            for caseid in demo_caseids(dcfg):
                fl = faults.get(caseid, [])
                starts_s, kept, ecg_hr, hr_label = gate_case(d / f"{caseid}.vital", caseid, cfg, det)
                flip = min([f.start_s for f in fl if f.kind == "inverted_ecg"], default=np.inf)
                for s, k, hr, ref in zip(starts_s, kept, ecg_hr, hr_label):
                    ov = [(min(s + cfg.window_s, f.end_s) - max(s, f.start_s), f.kind) for f in fl if f.unusable]
                    worst, kind = max(ov, default=(0.0, ""))
                    if worst >= 0.5:
                        c["faulted"] += 1
                        c["tp"] += int(not k)
                        per_kind[kind][0] += 1
                        per_kind[kind][1] += int(not k)
                    elif worst <= 0:
                        group = "inv" if s >= flip else "clean"
                        c[group] += 1
                        c[group + "_kept"] += int(k)
                        c["fp"] += int(not k)
                        c[group + "_hr_ok"] += int(abs(hr - ref) <= 2.0)
            prec = c["tp"] / max(c["tp"] + c["fp"], 1)
            rec = c["tp"] / max(c["faulted"], 1)
            print(f"{name:>10} {prec:9.3f} {rec:7.3f} {c['clean_kept'] / c['clean']:10.3f} "
                  f"{c['clean_hr_ok'] / c['clean']:9.3f} {c['inv_kept'] / max(c['inv'], 1):13.3f} "
                  f"{c['inv_hr_ok'] / max(c['inv'], 1):10.3f} {1e3 * det.seconds / det.calls:9.3f}")
            per_kind_all[name] = per_kind
        print("share rejected per fault kind (faulted windows):")
        kinds = sorted(per_kind_all["gate"])
        print(f"{'kind':>16} {'windows':>7} " + " ".join(f"{n:>10}" for n in per_kind_all))
        for kind in kinds:
            n = per_kind_all["gate"][kind][0]
            print(f"{kind:>16} {n:>7} " + " ".join(f"{pk[kind][1] / max(pk[kind][0], 1):10.3f}"
                                                    for pk in per_kind_all.values()))
        print(f"inverted-lead windows (clean otherwise): {c['inv']}")


if __name__ == "__main__":
    main()
