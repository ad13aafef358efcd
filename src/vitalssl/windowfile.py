"""The window file: the one contract between the data wing and the model wing.

Window file format (one per split, e.g. ``train_windows.npy``)
---------------------------------------------------------------
``<split>_windows.npy``
    float32 ``[N, C, L]``: N windows, C = 2 channels in the order ``[PPG, ECG]``,
    L = 1250 samples (10 s at 125 Hz), each channel z-scored per window.
    Open it with ``numpy.load(path, mmap_mode="r")``: nothing is read until used.
``<split>_windows.meta.csv``
    one row per window, same order: ``caseid, subjectid, start_s`` (s from the
    case's first sample), the gate's measures per channel and the labels
    averaged over the window from the numeric tracks (``label_hr``,
    ``label_spo2``, ``label_map``, ``label_bis``; empty where absent).
``<split>_windows.json``
    channels, sampling rate, window length, count and the params that made it.

Writing streams blocks through :class:`NpyAppender`. Reading is
:class:`WindowDataset`: the ``.npy`` is memory-mapped (RAM does not grow with
the file) and the ``.json`` sidecar names the channels. The guide's ``train_windows.npz`` layout is read too; an
``.npz`` cannot be memory-mapped, so it is loaded into memory.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .atomic import tmp_path
from .seeding import SHUFFLE, derive_seed

CHANNELS = ("PPG", "ECG")  # the channel order every window file is written in


def resolve_data_file(data_dir: Path, name: str, flag: str) -> Path:
    """``data_dir/name``; if absent, the same stem with the other container (``.npy`` <-> ``.npz``)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir} does not exist (build windows first: dvc repro build-windows)")
    path = data_dir / name
    if path.exists():
        return path
    alt = path.with_suffix(".npz" if path.suffix == ".npy" else ".npy")
    if alt.exists():
        return alt
    raise FileNotFoundError(f"{flag} {name}: neither {path} nor {alt.name} exists in {data_dir}")


class WindowDataset(Dataset):
    """Windows ``[C_sel, L]`` of the chosen channels; ``dataset[list_of_indices]`` gives a batch.

    Opening checks the file once: a float32 ``[N, C, L]`` array that is whole on disk,
    channel names that match it, and finite values in every window that will be used
    (a streaming pass over the memory map). A file that fails is named with the flag
    that chose it and, for a non-finite value, the first bad window's index.
    """

    def __init__(self, path: Path, channels: tuple, limit: int | None = None, flag: str = "--train-file"):
        path = Path(path)
        self.x, names = _open_windows(path, flag)
        if self.x.ndim != 3 or self.x.dtype != np.float32:
            raise ValueError(f"{flag} {path}: expected float32 [N, C, L] windows, got {self.x.dtype} "
                             f"{list(self.x.shape)}")
        if len(names) != self.x.shape[1]:
            raise ValueError(f"{flag} {path}: {self.x.shape[1]} channels in the array but {len(names)} channel "
                             f"names ({', '.join(names)})")
        missing = [c for c in channels if c not in names]
        if missing:
            raise ValueError(f"--channels: {', '.join(missing)} not in {path.name} (has {', '.join(names)})")
        self.path, self.channel_names = path, names
        self.channel_idx = [names.index(c) for c in channels]
        self.n = len(self.x) if limit is None else min(limit, len(self.x))
        if self.n == 0:
            raise ValueError(f"{flag}: {path} holds no windows")
        check_finite(self.x, self.n, self.channel_idx, names, f"{flag} {path}")

    @property
    def length(self) -> int:
        return self.x.shape[2]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, (list, tuple, np.ndarray, torch.Tensor)):
            idx = np.asarray(idx, dtype=np.int64)
            order = np.argsort(idx, kind="stable")  # sorted reads are sequential on disk
            block = np.empty((len(idx), len(self.channel_idx), self.length), np.float32)
            block[order] = self.x[idx[order]][:, self.channel_idx]
            return torch.from_numpy(block)
        return torch.from_numpy(np.array(self.x[idx][self.channel_idx], dtype=np.float32))


