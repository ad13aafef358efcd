"""Reading one case: vitaldb against read_case before and after the one-pass reader, in ms per case.

Two generated 3-h cases:
  packed   : a demo case as the pipeline writes it (``vitaldb``'s ``to_vital``: one record per wave
             run, numbers every 2 s)
  unpacked : the same signals laid out as VitalRecorder writes VitalDB files, one record per track
             per second, with 10 more tracks (4 waves, 6 numbers) that are not read
Rows:
  inflate        : isal inflate of the whole file, the floor under any reader that checks the file
  vitaldb        : vitaldb.VitalFile(path, track_names) + get_track_samples of both waves (1/500 s)
                   and the numeric label tracks (1 s), what read_case returns
  read_case old  : the two-pass reader (zlib check, then vitaldb) at commit OLD_REV
  read_case new  : the one-pass reader (vitalssl.data.vitalfile)
Each is the best of --repeat runs in this process (files in the page cache).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_reader.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import mmap
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the recorder-style writer the tests use

OLD_REV = "7411589"  # the last commit with the two-pass read_case
HOURS = 3.0


def packed_case(out: Path) -> tuple[Path, tuple]:
    """One demo case of 3 h, written as generate_demo writes each case (it makes at least 3)."""
    from vitalssl.config import from_dict
    from vitalssl.data.config import DemoConfig
    from vitalssl.data.demo import demo_caseids, synth_case, write_vital

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    secs = int(HOURS * 3600)
    cfg = from_dict(DemoConfig, {**params["demo"], "n_cases": 3, "n_subjects": 3, "duration_s": [secs, secs]},
                    "demo")
    caseid = demo_caseids(cfg)[0]
    ppg, ecg, numerics, _, duration = synth_case(caseid, cfg)
    path = out / "packed" / f"{caseid}.vital"
    path.parent.mkdir()
    write_vital(path, caseid, ppg, ecg, numerics, duration)
    return path, (ppg, ecg, numerics, duration)


def unpacked_case(out: Path, signals: tuple) -> Path:
    """The same signals as a recorder writes them: interleaved 1-s records of 16 tracks on 4 devices."""
    from vital_format import VitalBuilder

    from vitalssl.data.demo import DTSTART0, NUMERIC_TRACKS

    ppg, ecg, (tn, values), duration = signals
    rng = np.random.default_rng(0)
    t0, secs = DTSTART0, int(duration)
    b = VitalBuilder(t0, t0 + duration)
    for did, dev in enumerate(("SNUADC", "Solar8000", "BIS", "Primus"), 1):
        b.device(did, dev)
    waves = {1: ("PLETH", 1, 500.0, ppg), 2: ("ECG_II", 1, 500.0, ecg), 3: ("ART", 1, 500.0, None),
             4: ("ECG_V5", 1, 500.0, None), 5: ("CO2", 4, 62.5, None), 6: ("AWP", 4, 62.5, None)}
    for tid, (name, did, srate, _) in waves.items():
        b.track(tid, name, srate=srate, did=did)
    numbers = {10 + i: (track, values[key]) for i, (key, track) in enumerate(NUMERIC_TRACKS.items())}
    extra = {20: "Solar8000/NIBP_SBP", 21: "Solar8000/RR", 22: "Solar8000/BT", 23: "Solar8000/ETCO2",
             24: "Primus/MAC", 25: "BIS/SQI"}
    dids = {"SNUADC": 1, "Solar8000": 2, "BIS": 3, "Primus": 4}
    for tid, name in [(t, n) for t, (n, _) in numbers.items()] + list(extra.items()):
        dev, tname = name.split("/")
        b.track(tid, tname, ttype=2, did=dids[dev])
    noise = rng.standard_normal(500 * 64).astype(np.float32)
    for k in range(secs):
        t = t0 + k
        for tid, (_, _, srate, x) in waves.items():
            m = int(srate * (k + 1)) - int(srate * k)
            vals = x[k * 500:(k + 1) * 500].astype(np.float32) if x is not None else noise[(k % 64) * 500:][:m]
            b.wave(tid, t, vals)
        if k % 2 == 0:
            for tid, (_, v) in numbers.items():
                b.number(tid, t + 0.5, float(v[k // 2]))
            for tid in (20, 21, 22, 23):
                b.number(tid, t + 0.5, 12.0 + k % 7)
        b.number(24, t + 0.25, 1.0).number(25, t + 0.75, 90.0)
    path = out / "unpacked" / "1.vital"
    path.parent.mkdir()
    return b.write(path)


def _old_reader():
    """read_case as it was at OLD_REV, loaded from git."""
    src = subprocess.run(["git", "show", f"{OLD_REV}:src/vitalssl/data/reader.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("old_reader", loader=None)
    mod = sys.modules["old_reader"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    exec(compile(src, "old_reader.py", "exec"), mod.__dict__)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import vitaldb
    from isal import isal_zlib

    from vitalssl.data.reader import read_case

    params = yaml.safe_load((ROOT / "params.yaml").read_text())["windows"]
    kw = dict(ppg_track=params["ppg_track"], ecg_track=params["ecg_track"], label_tracks=params["label_tracks"],
              native_srate=float(params["native_srate"]))
    names = [kw["ppg_track"], kw["ecg_track"], *kw["label_tracks"].values()]
    old = _old_reader()

    def inflate(path):
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            isal_zlib.decompressobj(wbits=31).decompress(m)

    def floor(path):
        vf = vitaldb.VitalFile(str(path), track_names=names)
        for name in names:
            vf.get_track_samples(name, 1 / kw["native_srate"] if name in names[:2] else 1.0)

    rows = {"inflate": inflate, "vitaldb": floor, "read_case old": lambda p: old.read_case(p, 1, **kw),
            "read_case new": lambda p: read_case(p, 1, **kw)}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        packed, signals = packed_case(Path(tmp))
        unpacked = unpacked_case(Path(tmp), signals)
        print(f"generated in {time.perf_counter() - t:.0f} s")
        new, ref = read_case(unpacked, 1, **kw), old.read_case(unpacked, 1, **kw)
        assert np.array_equal(new.ppg, ref.ppg, equal_nan=True) and np.array_equal(new.ecg, ref.ecg, equal_nan=True)
        cases = {"packed": packed, "unpacked": unpacked}
        for kind, path in cases.items():
            print(f"{kind}: {path.stat().st_size / 2**20:.1f} MiB file")
        print(f"{'ms per case':<15}" + "".join(f"{k:>10}" for k in cases))
        for row, fn in rows.items():
            ms = []
            for path in cases.values():
                best = float("inf")
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    fn(path)
                    best = min(best, time.perf_counter() - t)
                ms.append(1e3 * best)
            print(f"{row:<15}" + "".join(f"{m:10.0f}" for m in ms))


if __name__ == "__main__":
    main()
