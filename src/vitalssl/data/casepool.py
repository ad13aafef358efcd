"""Run one function over many cases in worker processes, in case order, past dead and stuck workers.

A case can kill its worker (a segfault in a reader, the out-of-memory killer)
or never finish. ``concurrent.futures.ProcessPoolExecutor`` reports a dead
worker as ``BrokenProcessPool`` on every case then in flight (where
``multiprocessing.Pool`` waits forever), so:

* a case in flight alone when its pool broke is the culprit: it fails with
  reason ``worker_died``;
* cases in flight together with others when the pool broke are re-run one at a
  time in a fresh pool, which names the culprit and lets the others finish;
* a case over ``timeout_s`` is stopped inside its worker (a ``SIGALRM`` timer
  raises :class:`CaseTimeout` between Python bytecodes) and fails with reason
  ``timeout``; a case stuck inside C code, where that cannot run, is ended at
  twice ``timeout_s`` by ``faulthandler``'s watchdog thread, which exits the
  worker; the parent then sees the broken pool and reports ``timeout``.

At most ``workers`` cases are in flight, so a case starts when it is
submitted and the parent can tell how long it has run. Results come back in
case order; finished cases waiting for an earlier slow one are held, at most
``4 * workers`` of them.
"""

from __future__ import annotations

import ctypes
import faulthandler
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

HARD_TIMEOUT_FACTOR = 2.0  # the watchdog ends a worker at this multiple of timeout_s


class CaseTimeout(BaseException):
    """Raised inside a worker when its case passes ``timeout_s``.

    A ``BaseException`` so that a case's own ``except Exception`` cannot swallow it.
    """


@dataclass(frozen=True)
class CaseFailure:
    """A case that ended its worker or ran out of time; ``reason`` is ``timeout`` or ``worker_died``."""
    reason: str
    detail: str


def _on_alarm(signum, frame):
    raise CaseTimeout()


def _watchdog_file():
    """Where the watchdog writes the stuck worker's stack: the process's real stderr.

    ``sys.stderr`` may be a stand-in without a file descriptor (pytest's capture, a
    notebook), which ``faulthandler`` cannot use.
    """
    for f in (sys.__stderr__, sys.stderr):
        try:
            f.fileno()
            return f
        except (AttributeError, ValueError, OSError):
            continue
    return open(os.devnull, "w")


def _guarded(fn: Callable, job, timeout_s: float):
    """``fn(job)`` in a worker, under the soft timer and the hard watchdog."""
    signal.signal(signal.SIGALRM, _on_alarm)
    faulthandler.dump_traceback_later(HARD_TIMEOUT_FACTOR * timeout_s, exit=True, file=_watchdog_file())
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return fn(job)
    except CaseTimeout:
        return CaseFailure("timeout", f"still running after {timeout_s:g} s (param windows.case_timeout_s)")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_FREED_BYTES = 1 << 30