def _open_windows(path: Path, flag: str) -> tuple[np.ndarray, tuple]:
    """The array of a ``.npy`` (memory-mapped) or ``.npz`` window file and its channel names."""
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                key = "windows" if "windows" in z.files else ("X" if "X" in z.files else None)
                if key is None:
                    raise ValueError(f"{flag} {path}: an .npz needs an array named 'windows' (or 'X'); has {z.files}")
                x = z[key]
                names = tuple(str(c) for c in z["channels"]) if "channels" in z.files else CHANNELS
            return x, names
        x = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{flag} {path}: cannot read it as a window file (truncated or corrupt?): "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{flag} {path}: holds no plain array (an .npy of {type(x).__name__})")
    size, want = path.stat().st_size, getattr(x, "offset", 0) + x.nbytes
    if isinstance(x, np.memmap) and size != want:
        raise ValueError(f"{flag} {path}: its header says {x.shape} ({want} bytes with the header) but the file "
                         f"has {size} bytes: written by two runs at once, or cut; rebuild it")
    side = path.with_suffix(".json")
    if not side.exists():
        return x, CHANNELS
    try:
        info = json.loads(side.read_text())
        names = info["channels"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{flag} {side}: the window file's sidecar has no readable 'channels' list "
                         f"({type(e).__name__}: {e})") from e
    for key, have in (("count", len(x)), ("window_len", x.shape[-1] if x.ndim == 3 else None)):
        if key in info and have is not None and (type(info[key]) is not int or info[key] != have):
            raise ValueError(f"{flag} {path}: holds {have} {'windows' if key == 'count' else 'samples per window'} "
                             f"but its sidecar {side.name} says {key} {info[key]!r}: the two are from different "
                             f"builds; rebuild them")
    return x, tuple(str(c) for c in names)


MAX_ABS = 1e3  # a z-scored window of L samples cannot exceed sqrt(L - 1) (35 for 1250): far beyond is corrupt


def check_finite(x: np.ndarray, n: int, channel_idx: list, names: tuple, what: str, block: int = 256) -> None:
    """Fail naming the first of windows ``x[:n]`` with a non-finite value, or one beyond ``MAX_ABS``, in the
    chosen channels.

    Reads ``block`` windows at a time, so memory stays flat over a memory-mapped file.
    """
    for i in range(0, n, block):
        part = np.asarray(x[i:min(i + block, n)])[:, channel_idx]
        finite = np.isfinite(part).all(axis=-1)  # [b, C_sel]
        with np.errstate(invalid="ignore"):
            ok = finite & (np.abs(part) <= MAX_ABS).all(axis=-1)
        if not ok.all():
            w, c = (int(v[0]) for v in np.nonzero(~ok))
            what_is = ("a non-finite value (NaN or inf)" if not finite[w, c] else
                       f"a value of {float(np.abs(part[w, c]).max()):.3g} in magnitude (a z-scored window stays "
                       f"within {MAX_ABS:g})")
            raise ValueError(f"{what}: window {i + w} holds {what_is} in channel "
                             f"{names[channel_idx[c]]}; window files must hold finite, z-scored values (rebuild it "
                             f"with build-windows)")


