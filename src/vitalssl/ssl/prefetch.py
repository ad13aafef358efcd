"""Read the next batches in a background thread while the device trains on the current one.

A batch is a gather of random windows from the memory-mapped window file: page faults
and a copy, on the training process's main thread unless something overlaps it. The
thread below runs the loader's iterator ahead by ``depth`` batches; on CUDA it also
pins each batch, so the copy to the device is asynchronous (``non_blocking``) and the
host goes on launching the step.

Only reading moves to the thread. The iterator is created by the caller on the main
thread (a ``DataLoader`` iterator draws its base seed from the global RNG, which the
main thread's dropout also uses), and every random draw of the step (masks, dropout)
stays on the main thread in batch order, so a run draws the same numbers with or
without the thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import torch

_DONE = object()


def pin_for(device: torch.device) -> bool:
    """Whether host batches bound for ``device`` are pinned first (CUDA only: pinning is a CUDA facility)."""
    return device.type == "cuda"


class Prefetcher:
    """Iterate ``batches`` (host tensors) as tensors on ``device``, reading up to ``depth`` ahead in a thread.

    An exception in the thread is raised by the consumer at the batch where it happened.
    Use as a context manager (or call :meth:`close`) so the thread stops when the consumer
    stops early.
    """

    def __init__(self, batches: Iterator[torch.Tensor], device: torch.device, depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.device, self.pin = device, pin_for(device)
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(batches,), name="batch-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, batches) -> None:
        try:
            for x in batches:
                if self.pin:
                    x = x.pin_memory()
                if not self._put(x):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)
            return
        self._put(_DONE)

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        item = self._q.get()
        if item is _DONE:
            self._q.put(_DONE)  # later calls end too
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item.to(self.device, non_blocking=self.pin)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
