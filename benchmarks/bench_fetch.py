"""Fetching cases from a local HTTP server in VitalDB's layout: cases/s, MB/s and peak memory by download workers.

The demo's files are served under many case ids (the server is :mod:`tests.vitaldb_server`, on
127.0.0.1), each fetched into an empty cache by ``fetch_cases`` (stream, check, sha256, rename,
manifest). Each row runs in a fresh process, so its peak RSS is its own; the 100- and 400-case rows
at the same workers show whether memory grows with the number of cases.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_fetch.py [--cases 100 400] [--workers 1 4 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test server


def one_run(demo: Path, cases: int, workers: int) -> dict:
    from vitaldb_server import VitalServer
    from vitalssl.data.config import DataConfig
    from vitalssl.data.download import fetch_cases

    base = [p.read_bytes() for p in sorted(demo.glob("*.vital"))]
    files = {c: base[c % len(base)] for c in range(1, cases + 1)}
    with VitalServer(files) as s, tempfile.TemporaryDirectory() as cache:
        cfg = DataConfig(source="vitaldb", local_dir="", clinical_csv=None, cache_dir=cache, download_retries=0,
                         demo_dir="", api_url=s.url, download_workers=workers, connect_timeout_s=10.0,
                         read_timeout_s=30.0, retry_backoff_s=1.0)
        t = time.perf_counter()
        out = fetch_cases(cfg, sorted(files), progress=False)
        dt = time.perf_counter() - t
    assert out["fetched"] == cases, out
    return {"cases": cases, "workers": workers, "s": dt, "cases_per_s": cases / dt,
            "mb_per_s": out["received"] / 1e6 / dt, "mb": out["received"] / 1e6,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # demo_dir cases workers: one row, in this process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(Path(args.one[0]), int(args.one[1]), int(args.one[2]))))
        return
    from vitalssl.config import from_dict
    from vitalssl.data.config import DemoConfig
    from vitalssl.data.demo import generate_demo

    with tempfile.TemporaryDirectory() as d:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        cfg = replace(from_dict(DemoConfig, params["demo"], "demo"), n_cases=8, n_subjects=8)
        generate_demo(cfg, Path(d), progress=False)
        sizes = [p.stat().st_size for p in Path(d).glob("*.vital")]
        print(f"{len(sizes)} demo files of {min(sizes) / 1e6:.2f}-{max(sizes) / 1e6:.2f} MB served under many ids")
        print("| workers | cases | MB | s | cases/s | MB/s | peak RSS MB |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for w in args.workers:
            for n in args.cases:
                r = subprocess.run([sys.executable, __file__, "--one", d, str(n), str(w)], capture_output=True,
                                   text=True, check=True)
                row = json.loads(r.stdout.strip().splitlines()[-1])
                print(f"| {w} | {n} | {row['mb']:.0f} | {row['s']:.2f} | {row['cases_per_s']:.0f} | "
                      f"{row['mb_per_s']:.0f} | {row['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
