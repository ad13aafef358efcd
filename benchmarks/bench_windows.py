"""build-windows throughput against the floor of just reading the .vital files.

Generates long demo cases (default: 3 cases of 3 h, then 6 to check that memory
stays flat), then in fresh processes measures
  floor : vitaldb.VitalFile + both waveforms at the native rate, per case
  stage : the whole build-windows path (gzip check, read, filter, resample, gate,
          normalise, write) with the params' num_workers
and prints cases/s, windows/s and peak RSS (process + its workers) for each.

    python benchmarks/bench_windows.py [--cases 3] [--hours 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
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
    import numpy as np
    import vitaldb

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
        for c in ids:
            vf = vitaldb.VitalFile(str(case_dir / f"{c}.vital"), track_names=[cfg.ppg_track, cfg.ecg_track])
            x = vf.get_track_samples(cfg.ppg_track, 1 / 500)
            y = vf.get_track_samples(cfg.ecg_track, 1 / 500)
            windows += int(min(len(x), len(y)) / 500 // cfg.stride_s)
            del vf, x, y
            np.zeros(1)
    else:
        with tempfile.TemporaryDirectory() as out:
            rep = build_split(LocalSource("local", case_dir, None), [(c, None) for c in ids], cfg, Path(out),
                              "bench", progress=False)
            windows = rep["windows_total"]
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "cases": len(ids), "windows": windows, "rss_mib": _peak_rss_mib()}))


def run(mode, case_dir, n, workers) -> dict:
    out = subprocess.run([sys.executable, __file__, "--inner", mode, str(case_dir), str(n), str(workers)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--workers", type=int, default=2)
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
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        dcfg = from_dict(DemoConfig, {**params["demo"], "n_cases": 2 * args.cases, "n_subjects": 2 * args.cases,
                                      "duration_s": [secs, secs]}, "demo")
        t0 = time.perf_counter()
        generate_demo(dcfg, d, progress=False)
        size = sum(p.stat().st_size for p in d.glob("*.vital")) / 2 / args.cases / 2**20
        print(f"generated {2 * args.cases} cases of {args.hours:g} h ({size:.0f} MiB .vital each) "
              f"in {time.perf_counter() - t0:.0f} s")
        rows = []
        for n in (args.cases, 2 * args.cases):
            floor = run("floor", d, n, 1)
            stage = run("stage", d, n, args.workers)
            rows.append((n, floor, stage))
        print(f"{'cases':>5} {'what':>6} {'s':>7} {'cases/s':>8} {'windows/s':>10} {'peak RSS MiB':>13}")
        for n, floor, stage in rows:
            for name, r in (("floor", floor), ("stage", stage)):
                print(f"{n:>5} {name:>6} {r['seconds']:7.1f} {r['cases'] / r['seconds']:8.3f} "
                      f"{r['windows'] / r['seconds']:10.0f} {r['rss_mib']:13.0f}")
            print(f"{n:>5}  stage / floor time: {stage['seconds'] / floor['seconds']:.2f} "
                  f"(stage with {args.workers} worker(s), floor in 1 process)")
        print(f"peak RSS of the stage, {2 * args.cases} vs {args.cases} cases: "
              f"{rows[1][2]['rss_mib'] / rows[0][2]['rss_mib']:.2f}x")


if __name__ == "__main__":
    main()
