"""Memory-mapped window datasets for pretraining.

Reads ``<split>_windows.npy`` (``[N, C, L]`` float32, opened with
``mmap_mode="r"``: RAM does not grow with the file) and its ``.json`` sidecar
for channel names. The guide's ``train_windows.npz`` layout is read too; an
``.npz`` cannot be memory-mapped, so it is loaded into memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

DEFAULT_CHANNELS = ("PPG", "ECG")


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
    """Windows ``[C_sel, L]`` of the chosen channels; ``dataset[list_of_indices]`` gives a batch."""

    def __init__(self, path: Path, channels: tuple, limit: int | None = None, flag: str = "--train-file"):
        path = Path(path)
        if path.suffix == ".npz":
            with np.load(path) as z:
                key = "windows" if "windows" in z.files else ("X" if "X" in z.files else None)
                if key is None:
                    raise ValueError(f"{path}: an .npz needs an array named 'windows' (or 'X'); has {z.files}")
                self.x = z[key]
                names = tuple(str(c) for c in z["channels"]) if "channels" in z.files else DEFAULT_CHANNELS
        else:
            self.x = np.load(path, mmap_mode="r")
            side = path.with_suffix(".json")
            names = tuple(json.loads(side.read_text())["channels"]) if side.exists() else DEFAULT_CHANNELS
        if self.x.ndim != 3 or self.x.dtype != np.float32:
            raise ValueError(f"{path}: expected float32 [N, C, L] windows, got {self.x.dtype} {list(self.x.shape)}")
        if len(names) != self.x.shape[1]:
            raise ValueError(f"{path}: {self.x.shape[1]} channels in the array but {len(names)} channel names")
        missing = [c for c in channels if c not in names]
        if missing:
            raise ValueError(f"--channels: {', '.join(missing)} not in {path.name} (has {', '.join(names)})")
        self.path, self.channel_names = path, names
        self.channel_idx = [names.index(c) for c in channels]
        self.n = len(self.x) if limit is None else min(limit, len(self.x))
        if self.n == 0:
            raise ValueError(f"{flag}: {path} holds no windows")

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

    def _indices(self) -> np.ndarray:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(self.n, generator=g).numpy()
        else:
            idx = np.arange(self.n)
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