def keep_freed_memory() -> None:
    """In a worker: have glibc's ``malloc`` keep freed blocks of up to 1 GiB for the next case.

    A case allocates arrays of tens of MB (a 3-h waveform is 5.4 M samples). By
    default each is a fresh ``mmap`` whose pages the kernel faults in and zeroes,
    and gives back on ``free``: about 23,000 page faults and 100-600 ms of system
    time per 3-h case, against about 500 faults and 20 ms when the blocks are kept
    (measured with ``getrusage`` on the 3-h demo cases). The heap then stays at
    the largest case's peak (about 600 MB for 3 h, 1.3 GB for 12 h), so memory
    does not grow with the number of cases. A C library without ``mallopt``
    (macOS, Windows), or a glibc that refuses so high a threshold, keeps its
    default: the trim threshold is only raised once the first call took.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return
    if mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES) == 1:
        mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """In a worker: on Linux, have the kernel kill it when the process that started it ends.

    A stage killed with SIGTERM or SIGKILL runs no clean-up, and its workers
    would live on (with their memory) as orphans. Elsewhere nothing changes.
    """
    try:
        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError, TypeError):
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent ended before the call above took
        os._exit(1)


_blas_limit = None


def _worker_setup(parent_pid: int) -> None:
    """Each worker: leave Ctrl-C to the parent, end with its parent (:func:`die_with_parent`), keep freed
    memory (:func:`keep_freed_memory`) and run BLAS on one thread.

    The workers already fill the cores; a matrix product (the resampler's) that
    started a BLAS thread per core in every worker would oversubscribe them.
    """
    global _blas_limit
    # Ctrl-C reaches the whole process group: the parent alone handles it (it ends the workers); a worker
    # interrupted while sending its result would leave the pool's result thread waiting for the rest forever
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import numpy  # noqa: F401  (loads numpy's BLAS, so that the limit reaches it)
    from threadpoolctl import threadpool_limits
    die_with_parent(parent_pid)
    keep_freed_memory()
    _blas_limit = threadpool_limits(limits=1, user_api="blas")


def new_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers`` processes, each set up by :func:`_worker_setup`."""
    # fork where there is one: the parent holds no torch or CUDA state, and spawn would
    # re-import scipy, pandas and vitaldb in every worker (seconds per pool)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                               initializer=_worker_setup, initargs=(os.getpid(),))


def run_cases(fn: Callable, jobs: Sequence, workers: int, timeout_s: float) -> Iterator[tuple[int, object]]:
    """Yield ``(i, fn(jobs[i]))`` for ``i = 0, 1, ...`` in order, or ``(i, CaseFailure)`` for a case that failed.

    ``fn`` must be picklable (a module-level function) and handle its own
    expected errors; an exception it raises propagates to the caller.
    """
    n = len(jobs)
    hard_s = HARD_TIMEOUT_FACTOR * timeout_s
    pending = deque(range(n))   # not yet submitted
    suspects: deque = deque()   # in flight when a pool broke: re-run one at a time
    done: dict = {}             # finished, waiting for an earlier case to be yielded
    running: dict = {}          # future -> (case index, start time)
    next_out, pool = 0, None
    try:
        while next_out < n:
            if pool is None:
                pool = new_pool(workers)
            if suspects:
                if not running:
                    i = suspects.popleft()
                    running[pool.submit(_guarded, fn, jobs[i], timeout_s)] = (i, time.monotonic())
            else:
                while pending and len(running) < workers and len(done) < 4 * workers:
                    i = pending.popleft()
                    running[pool.submit(_guarded, fn, jobs[i], timeout_s)] = (i, time.monotonic())
            if not running:  # cannot happen: the next case to yield is always in flight, held or queued
                raise RuntimeError(f"case pool stalled before case {next_out} of {n}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            alone = len(running) == 1
            broken = []
            for f in finished:
                i, t0 = running.pop(f)
                try:
                    done[i] = f.result()
                except BrokenProcessPool:
                    broken.append((i, t0))
            if broken:
                # a broken pool fails every case in flight: collect them all before starting a new one
                for f in wait(running).done:
                    i, t0 = running.pop(f)
                    try:
                        done[i] = f.result()
                    except BrokenProcessPool:
                        broken.append((i, t0))
                pool.shutdown(wait=True)
                pool = None
                now = time.monotonic()
                for i, t0 in sorted(broken):
                    ran = now - t0
                    if ran >= 0.95 * hard_s:
                        done[i] = CaseFailure("timeout", f"stuck for {ran:.0f} s, ended by the watchdog at "
                                              f"{hard_s:g} s (param windows.case_timeout_s)")
                    elif alone:
                        done[i] = CaseFailure("worker_died", "its worker process died (killed, out of memory "
                                              "or crashed in native code)")
                    else:
                        suspects.append(i)
            while next_out in done:
                yield next_out, done.pop(next_out)
                next_out += 1
    finally:
        if pool is not None:
            # on an error or Ctrl-C in the caller, cases in flight are dropped, not waited for: their workers are
            # ended, so that the pool's result thread, which may be inside reading a result, sees the pipe close
            workers = list((getattr(pool, "_processes", None) or {}).values()) if running else []
            pool.shutdown(wait=not running, cancel_futures=True)
            for w in workers:
                w.kill()
