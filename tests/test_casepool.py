"""Cases in worker processes: results and errors survive pickling, a dead or stuck worker fails only its case."""

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import clean_case, write_case
from dataclasses import replace
from pathlib import Path
from vitalssl.data.casepool import CaseFailure, run_cases
from vitalssl.data.reader import CaseError
from vitalssl.data.sources import LocalSource
from vitalssl.data.windows import CaseWindows, build_split, process_case


def test_case_error_round_trips_through_pickle():
    e = pickle.loads(pickle.dumps(CaseError(7, "missing_track", "track 'SNUADC/ECG_II' not in 7.vital")))
    assert (e.caseid, e.reason, e.detail) == (7, "missing_track", "track 'SNUADC/ECG_II' not in 7.vital")
    assert str(e) == "case 7: missing_track: track 'SNUADC/ECG_II' not in 7.vital"


def test_case_results_round_trip_through_pickle(tmp_path, wcfg):
    write_case(tmp_path / "1.vital", 1, *clean_case(40), 40)
    res = process_case(tmp_path / "1.vital", 1, "11", wcfg)
    back = pickle.loads(pickle.dumps(res))
    np.testing.assert_array_equal(back.windows, res.windows)
    assert back.meta_rows == res.meta_rows and back.decision_rows == res.decision_rows
    assert {k: v.tolist() for k, v in back.fails.items()} == {k: v.tolist() for k, v in res.fails.items()}
    assert len(back.examples) == len(res.examples) > 0
    failed = CaseWindows.failed(3, CaseError(3, "unreadable", "3.vital is not a valid gzip stream"), 1250)
    assert pickle.loads(pickle.dumps(failed)).error.reason == "unreadable"
    assert pickle.loads(pickle.dumps(CaseFailure("timeout", "x"))) == CaseFailure("timeout", "x")


def _square(x):
    if x == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if x == "hang":
        time.sleep(60)
    if x == "hang_in_c":  # the soft timer cannot fire: only the watchdog can end this
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_run_cases_yields_in_order_and_fails_only_the_bad_case(workers):
    jobs = [1, 2, "die", 3, "hang", 4, 5]
    t0 = time.monotonic()
    out = list(run_cases(_square, jobs, workers, timeout_s=1.0))
    assert time.monotonic() - t0 < 20
    assert [i for i, _ in out] == list(range(len(jobs)))
    res = [r for _, r in out]
    assert res[:2] == [1, 4] and res[3] == 9 and res[5:] == [16, 25]
    assert res[2].reason == "worker_died" and res[4].reason == "timeout" and "case_timeout_s" in res[4].detail


def test_watchdog_ends_a_case_stuck_where_the_timer_cannot_reach():
    out = dict(run_cases(_square, [2, "hang_in_c", 3], 2, timeout_s=0.5))
    assert out[0] == 4 and out[2] == 9
    assert out[1].reason == "timeout" and "watchdog" in out[1].detail


class KillingSource(LocalSource):
    """A local source whose worker dies (as under the out-of-memory killer) when asked for one case."""

    def __init__(self, directory, kill_case):
        super().__init__("local", directory, None)
        self.kill_case = kill_case

    def case_path(self, caseid):
        if caseid == self.kill_case:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().case_path(caseid)


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_worker_fails_only_its_case(tmp_path, wcfg, workers):
    d = tmp_path / "local"
    d.mkdir()
    for c in (1, 2, 3, 4):
        write_case(d / f"{c}.vital", c, *clean_case(40, seed=c), 40)
    report = build_split(KillingSource(d, 2), [(c, None) for c in (1, 2, 3, 4)], replace(wcfg, num_workers=workers),
                         tmp_path / "out", "train", progress=False)
    assert report["cases_read"] == 3 and report["cases_failed_by_reason"] == {"worker_died": 1}
    assert report["failed_cases"][0]["caseid"] == 2
    assert np.load(tmp_path / "out" / "train_windows.npy").shape == (12, 2, 1250)
    assert not list((tmp_path / "out").glob("*.tmp*"))


class SlowSource(LocalSource):
    """A local source that never finishes handing over one case (as a stalled download would)."""

    def __init__(self, directory, slow_case):
        super().__init__("local", directory, None)
        self.slow_case = slow_case

    def case_path(self, caseid):
        if caseid == self.slow_case:
            time.sleep(60)
        return super().case_path(caseid)


@pytest.mark.parametrize("workers", [1, 2])
def test_case_over_its_time_limit_fails_only_itself(tmp_path, wcfg, workers):
    d = tmp_path / "local"
    d.mkdir()
    for c in (1, 2, 3):
        write_case(d / f"{c}.vital", c, *clean_case(40, seed=c), 40)
    t0 = time.monotonic()
    report = build_split(SlowSource(d, 1), [(c, None) for c in (1, 2, 3)],
                         replace(wcfg, num_workers=workers, case_timeout_s=1.5), tmp_path / "out", "val",
                         progress=False)
    assert time.monotonic() - t0 < 30
    assert report["failed_cases"] == [{"caseid": 1, "reason": "timeout", "detail": report["failed_cases"][0]["detail"]}]
    assert report["cases_read"] == 2 and np.load(tmp_path / "out" / "val_windows.npy").shape == (8, 2, 1250)


class FaultySource(LocalSource):
    """A local source that raises an error nothing foresaw for one case."""

    def case_path(self, caseid):
        if caseid == 2:
            raise ValueError("no such volume")
        return super().case_path(caseid)


def test_unforeseen_error_fails_only_its_case_and_is_named(tmp_path, wcfg):
    d = tmp_path / "local"
    d.mkdir()
    for c in (1, 2):
        write_case(d / f"{c}.vital", c, *clean_case(40, seed=c), 40)
    report = build_split(FaultySource("local", d, None), [(1, None), (2, None)], replace(wcfg, num_workers=2),
                         tmp_path / "out", "train", progress=False)
    assert report["failed_cases"] == [{"caseid": 2, "reason": "processing_error",
                                       "detail": "ValueError: no such volume"}]
    assert report["windows_kept"] == 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_workers_end_when_their_parent_is_killed(tmp_path):
    """A stage killed with SIGKILL runs no clean-up; its workers must not live on as orphans."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / 'src')!r})\n"
        "from vitalssl.data.casepool import new_pool\n"
        "pool = new_pool(2)\n"
        "futures = [pool.submit(time.sleep, 60) for _ in range(2)]\n"
        "time.sleep(1.0)\n"
        "print(' '.join(str(p) for p in pool._processes), flush=True)\n"
        "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie is reaped by init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _worker_state(x):
    if x == "sleep":
        time.sleep(30)
    return os.getpid(), signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_workers_leave_ctrl_c_to_the_parent_which_ends_them_when_it_stops_early():
    """Ctrl-C reaches the whole process group; the workers ignore it, and the parent, interrupted while cases are
    still in flight, ends their workers at once rather than waiting for them."""
    gen = run_cases(_worker_state, [0, "sleep", "sleep"], 2, timeout_s=60.0)
    i, (pid, ignores) = next(gen)
    assert i == 0 and ignores
    time.sleep(0.5)  # both sleeping cases are in flight
    workers = [c.pid for c in __import__("multiprocessing").active_children()]
    assert len(workers) == 2
    t0 = time.monotonic()
    gen.close()  # what a KeyboardInterrupt in the consumer does to the generator
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers) and time.monotonic() - t0 < 5
