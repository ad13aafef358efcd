"""One seed derivation for every random stream of a run.

Each stream (the epoch's shuffle, its masks, its dropout, the fixed validation
masks) gets its own seed from (run seed, stream, epoch, rank) through NumPy's
``SeedSequence``, so the streams are independent and a resumed epoch draws
exactly what an uninterrupted one would.
"""

from __future__ import annotations

import zlib

import numpy as np

SHUFFLE, MASK, DROPOUT, VAL_MASK = 0, 1, 2, 3  # stream ids of pretraining
EVAL_MASK, SCALE_FIT_MASK, BOOTSTRAP, RANDOM_ENCODER = 4, 5, 6, 7  # stream ids of the evaluation
LABEL_SUBJECTS, LABEL_TRAIN = 8, 9  # stream ids of the label-efficiency runs


def derive_seed(seed: int, stream: int, epoch: int = 0, rank: int = 0) -> int:
    """A 63-bit seed for ``stream`` of ``epoch`` on ``rank`` of a run seeded with ``seed``."""
    words = np.random.SeedSequence([seed % 2**63, stream, epoch, rank]).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 31 | int(words[1]) >> 1


def name_seed(seed: int, stream: int, name: str, rank: int = 0) -> int:
    """:func:`derive_seed` keyed by a task's name, not its place in a list: adding, removing or
    reordering tasks moves no other task's draws (bootstrap replicates, training order)."""
    return derive_seed(seed, stream, zlib.crc32(name.encode()), rank)