class EpochBatchSampler(Sampler):
    """Index batches of one rank: a permutation seeded by (seed, epoch), split across ranks.

    Like ``DistributedSampler`` it pads to a multiple of the world size so all
    ranks run the same number of batches; unlike it, the batch indices are
    yielded as lists so the dataset can read a batch in one memory-map access.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.n, self.bs, self.seed, self.rank, self.world, self.shuffle = n, batch_size, seed, rank, world_size, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        """The epoch's order of all ``n`` window indices."""
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, SHUFFLE, self.epoch))
            return torch.randperm(self.n, generator=g).numpy()
        return np.arange(self.n)

    def _indices(self) -> np.ndarray:
        idx = self._order()
        per_rank = -(-self.n // self.world)
        pad = per_rank * self.world - self.n
        if pad:
            idx = np.concatenate([idx, idx[:pad]])
        return idx[self.rank::self.world]

    def __iter__(self):
        idx = self._indices()
        for i in range(0, len(idx), self.bs):
            yield idx[i:i + self.bs].tolist()

    def __len__(self) -> int:
        per_rank = -(-self.n // self.world)
        return -(-per_rank // self.bs)


class BlockShuffleBatchSampler(EpochBatchSampler):
    """Index batches that read the window file block by block, for files larger than memory.

    With the file in the page cache a uniformly shuffled batch is a cheap gather; once
    the file is larger than memory every window of it is a random ~10 KB disk read. Here
    an epoch cuts the file into blocks of ``block`` consecutive windows, permutes the
    blocks, pools them ``buffer // block`` at a time (the shuffle buffer), permutes each
    pool and cuts the stream into batches, split across ranks as :class:`EpochBatchSampler`
    does. Each pool spans ``buffer // block`` contiguous stretches of the file, which the
    kernel reads once with read-ahead and keeps cached while the pool's batches are drawn.

    Effect on randomness: every window is still seen exactly once per epoch, and the block
    order and pooling change every epoch, but a batch's windows come from at most
    ``buffer // block`` blocks (32 of 256 windows by default, i.e. 32 stretches of about
    43 minutes of one case each at a 10 s stride) instead of the whole file, so windows of
    the same case and time meet in a batch more often than under uniform shuffling.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, block: int = 256,
                 buffer: int = 8192):
        if block < 1 or buffer < block or buffer % block:
            raise ValueError(f"shuffle buffer {buffer} must be a positive multiple of the block size {block}")
        super().__init__(n, batch_size, seed, rank, world_size, shuffle=True)
        self.block, self.buffer = block, buffer

    def _order(self) -> np.ndarray:
        g = torch.Generator().manual_seed(derive_seed(self.seed, SHUFFLE, self.epoch))
        n_blocks = -(-self.n // self.block)
        blocks = torch.randperm(n_blocks, generator=g).numpy()
        per_pool = self.buffer // self.block
        within = np.arange(self.block)
        out = []
        for i in range(0, n_blocks, per_pool):
            pool = (blocks[i:i + per_pool, None] * self.block + within).ravel()
            pool = pool[pool < self.n]  # the last block may be short
            out.append(pool[torch.randperm(len(pool), generator=g).numpy()])
        return np.concatenate(out)


class NpyAppender:
    """Stream ``[*, C, L]`` float32 blocks into a ``.npy`` file whose header is fixed up on close.

    The file is written under a temporary name; :meth:`close` writes the real
    shape into the header and renames it, so a crash never leaves a file that
    looks complete.
    """

    def __init__(self, path: Path, inner_shape: tuple):
        self.path, self.inner, self.n = Path(path), tuple(inner_shape), 0
        self.tmp = tmp_path(self.path)
        self.f = open(self.tmp, "wb")
        self.header_len = self._write_header(0)

    def _write_header(self, n: int) -> int:
        self.f.seek(0)
        np.lib.format.write_array_header_1_0(
            self.f, {"descr": "<f4", "fortran_order": False, "shape": (n, *self.inner)})
        return self.f.tell()

    def append(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.inner:
            raise ValueError(f"block shape {block.shape[1:]} != file's inner shape {self.inner}")
        self.f.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
        self.n += len(block)

    def close(self) -> None:
        """Write the final header and rename the file into place."""
        end = self.f.tell()
        if self._write_header(self.n) != self.header_len:
            raise RuntimeError("npy header length changed; cannot finalise in place")
        self.f.seek(end)
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)
