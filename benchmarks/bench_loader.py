"""The training loader alone on a window file larger than memory: uniform vs block shuffling.

Writes a window file of ``--gib`` GiB (float32 [N, 2, 1250]; the content is one random
block repeated, which does not matter to reading), drops the page cache before each
sampler (needs root; says so when it cannot) and reads batches through the training's
own path (``DataLoader`` over the sampler, :class:`~vitalssl.ssl.prefetch.Prefetcher`)
for ``--seconds`` each. Prints windows/s, MB/s of windows delivered and MB/s actually
read from disk (``/proc/self/io``). ``random+madv`` is the uniform sampler with the memory
map advised ``MADV_RANDOM`` (no kernel read-ahead around each faulting page). The file is
deleted at the end unless ``--keep``.

Usage:
    python benchmarks/bench_loader.py [--gib 32] [--dir /tmp] [--batch-size 2048] [--seconds 60]
                                      [--block 256] [--buffer 8192] [--keep]
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

WINDOW_BYTES = 2 * 1250 * 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=32.0)
    ap.add_argument("--dir", default="/tmp", help="where the file is written (it is removed afterwards)")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--seconds", type=float, default=60.0, help="reading time per sampler")
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--buffer", type=int, default=8192)
    ap.add_argument("--samplers", nargs="+", default=["random", "random+madv", "block"],
                    choices=["random", "random+madv", "block"])
    ap.add_argument("--keep", action="store_true", help="keep the file (for a second run)")
    args = ap.parse_args()

    from vitalssl.windowfile import BlockShuffleBatchSampler, EpochBatchSampler, WindowDataset

    d = Path(args.dir) / "vitalssl_bench_loader"
    path = d / "train_windows.npy"
    n = int(args.gib * 2**30 // WINDOW_BYTES)
    free = shutil.disk_usage(args.dir).free
    print(f"file {path}: {n:,} windows, {n * WINDOW_BYTES / 2**30:.1f} GiB; disk free before {free / 2**30:.1f} GiB; "
          f"memory {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB", flush=True)
    try:
        if not (path.exists() and np.load(path, mmap_mode="r").shape[0] == n):
            write_file(path, n)
        samplers = {"random": EpochBatchSampler(n, args.batch_size, 0),
                    "random+madv": EpochBatchSampler(n, args.batch_size, 0),
                    "block": BlockShuffleBatchSampler(n, args.batch_size, 0, block=args.block, buffer=args.buffer)}
        print(f"batch {args.batch_size}; block sampler: blocks of {args.block} windows, buffer {args.buffer}")
        print("| sampler | page cache dropped | windows/s | delivered MB/s | read from disk MB/s | batches |")
        print("|---|---|---|---|---|---|")
        for name in args.samplers:
            ds = WindowDataset(path, ("PPG", "ECG"))
            if name == "random+madv":
                ds.x._mmap.madvise(mmap.MADV_RANDOM)
            dropped = drop_page_cache()
            k, secs, disk = read_for(ds, samplers[name], args.seconds)
            w = k * args.batch_size
            print(f"| {name} | {'yes' if dropped else 'NO'} | {w / secs:,.0f} | {w * WINDOW_BYTES / secs / 1e6:,.0f} | "
                  f"{disk / secs / 1e6:,.0f} | {k} |", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


def write_file(path: Path, n: int) -> None:
    from vitalssl.windowfile import NpyAppender

    path.parent.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng(0).standard_normal((6400, 2, 1250)).astype(np.float32)  # 64 MB
    t0 = time.perf_counter()
    app = NpyAppender(path, (2, 1250))
    try:
        for i in range(0, n, len(block)):
            app.append(block[:min(len(block), n - i)])
        app.close()
    except BaseException:
        app.abort()
        raise
    os.sync()
    print(f"wrote it in {time.perf_counter() - t0:.0f} s", flush=True)


def drop_page_cache() -> bool:
    """Empty the kernel's page cache so the first reads come from disk; False without permission."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no read_bytes")


def read_for(ds, sampler, seconds: float) -> tuple[int, float, int]:
    """Batches read in about ``seconds`` through the training's loader path; (batches, seconds, disk bytes)."""
    from vitalssl.ssl.prefetch import Prefetcher

    loader = torch.utils.data.DataLoader(ds, sampler=sampler, batch_size=None)
    k, r0, t0 = 0, read_bytes(), time.perf_counter()
    with Prefetcher(iter(loader), torch.device("cpu")) as batches:
        for _ in batches:
            k += 1
            if time.perf_counter() - t0 >= seconds:
                break
    return k, time.perf_counter() - t0, read_bytes() - r0


if __name__ == "__main__":
    main()
