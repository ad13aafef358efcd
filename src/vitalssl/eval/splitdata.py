"""One split of the window file with what the evaluation needs beside the windows: subjects and labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..windowfile import WindowDataset

LABEL_PREFIX = "label_"


@dataclass
class SplitData:
    name: str
    windows: WindowDataset
    groups: np.ndarray      # [n] ``subject <id>`` per window (``case <id>`` for a case without a subject id)
    labels: dict            # label name (without prefix) -> [n] float, NaN where the window has no value
    columns: dict = field(default_factory=dict)   # every other metadata column (the clinical ones) as read

    def __len__(self) -> int:
        return len(self.windows)

    def read(self, idx) -> np.ndarray:
        """Windows ``[B, C, L]`` float32 at ``idx``."""
        return self.windows[np.asarray(idx, np.int64)].numpy()

    def map_batches(self, fn, batch_size: int) -> np.ndarray:
        """``fn`` applied to the windows ``batch_size`` at a time (``[B, C, L]`` -> ``[B, ...]``), concatenated."""
        return np.concatenate([fn(self.read(np.arange(i, min(i + batch_size, len(self)))))
                               for i in range(0, len(self), batch_size)])

    @classmethod
    def load(cls, windows_dir: Path, split: str, channels: tuple) -> "SplitData":
        """``{split}_windows.npy`` and its ``.meta.csv`` from ``windows_dir``; rows must match windows one to one."""
        npy = Path(windows_dir) / f"{split}_windows.npy"
        meta_path = npy.with_suffix(".meta.csv")
        for p in (npy, meta_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found (build the windows first: dvc repro build-windows)")
        ds = WindowDataset(npy, tuple(channels), flag=f"{split} windows")
        # subject ids are opaque labels ("0012", "NA", "S-501"): read as written; only an empty cell is missing,
        # as the format writes it
        meta = pd.read_csv(meta_path, dtype={"subjectid": str}, keep_default_na=False, na_values=[""])
        for col in ("caseid", "subjectid"):
            if col not in meta.columns:
                raise ValueError(f"{meta_path}: column {col!r} is missing")
        if len(meta) != len(ds):
            raise ValueError(f"{meta_path} has {len(meta)} rows but {npy} holds {len(ds)} windows")
        # a case without a subject id was split as its own group, so it is its own subject here too
        groups = np.array([f"subject {s}" if pd.notna(s) else f"case {int(c)}"
                           for s, c in zip(meta["subjectid"], meta["caseid"])])
        labels = {c[len(LABEL_PREFIX):]: pd.to_numeric(meta[c], errors="raise").to_numpy(np.float64)
                  for c in meta.columns if c.startswith(LABEL_PREFIX)}
        columns = {c: meta[c].to_numpy() for c in meta.columns if not c.startswith(LABEL_PREFIX)}
        return cls(split, ds, groups, labels, columns)


def check_held_out(train: SplitData, evals: list) -> None:
    """Refuse evaluation splits that share a subject (or a case without one) with train, or hold one subject.

    Probes are fitted on train and the intervals resample subjects, so a held-out split needs subjects of its
    own and at least two of them.
    """
    seen = set(train.groups.tolist())
    for ev in evals:
        mine = set(ev.groups.tolist())
        shared = sorted(mine & seen)
        if shared:
            raise ValueError(f"{ev.windows.path} and {train.windows.path}: {len(shared)} subject(s) have windows "
                             f"in both split 'train' and split {ev.name!r} ({_listed(shared)}); scores on "
                             f"{ev.name} would not be held out: build the windows from a subject-disjoint split file")
        if len(mine) < 2:
            raise ValueError(f"split {ev.name!r} ({ev.windows.path}) holds windows of {len(mine)} subject "
                             f"({_listed(sorted(mine))}); its subject-level bootstrap intervals need at least 2 "
                             f"subjects: build {ev.name} from more subjects (params splits.*)")


def _listed(groups: list, n: int = 5) -> str:
    return ", ".join(groups[:n]) + (f" and {len(groups) - n} more" if len(groups) > n else "")
