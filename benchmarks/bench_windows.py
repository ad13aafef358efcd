"""build-windows throughput against the floor of just reading the .vital files.

Generates long demo cases (default: 4 cases of 3 h, then 8 to check that memory
stays flat), then, for 2 workers and for os.cpu_count() workers, in fresh
processes measures
  floor : vitaldb.VitalFile + both waveforms at the native rate, the cases spread
          over the same number of processes
  stage : the whole build-windows path (gzip check, read, resample, filter, gate,
          normalise, write the window file, decisions table and gate figure)
and prints cases/s, windows/s, the peak RSS of the largest process (the parent or one worker) and the
stage / floor time ratio for each. The stage's fixed costs (starting its
workers, drawing the gate figure: a few seconds a split) weigh on a run of a
few cases and not on thousands, so the ratio is also printed for the extra
cases of the second run alone: ``(stage(2N) - stage(N)) / (floor(2N) - floor(N))``,
the rate a long run settles at.

With ``--steps`` it prints instead where a case's CPU time goes: ``process_case``
on each case in one process (after one warm-up pass, with the workers'
memory setting), each step's cumulative time from ``cProfile``, in ms per case.

    python benchmarks/bench_windows.py [--cases 4] [--hours 3] [--workers 2 16] [--steps]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def inner(mode: str, case_dir: Path, n: int, workers: int) -> None:

    from vitalssl.config import from_dict
    from vitalssl.data.config import WindowConfig
    from vitalssl.data.sources import LocalSource
    from vitalssl.data.windows import build_split

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    w = {**params["windows"], "num_workers": workers}
    cfg = from_dict(WindowConfig, w, "windows")
    ids = sorted(int(p.stem) for p in case_dir.glob("*.vital"))[:n]
    t0 = time.perf_counter()
    windows = 0
    if mode == "floor":
        from vitalssl.data.casepool import new_pool
        with new_pool(workers) as pool:  # the stage's own pool, so both keep freed memory alike
            windows = sum(pool.map(_read_floor, [(case_dir / f"{c}.vital", cfg) for c in ids]))
    else:
        with tempfile.TemporaryDirectory() as out:
            rep = build_split(LocalSource("local", case_dir, None), [(c, None) for c in ids], cfg, Path(out),
                              "bench", progress=False)
            windows = rep["windows_total"]
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "cases": len(ids), "windows": windows, "rss_mib": _peak_rss_mib()}))


def _read_floor(args) -> int:
    """Read one case's two waveforms at the native rate, as the stage must; returns its window count."""
    import vitaldb
    path, cfg = args
    vf = vitaldb.VitalFile(str(path), track_names=[cfg.ppg_track, cfg.ecg_track])
    x = vf.get_track_samples(cfg.ppg_track, 1 / cfg.native_srate)
    y = vf.get_track_samples(cfg.ecg_track, 1 / cfg.native_srate)
    return int(min(len(x), len(y)) / cfg.native_srate // cfg.stride_s)


STEPS = [  # (label, module file, function): cumulative CPU of each call
    ("read_case: inflate, checks, parse, samples", "reader.py", "read_case"),
    ("  of which the inflate (isal)", None, "decompress"),
    ("fill_gaps (and the float64 copy)", "dsp.py", "fill_gaps"),
    ("resample to 125 Hz", "dsp.py", "resample"),
    ("band-pass at 125 Hz", "dsp.py", "bandpass"),
    ("gate: raw measures (missing, flat, clipping)", "quality.py", "raw_measures"),
    ("gate: all measures (raw, amplitude, beats, pairs)", "quality.py", "case_measures"),
    ("z-score of kept windows", "windows.py", "zscore"),
    ("CSV cells", "windows.py", "_column"),
    ("gate figure candidates", "gatefigure.py", "case_examples"),
    ("process_case (everything)", "windows.py", "process_case"),
]


def steps(case_dir: Path, n: int) -> None:
    """Where a case's CPU time goes (see the module docstring)."""
    import cProfile
    import pstats

    from vitalssl.config import from_dict
    from vitalssl.data.casepool import keep_freed_memory
    from vitalssl.data.config import WindowConfig
    from vitalssl.data.windows import process_case

    keep_freed_memory()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = from_dict(WindowConfig, params["windows"], "windows")
    paths = sorted(case_dir.glob("*.vital"), key=lambda p: int(p.stem))[:n]
    for p in paths:  # warm-up: page cache, imports, the heap
        process_case(p, int(p.stem), 0, cfg)
    prof = cProfile.Profile(time.process_time)  # CPU, not wall time: other jobs may share the cores
    t0 = time.process_time()
    prof.enable()
    for p in paths:
        process_case(p, int(p.stem), 0, cfg)
    prof.disable()
    cpu = (time.process_time() - t0) / len(paths) * 1000
    stats = pstats.Stats(prof).stats
    t0 = time.process_time()
    for p in paths:
        _read_floor((p, cfg))
    floor = (time.process_time() - t0) / len(paths) * 1000
    print(f"CPU ms per case, {len(paths)} cases, one process (cProfile cumulative):")
    print(f"  {'floor: vitaldb reads the two waveforms (no profiler)':52s} {floor:7.0f}")
    for label, file, name in STEPS:
        ms = sum(v[3] for (f, _, fn), v in stats.items()
                 if ((fn == name and f.endswith(file)) if file else name in fn))
        print(f"  {label:52s} {ms / len(paths) * 1000:7.0f}")
    print(f"  {'process_case under the profiler, all of it':52s} {cpu:7.0f}")
    t0 = time.process_time()
    for p in paths:
        process_case(p, int(p.stem), 0, cfg)
    bare = (time.process_time() - t0) / len(paths) * 1000
    print(f"  {'process_case without the profiler':52s} {bare:7.0f}  = {bare / floor:.2f}x the floor")
    from vitalssl.data.reader import read_case
    t0 = time.process_time()
    for p in paths:
        read_case(p, int(p.stem), cfg.ppg_track, cfg.ecg_track, dict(cfg.label_tracks), cfg.native_srate)
    own = (time.process_time() - t0) / len(paths) * 1000
    print(f"  {'read_case without the profiler':52s} {own:7.0f}  (the profiler slows its packet loop)")


def run(mode, case_dir, n, workers) -> dict:
    out = subprocess.run([sys.executable, __file__, "--inner", mode, str(case_dir), str(n), str(workers)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--workers", type=int, nargs="+", default=sorted({2, os.cpu_count() or 1}))
    ap.add_argument("--steps", action="store_true", help="where a case's CPU time goes, in one process")
    ap.add_argument("--inner", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        mode, d, n, w = args.inner
        inner(mode, Path(d), int(n), int(w))
        return

    from vitalssl.config import from_dict
    from vitalssl.data.config import DemoConfig
    from vitalssl.data.demo import generate_demo

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    secs = int(args.hours * 3600)
    print(f"os.cpu_count() = {os.cpu_count()}")
    n_gen = args.cases if args.steps else 2 * args.cases
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        dcfg = from_dict(DemoConfig, {**params["demo"], "n_cases": max(n_gen, 3), "n_subjects": max(n_gen, 3),
                                      "duration_s": [secs, secs]}, "demo")
        t0 = time.perf_counter()
        generate_demo(dcfg, d, progress=False)
        size = sum(p.stat().st_size for p in d.glob("*.vital")) / max(n_gen, 3) / 2**20
        print(f"generated {max(n_gen, 3)} cases of {args.hours:g} h ({size:.0f} MiB .vital each) "
              f"in {time.perf_counter() - t0:.0f} s")
        if args.steps:
            steps(d, args.cases)
            return
        print(f"{'workers':>7} {'cases':>5} {'what':>6} {'s':>7} {'cases/s':>8} {'windows/s':>10} {'peak RSS MiB':>13}")
        for w in args.workers:
            rows = []
            for n in (args.cases, 2 * args.cases):
                floor = run("floor", d, n, w)
                stage = run("stage", d, n, w)
                rows.append((floor, stage))
                for name, r in (("floor", floor), ("stage", stage)):
                    print(f"{w:>7} {n:>5} {name:>6} {r['seconds']:7.1f} {r['cases'] / r['seconds']:8.3f} "
                          f"{r['windows'] / r['seconds']:10.0f} {r['rss_mib']:13.0f}")
                print(f"{w:>7} {n:>5}  stage / floor time: {stage['seconds'] / floor['seconds']:.2f}")
            (f1, s1), (f2, s2) = rows
            print(f"{w:>7} cases {args.cases + 1}-{2 * args.cases} alone (fixed costs out): stage / floor time: "
                  f"{(s2['seconds'] - s1['seconds']) / (f2['seconds'] - f1['seconds']):.2f}")
            print(f"{w:>7} peak RSS of the stage, {2 * args.cases} vs {args.cases} cases: "
                  f"{s2['rss_mib'] / s1['rss_mib']:.2f}x")


if __name__ == "__main__":
    main()
