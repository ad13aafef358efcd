"""The gate figure: for each criterion, example windows it rejected and kept windows nearest its line.

Each case offers candidates (:func:`case_examples`, in the worker); the split
keeps the best (:class:`ExampleBook`, in the parent) and draws them
(:func:`plot_gate`). Rejected examples are the first windows, in case order,
that fail the criterion, those failing only it first; kept examples are the
kept windows whose measure came closest to the criterion's threshold, so a
param change shows at once what it lets through.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from .quality import CRITERIA

N_REJECTED, N_KEPT = 3, 2  # examples per criterion


@dataclass
class GateExample:
    criterion: str
    kept: bool
    caseid: int
    start_s: float
    ppg: np.ndarray          # [L] float32, z-scored band-passed PPG
    ecg: np.ndarray          # [L] float32, z-scored band-passed ECG
    ppg_beats: np.ndarray    # pulse peaks, samples from the window's start
    ecg_beats: np.ndarray    # R peaks
    failed: tuple            # criteria the window fails
    margin: float            # the criterion's measure over its threshold (> 1 fails)
    sole: bool               # the window fails this criterion only


def _z(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return ((x - x.mean()) / (sd if sd > 0 else 1.0)).astype(np.float32)


def case_examples(caseid: int, starts_s: np.ndarray, fails: dict, margins: dict, filt_windows, beats) -> list:
    """Candidate examples of one case. ``filt_windows(i)`` gives window ``i``'s band-passed ``(ppg, ecg)``."""
    n = len(starts_s)
    if n == 0:
        return []
    failing = np.stack([fails[c] for c in CRITERIA])  # [criteria, n]
    n_failed = failing.sum(axis=0)
    out = []

    def make(c, i, kept):
        ppg, ecg = filt_windows(i)
        return GateExample(c, kept, caseid, float(starts_s[i]), _z(ppg), _z(ecg), beats[i][0], beats[i][1],
                           tuple(k for k, f in zip(CRITERIA, failing[:, i]) if f), float(margins[c][i]),
                           bool(n_failed[i] == 1))

    for ci, c in enumerate(CRITERIA):
        bad = np.flatnonzero(failing[ci])
        sole = bad[n_failed[bad] == 1]
        for i in np.concatenate([sole, np.setdiff1d(bad, sole)])[:N_REJECTED]:
            out.append(make(c, int(i), False))
        good = np.flatnonzero(n_failed == 0)
        m = np.nan_to_num(margins[c][good], nan=-np.inf)
        for i in good[np.argsort(-m, kind="stable")][:N_KEPT]:
            out.append(make(c, int(i), True))
    return out


class ExampleBook:
    """The examples the figure shows, chosen over a split's cases as they arrive in order."""

    def __init__(self):
        self.rejected: dict = {c: [] for c in CRITERIA}
        self.kept: dict = {c: [] for c in CRITERIA}

    def add(self, examples: list) -> None:
        for e in examples:
            if e.kept:
                lst = self.kept[e.criterion]
                lst.append(e)
                lst.sort(key=lambda x: -x.margin)  # stable: the earlier case wins a tie
                del lst[N_KEPT:]
            else:
                lst = self.rejected[e.criterion]
                lst.append(e)
                lst.sort(key=lambda x: not x.sole)
                del lst[N_REJECTED:]


def plot_gate(book: ExampleBook, path: Path, fs: float, split: str) -> None:
    """One row per criterion: rejected examples (red titles), then kept ones nearest the line (green)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = N_REJECTED + N_KEPT
    fig, axes = plt.subplots(len(CRITERIA), ncol, figsize=(3.6 * ncol, 1.9 * len(CRITERIA)), squeeze=False)
    for row, c in enumerate(CRITERIA):
        cells = book.rejected[c] + [None] * (N_REJECTED - len(book.rejected[c])) + book.kept[c]
        for col in range(ncol):
            ax = axes[row, col]
            ax.set_yticks([])
            if row < len(CRITERIA) - 1:  # every panel spans the same 10 s: the bottom row's axis says it once
                ax.set_xticks([])
            ax.tick_params(labelsize=7)
            e = cells[col] if col < len(cells) else None
            if col == 0:
                ax.set_ylabel(c.replace("_", "\n"), fontsize=9, fontweight="bold")
            if e is None:
                ax.text(0.5, 0.5, "none rejected" if col < N_REJECTED else "none kept", ha="center",
                        va="center", transform=ax.transAxes, fontsize=8, color="grey")
                continue
            t = np.arange(len(e.ppg)) / fs
            ax.set_xlim(0, t[-1])
            ax.plot(t, e.ppg + 3.0, lw=0.6, color="tab:blue")
            ax.plot(t, e.ecg - 3.0, lw=0.6, color="tab:purple")
            ax.plot(e.ppg_beats / fs, e.ppg[e.ppg_beats] + 3.0, "v", ms=3, color="tab:orange")
            ax.plot(e.ecg_beats / fs, e.ecg[e.ecg_beats] - 3.0, "^", ms=3, color="tab:red")
            more = f" +{len(e.failed) - 2} more" if len(e.failed) > 2 else ""
            verdict = "kept" if e.kept else "rejected: " + ", ".join(e.failed[:2]) + more
            # a zero threshold makes any excess huge; NaN: the measure could not be taken (too few beats)
            margin = "not measurable" if e.margin != e.margin else ">100x" if e.margin > 100 else f"{e.margin:.2f}x"
            ax.set_title(f"case {e.caseid} @ {e.start_s:.0f} s, {c} {margin}\n{verdict}", fontsize=6.5,
                         color="tab:green" if e.kept else "tab:red")
    for ax in axes[-1]:
        ax.set_xlabel("s", fontsize=8)
    fig.suptitle(f"{split}: gate examples per criterion (PPG top with pulse peaks, ECG bottom with R peaks; "
                 f"measure / threshold, > 1 fails)", fontsize=10)
    # fixed margins: tight_layout would draw the 45 panels once more just to measure them
    fig.subplots_adjust(left=0.04, right=0.995, bottom=0.04, top=0.94, wspace=0.06, hspace=0.55)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=72))
    plt.close(fig)
